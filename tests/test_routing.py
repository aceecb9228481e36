"""Fixed paths are routed by a table: to the handler Tornado's own routing chooses, every time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from tornado import httputil

from tornado_auth.handlers import api
from tornado_auth.handlers.routing import fixed_paths
from tornado_auth.oversized import Application

from .conftest import Server, Store, serving, settings_for


class First(tornado.web.RequestHandler):
    def initialize(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class Second(First):
    pass


def request(path: str, host: str = "example.com") -> httputil.HTTPServerRequest:
    connection: Any = type("Connection", (), {"context": None})()
    start = httputil.RequestStartLine("GET", path, "HTTP/1.1")
    headers = httputil.HTTPHeaders({"Host": host})
    return httputil.HTTPServerRequest(start_line=start, headers=headers, connection=connection)


def tornado_choice(app: tornado.web.Application, path: str, host: str = "example.com") -> Any:
    delegate: Any = tornado.web.Application.find_handler(app, request(path, host))
    return delegate.handler_class, delegate.handler_kwargs, delegate.path_args


def our_choice(app: tornado.web.Application, path: str, host: str = "example.com") -> Any:
    delegate: Any = app.find_handler(request(path, host))
    return delegate.handler_class, delegate.handler_kwargs, delegate.path_args


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(settings_for(Store("memory", tmp_path))) as running:
        yield running


async def test_every_fixed_path_of_the_app_goes_where_tornado_sends_it(server: Server):
    app = server.app
    table = fixed_paths(app)
    assert table["/api/dashboard"][0] is api.DashboardHandler
    assert table["/healthz"][0] is api.HealthHandler
    for rule in app.wildcard_router.rules:  # every route's own path, fixed or not
        path = rule.matcher.regex.pattern.removesuffix("$")
        assert our_choice(app, path) == tornado_choice(app, path), path
    for path in ("/api/sessions/abc", "/api/nope", "/nope", "/static/app.css", "/api/dashboard/"):
        assert our_choice(app, path) == tornado_choice(app, path), path


def test_an_earlier_pattern_keeps_a_path_it_matches():
    app = Application([(r"/a.*", First), (r"/ab", Second), (r"/c", Second, {"x": 1})])
    assert set(fixed_paths(app)) == {"/c"}  # "/a.*" is a pattern; "/ab" is taken by it
    assert our_choice(app, "/ab")[0] is First
    assert our_choice(app, "/c") == (Second, {"x": 1}, [])
    assert our_choice(app, "/d")[0] is tornado.web.ErrorHandler


def test_routes_added_later_are_seen():
    app = Application([(r"/a", First)])
    assert our_choice(app, "/a")[0] is First
    app.wildcard_router.add_rules([(r"/b", Second)])
    assert our_choice(app, "/b")[0] is Second


def test_host_routes_turn_the_table_off():
    app = Application([(r"/a", First)])
    app.add_handlers(r"admin\.example\.com", [(r"/a", Second)])
    assert fixed_paths(app) == {}
    assert our_choice(app, "/a", "admin.example.com")[0] is Second
    assert our_choice(app, "/a")[0] is First
