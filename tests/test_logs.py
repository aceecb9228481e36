"""Structured logs and request ids: one JSON object a line with the request's fields, a caller's
safe X-Request-Id kept and echoed (else a new one), and never a cookie, token, password or query."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tornado_auth.logs import JsonFormatter, RequestFields

from .conftest import PASSWORD, Client, Server, Store, free_port, serving, settings_for
from .helpers import add_sqlite_user, stop_process

SECRET_QUERY = "token=query-secret-value"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Every record the root logger handles, as the JSON format writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestFields())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = settings_for(Store("memory", tmp_path), logging__access_log=True)
    async with serving(settings) as running:
        await running.add_user("ann@example.com", PASSWORD)
        yield running


async def test_a_request_logs_one_json_line_with_its_route_status_user_and_id(server, json_lines):
    client = server.client()
    assert (await client.login("ann@example.com", PASSWORD)).code == 200
    user = await server.services.users.by_email("ann@example.com")

    response = await client.request("DELETE", f"/api/sessions/abc123?{SECRET_QUERY}")

    assert response.code == 404
    request_id = response.headers["X-Request-Id"]
    access = [line for line in parsed(json_lines) if line["logger"] == "tornado.access"]
    line = next(line for line in access if line.get("request_id") == request_id)
    assert line["level"] == "WARNING"
    assert line["route"] == "/api/sessions/{}"  # the pattern, never the raw path
    assert (line["method"], line["status"]) == ("DELETE", 404)
    assert line["duration_ms"] >= 0 and line["time"].endswith("Z")
    assert line["user_id"] == user.id
    # the handler's own warning carries the request's id and user too
    warning = next(w for w in parsed(json_lines) if w["logger"] == "tornado.general")
    assert (warning["request_id"], warning["user_id"]) == (request_id, user.id)


async def test_the_logs_never_hold_a_cookie_token_password_or_query(server, json_lines):
    client = server.client()
    await client.login("ann@example.com", PASSWORD)
    await client.post(
        f"/api/password/reset?{SECRET_QUERY}", {"token": "x" * 40, "newPassword": "y"}
    )
    await client.login("ann@example.com", "a wrong password")

    text = json_lines.getvalue()
    assert text.count("\n") >= 3
    for secret in (PASSWORD, "a wrong password", "query-secret-value", "x" * 40, "token="):
        assert secret not in text
    for value in client.cookies.values():
        assert value not in text


@pytest.mark.parametrize(
    "sent",
    ["req-42", "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9", "trace:abc/1=2+3@x"],
)
async def test_a_safe_request_id_is_kept_and_echoed(server, sent):
    response = await server.client().get("/healthz", headers={"X-Request-Id": sent})

    assert response.headers["X-Request-Id"] == sent


@pytest.mark.parametrize(
    "sent",
    ["", "a" * 129, "has space", "semi;colon", 'quote"d', "new\\nline", "<script>", "ünïcode"],
)
async def test_an_unsafe_request_id_is_replaced(server, sent):
    response = await server.client().get("/healthz", headers={"X-Request-Id": sent})

    echoed = response.headers["X-Request-Id"]
    assert echoed != sent and len(echoed) == 32 and echoed.isalnum()


async def test_each_request_without_an_id_gets_its_own_and_errors_carry_it(server):
    client = server.client()
    first = await client.get("/healthz")
    second = await client.get("/api/dashboard")  # 401
    page = await client.get("/no-such-page")  # 404 page

    ids = [reply.headers["X-Request-Id"] for reply in (first, second, page)]
    assert len(set(ids)) == 3
    assert second.code == 401 and page.code == 404


async def test_serve_with_logging_format_json_writes_json_lines(tmp_path: Path):
    await add_sqlite_user(tmp_path)
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TORNADO_AUTH_")},
        "TORNADO_AUTH_USERS__URL": f"sqlite:///{tmp_path}/users.db",
        "TORNADO_AUTH_SESSIONS__URL": f"sqlite:///{tmp_path}/sessions.db",
        "TORNADO_AUTH_SECRETS__COOKIE_SECRET": "s" * 40,
        "TORNADO_AUTH_USERS__DEMO_USERS": "false",
        "TORNADO_AUTH_LOGGING__FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tornado_auth", "serve", "--port", str(port)),
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        assert b"listening" in await asyncio.wait_for(process.stdout.readline(), 30)
        client = Client(f"http://127.0.0.1:{port}")
        body = {"email": "ann@example.com", "password": PASSWORD}
        login = await client.post("/api/login", body, headers={"X-Request-Id": "r-1"})
        assert login.code == 200
    finally:
        assert await stop_process(process) == 0
    lines = [json.loads(line) for line in (await process.stderr.read()).decode().splitlines()]

    access = next(line for line in lines if line.get("request_id") == "r-1")
    assert access["route"] == "/api/login" and access["status"] == 200
    assert {line["level"] for line in lines} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def test_new_request_ids_are_unique_within_a_process_and_across_forked_workers():
    from tornado_auth.logs import request_id_from

    here = [request_id_from(None) for _ in range(1000)]
    assert len(set(here)) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in here)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a worker forked by serve --processes N
        os.write(write, request_id_from(None).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    assert status == 0 and len(theirs) == 32
    assert theirs[:16] != here[0][:16]  # the worker drew its own random half
    assert theirs not in here
