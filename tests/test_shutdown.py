"""Shutdown past the grace: requests still running get a clear 503, closed stores say so."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import tornado.testing
from tornado.httpclient import HTTPResponse

from tornado_auth import Origin, Services, make_app, server, start_services
from tornado_auth.errors import StoreUnavailable
from tornado_auth.server import InFlight, http_server, shut_down

from .conftest import PASSWORD, Client, Clock, Store, body, require_service, settings_for


class Running:
    """The app as ``run_worker`` serves it: with the in-flight register a shutdown uses."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.in_flight = InFlight()
        self.http = http_server(make_app(services, in_flight=self.in_flight), services.settings)
        sock, port = tornado.testing.bind_unused_port()
        self.http.add_sockets([sock])
        self.client = Client(f"http://127.0.0.1:{port}")
        self.stopped = False

    async def shut_down(self) -> None:
        self.stopped = True
        await shut_down(self.http, self.services, self.in_flight, grace=0)


@pytest.fixture(params=["sqlite", "redis"])
async def running(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Running]:
    """SQLite sessions and users; Redis sessions (no process cache) with MongoDB users."""
    if request.param == "redis":
        require_service("redis")
        require_service("mongodb")
    store = Store(request.param, tmp_path)
    services = await start_services(settings_for(store, sessions__cache_size=0))
    app = Running(services)
    yield app
    if not app.stopped:
        await app.shut_down()
    await store.cleanup()


def hold(target: Any, name: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Make ``target.name`` a slow store call: it starts (first event) and waits for the second."""
    original: Callable[..., Awaitable[Any]] = getattr(target, name)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await release.wait()
        return await original(*args, **kwargs)

    setattr(target, name, slow)
    return started, release


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("call", "request_"),
    [
        ("load", ("GET", "/api/dashboard")),  # resolving the session, in prepare()
        ("delete", ("POST", "/api/logout")),  # the session's last write, after the handler
    ],
)
async def test_a_request_held_in_a_store_call_past_the_grace_gets_503(
    running, caplog, call, request_
):
    await running.services.accounts.register("ann@example.com", "Ann", PASSWORD, Origin())
    assert (await running.client.login("ann@example.com", PASSWORD)).code == 200
    started, release = hold(running.services.sessions.store, call)
    caplog.set_level(logging.INFO)

    method, path = request_
    pending = asyncio.ensure_future(running.client.request(method, path))
    await started.wait()
    await running.shut_down()
    release.set()  # too late: the request was already answered

    response = await pending
    assert response.code == 503
    assert body(response) == {"error": "Server is shutting down"}
    assert "grace period over: 1 requests still running get 503" in caplog.text
    assert tracebacks(caplog) == []


async def test_store_calls_after_the_stores_closed_raise_store_unavailable(running, caplog):
    await running.shut_down()
    sessions, users = running.services.sessions.store, running.services.users
    for late_call in (
        sessions.load("0" * 64),
        sessions.ping(),
        users.by_email("ann@example.com"),
        users.ping(),
    ):
        with pytest.raises(StoreUnavailable):
            await late_call
    assert tracebacks(caplog) == []


class HeldTouch:
    """Ann signed in on ``running``, whose store holds every touch until ``release`` is set;
    ``started`` when one arrives, ``written`` once it is."""

    def __init__(self, running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
        self.running = running
        self.started, self.release, self.written = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.sessions = running.services.sessions
        self.clock = Clock(time.time())
        monkeypatch.setattr(self.sessions, "clock", self.clock)
        real_touch = self.sessions.store.touch

        async def held_touch(touches: dict[str, tuple[float, float]]) -> list[Any]:
            self.started.set()
            await self.release.wait()
            results = await real_touch(touches)
            self.written.set()
            return results

        monkeypatch.setattr(self.sessions.store, "touch", held_touch)

    async def signed_in(self) -> None:
        services = self.running.services
        await services.accounts.register("ann@example.com", "Ann", PASSWORD, Origin())
        assert (await self.running.client.login("ann@example.com", PASSWORD)).code == 200

    async def touching_request(self) -> HTTPResponse:
        self.clock.now += self.sessions.lifetime.touch_interval + 1  # the next request touches
        return await self.running.client.get("/api/dashboard")


async def test_a_touch_made_just_before_a_shutdown_is_written_before_the_stores_close(
    running, monkeypatch
):
    services = running.services
    held = HeldTouch(running, monkeypatch)
    await held.signed_in()
    settling, real_settle = asyncio.Event(), server.settle

    async def settle(grace):
        settling.set()  # the requests are done: what runs to its end is waited for now
        await real_settle(grace)

    closed_when: list[bool] = []
    real_close = services.close

    async def close():
        closed_when.append(held.written.is_set())
        await real_close()

    monkeypatch.setattr(server, "settle", settle)
    monkeypatch.setattr(services, "close", close)
    response = await held.touching_request()
    assert response.code == 200 and "Max-Age=" in response.headers["Set-Cookie"]
    await held.started.wait()  # answered; its touch is being written
    running.stopped = True
    shutting = asyncio.ensure_future(shut_down(running.http, services, running.in_flight, grace=10))
    await settling.wait()
    held.release.set()
    await shutting
    assert closed_when == [True]  # the stores closed after the touch was written


async def test_closing_the_services_writes_the_touches_queued_first(running, monkeypatch):
    """An app embedding us stops with ``services.close()``, not ``serve``'s shutdown: the
    touches its last responses queued are written before the stores close."""
    services = running.services
    held = HeldTouch(running, monkeypatch)
    await held.signed_in()
    waiting, real_written = asyncio.Event(), held.sessions.touches_written

    async def touches_written():
        waiting.set()
        await real_written()

    closed_when: list[bool] = []
    real_close = services.backend.close

    async def close_backend():
        closed_when.append(held.written.is_set())
        await real_close()

    monkeypatch.setattr(held.sessions, "touches_written", touches_written)
    monkeypatch.setattr(services.backend, "close", close_backend)
    assert (await held.touching_request()).code == 200
    running.http.stop()
    await running.http.close_all_connections()
    running.stopped = True
    closing = asyncio.ensure_future(services.close())
    waited = asyncio.ensure_future(waiting.wait())
    await asyncio.wait({closing, waited}, return_when=asyncio.FIRST_COMPLETED)
    assert waiting.is_set()  # the close waits for the queued touches...
    held.release.set()
    await closing
    waited.cancel()
    assert closed_when == [True]  # ...and closes the stores once they are written
