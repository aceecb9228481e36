"""The OpenAPI document and the routes agree, and it is served as JSON and as a page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tornado.web

from tornado_auth import handlers
from tornado_auth.handlers import api
from tornado_auth.handlers.headers import CSP
from tornado_auth.openapi import openapi_document

from .conftest import Server, Store, body, serving, settings_for

METHODS = ("get", "post", "put", "patch", "delete")
NOT_JSON_API = (api.NotFoundHandler, tornado.web.StaticFileHandler)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(settings_for(Store("memory", tmp_path)), prefix="/auth") as running:
        yield running


def routed_operations(app: tornado.web.Application, prefix: str) -> set[tuple[str, str]]:
    """(METHOD, path with "{}" for each parameter) for every API route the app answers: a rule
    shadowed by an earlier one for the same path is never reached, so it is skipped."""
    found, seen = set(), set()
    for rule in app.wildcard_router.rules:
        path, target = rule.matcher._path, rule.target  # type: ignore[attr-defined]
        if path is None or path in seen or target in NOT_JSON_API:
            continue
        seen.add(path)
        path = path.removeprefix(prefix)
        if not (path.startswith("/api/") or path in ("/healthz", "/readyz")):
            continue
        for method in METHODS:
            if getattr(target, method) is not getattr(tornado.web.RequestHandler, method):
                found.add((method.upper(), prefix + path.replace("%s", "{}")))
    return found


def documented_operations(document: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    }


async def test_the_document_lists_every_api_route_and_invents_none(server: Server):
    document = openapi_document("/auth")

    routed = routed_operations(server.app, "/auth")
    documented = documented_operations(document)

    assert len(routed) > 25
    assert routed - documented == set(), "routes missing from the document"
    assert documented - routed == set(), "operations no route answers"


def test_every_operation_has_an_id_a_success_and_the_error_shape():
    document = openapi_document()
    ids = []
    for item in document["paths"].values():
        for method in METHODS:
            if method not in item:
                continue
            spec = item[method]
            ids.append(spec["operationId"])
            codes = [int(code) for code in spec["responses"]]
            assert any(code < 300 for code in codes), spec["operationId"]
            for code in codes:
                if code >= 400:
                    schema = spec["responses"][str(code)]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}
            signed_in = spec["security"] == [{"sessionCookie": []}]
            # signing in answers 401 for wrong credentials without needing a session
            signs_in = spec["operationId"] in ("login", "loginSecondStep", "passkeySignIn")
            assert signed_in == ("401" in spec["responses"]) or signs_in
    assert len(ids) == len(set(ids))


async def test_the_document_is_served_under_the_prefix(server: Server):
    response = await server.client().get("/auth/api/openapi.json")

    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = body(response)
    assert document["openapi"] == "3.1.0"
    assert "/auth/api/login" in document["paths"]
    scheme = document["components"]["securitySchemes"]["sessionCookie"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "cookie", "session")


async def test_the_docs_page_shows_every_operation_under_the_strict_csp(server: Server):
    response = await server.client().get("/auth/docs/api")

    assert response.code == 200
    assert response.headers["Content-Security-Policy"] == CSP
    page = response.body.decode()
    for method, path in documented_operations(openapi_document("/auth")):
        shown = path.replace("{}", "{id}")
        assert f"<code>{method} {shown}</code>" in page
    scripts = re.findall(r"<script[^>]*>", page)
    assert all('src="/auth/static/' in tag for tag in scripts), "no inline or foreign script"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no third-party assets"
    assert "Cross-site request refused" in page


def test_the_readme_api_table_and_the_document_agree_on_the_routes():
    routes = {
        (method.upper(), path.replace(handlers.ID, "{}"))
        for path, handler in handlers.api_routes()
        for method in METHODS
        if getattr(handler, method) is not getattr(tornado.web.RequestHandler, method)
    }
    assert routes <= documented_operations(openapi_document())
