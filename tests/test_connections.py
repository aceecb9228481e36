"""Connections a process keeps at once, and what its warnings say of a request."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest

from tornado_auth.server import FILES_KEPT_FREE, connection_cap

from .conftest import Store, serving, settings_for
from .helpers import next_event, open_socket, signed_in


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def get(port: int, path: str) -> bytes:
    reader, writer = await connect(port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_connections_past_the_cap_are_closed_and_the_server_keeps_serving(store: Store):
    async with serving(settings_for(store, server__max_connections=5)) as server:
        idle = [await connect(server.port) for _ in range(5)]
        assert (await get(server.port, "/healthz")) == b""  # the sixth: closed at once
        _, writer = idle.pop()
        writer.close()
        await writer.wait_closed()
        for _ in range(100):  # the server notices the close on its next loop turn
            answer = await get(server.port, "/healthz")
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 200")
        for _, writer in idle:
            writer.close()


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_warnings_name_the_path_without_its_query(
    store: Store, caplog: pytest.LogCaptureFixture
):
    async with serving(settings_for(store)) as server:
        with caplog.at_level(logging.WARNING):
            response = await server.client().get("/api/nothing?token=secret-value")
        assert response.code == 404
    assert "/api/nothing" in caplog.text
    assert "secret-value" not in caplog.text


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_open_dashboard_sockets_count_toward_the_cap(store: Store):
    async with serving(settings_for(store, server__max_connections=3)) as server:
        client = await signed_in(server)
        sockets = [await open_socket(client) for _ in range(3)]
        for socket in sockets:
            await next_event(socket, "hello")
        assert (await get(server.port, "/healthz")) == b""  # three descriptors in use already
        sockets.pop().close()
        for _ in range(100):  # the server notices the close on its next loop turns
            answer = await get(server.port, "/healthz")
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 200")
        for socket in sockets:
            socket.close()


def test_the_open_file_limit_is_raised_to_the_hard_limit_with_or_without_a_cap():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 1024:
        pytest.skip(f"the hard open-file limit here is {hard}")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        assert connection_cap(100) == 100
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        assert connection_cap(0) == hard - FILES_KEPT_FREE
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
