"""Bodies declared over server.max_body_size get the JSON 413 at once, before any body is read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import tornado.httpserver
import tornado.testing
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tornado_auth import make_app, start_services

from .conftest import Server, Store, settings_for
from .counting import count_writes

TOO_LARGE = {"error": "Request body too large"}
ROUTES = ["/api/login", "/api/register", "/login"]
SIZES = [3_000_000, 1_000_000_000]  # a 3 MB JSON body; a 1 GB upload


# refused by the HTTP handling before any body is read or any store is asked
pytestmark = pytest.mark.store_independent


@pytest.fixture
def server(server: Server) -> Server:
    """conftest's ``server``, with its session store writes counted."""
    count_writes(server.services.sessions)
    return server


async def snapshot(server: Server) -> tuple[int, int]:
    """(session store writes, users): what a refused request must leave unchanged."""
    _, users = await server.services.users.page(0, 1)
    return server.services.sessions.store.writes, users


async def exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a request head (and a little body), then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)  # the server closes: no sleep, no guess
    writer.close()
    return reply


def head(path: str, length: int, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_json_413(reply: bytes) -> None:
    status, _, rest = reply.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"Connection: close" in headers.split(b"\r\n")
    assert b"Content-Type: application/json; charset=UTF-8" in headers.split(b"\r\n")
    assert b"100 (Continue)" not in reply  # the body was never asked for
    assert json.loads(body) == TOO_LARGE
    names = {line.split(b":", 1)[0].lower() for line in headers.split(b"\r\n")}
    security = {b"content-security-policy", b"x-content-type-options", b"referrer-policy",
                b"x-frame-options", b"cache-control", b"x-request-id"}  # fmt: skip
    assert security <= names  # as on every other response


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
async def test_a_declared_body_over_the_limit_gets_the_json_413_without_being_sent(
    server, path, size, expect
):
    before = await snapshot(server)
    extra = ["Expect: 100-continue"] if expect else []
    assert_json_413(await exchange(server.port, head(path, size, *extra)))
    assert await snapshot(server) == before


@pytest.mark.parametrize("path", ROUTES)
async def test_a_client_already_sending_the_body_still_reads_the_413(server, path):
    before = await snapshot(server)
    start = b'{"email": "big@example.com", "password": "'
    reply = await exchange(server.port, head(path, 3_000_000), start + b"p" * 200_000)
    assert_json_413(reply)
    assert await snapshot(server) == before


async def test_a_body_just_over_the_limit_is_refused_and_one_at_it_reaches_the_app(server):
    limit = server.services.settings["server.max_body_size"]
    assert_json_413(await exchange(server.port, head("/api/login", limit + 1)))
    start = b'{"email": "edge@example.com", "password": "'
    body = start + b"p" * (limit - len(start) - 2) + b'"}'
    reply = await exchange(server.port, head("/api/login", limit, "Connection: close"), body)
    assert reply.startswith(b"HTTP/1.1 400 ")  # the app read it: too long a password
    assert server.services.sessions.store.writes == 0


@pytest.mark.parametrize("path", ROUTES)
async def test_tornados_client_gets_the_413_for_a_3_mb_body(server, path):
    before = await snapshot(server)
    response = await AsyncHTTPClient().fetch(
        server.base_url + path,
        method="POST",
        body=b"{" + b" " * 3_000_000 + b"}",
        headers={"Content-Type": "application/json"},
        raise_error=False,
    )
    assert response.code == 413
    assert json.loads(response.body) == TOO_LARGE
    assert await snapshot(server) == before


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("size", SIZES)
async def test_tornados_client_expecting_100_continue_never_sends_the_body(server, path, size):
    asked: list[bool] = []

    async def producer(write: Callable) -> None:
        asked.append(True)  # only if the server said 100 Continue

    before = await snapshot(server)
    request = HTTPRequest(
        server.base_url + path,
        method="POST",
        headers={"Content-Type": "application/json", "Content-Length": str(size)},
        body_producer=producer,
        expect_100_continue=True,
    )
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    assert (response.code, json.loads(response.body)) == (413, TOO_LARGE)
    assert asked == []
    assert await snapshot(server) == before


async def test_an_app_in_the_embedders_own_http_server_refuses_a_declared_1_gb_body(tmp_path):
    settings = settings_for(Store("sqlite", tmp_path))
    services = await start_services(settings)
    http = tornado.httpserver.HTTPServer(make_app(services))  # Tornado's defaults: 100 MB
    sock, port = tornado.testing.bind_unused_port()
    http.add_sockets([sock])
    try:
        assert_json_413(await exchange(port, head("/api/register", 1_000_000_000)))
        assert_json_413(await exchange(port, head("/api/login", 3_000_000)))
    finally:
        http.stop()
        await http.close_all_connections()
        await services.close()
