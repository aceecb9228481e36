"""The live dashboard socket: tied to its session, closed when it ends. Deadlines here are
generous (10 s) so a busy machine cannot fail them; how fast a socket closes (the promise is
within a second) is measured by bench/sockets.py."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import struct
import time
from typing import Any

import pytest
import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest

from tornado_auth import SessionWebSocket
from tornado_auth.devices import device_name
from tornado_auth.live import Deadlines, Heartbeat

from .conftest import (
    PASSWORD,
    REDIS_URL,
    Client,
    Store,
    free_port,
    require_service,
    serving,
    settings_for,
)
from .helpers import (
    SESSION_ENDED,
    add_sqlite_user,
    closed_within,
    next_event,
    open_socket,
    signed_in,
    spawn,
    stop_process,
    two_processes_revocation,
)


@pytest.mark.store_independent  # refused before any store is asked
async def test_handshake_without_session_is_401(server):
    with pytest.raises(HTTPClientError) as refused:
        await open_socket(server.client())
    assert refused.value.code == 401


@pytest.mark.store_independent  # refused by the origin check
async def test_cross_origin_handshake_is_refused(server):
    client = await signed_in(server)
    with pytest.raises(HTTPClientError) as refused:
        await open_socket(client, Origin="https://evil.example")
    assert refused.value.code == 403


async def test_socket_greets_the_user(server):
    client = await signed_in(server)
    socket = await open_socket(client)
    hello = await next_event(socket, "hello")
    assert hello == {"type": "hello", "email": "ann@example.com", "role": "user"}
    socket.close()


async def test_logout_in_another_tab_closes_the_socket(server):
    tab = await signed_in(server)
    socket = await open_socket(tab)
    await next_event(socket, "hello")
    other_tab = server.client()
    other_tab.cookies = dict(tab.cookies)
    assert (await other_tab.post("/api/logout")).code == 200
    assert await closed_within(socket, 10) == (SESSION_ENDED, "logout")


async def test_revocation_from_another_device_closes_the_socket_and_tells_the_user(server):
    laptop = await signed_in(server)
    phone = await signed_in(server)
    laptop_socket = await open_socket(laptop)
    phone_socket = await open_socket(phone)
    await next_event(phone_socket, "hello")
    sessions = (await phone.get("/api/sessions")).body
    laptop_id = next(s["id"] for s in json.loads(sessions)["sessions"] if not s["current"])
    assert (await phone.request("DELETE", f"/api/sessions/{laptop_id}")).code == 204
    assert await closed_within(laptop_socket, 10) == (SESSION_ENDED, "revoked")
    event = await next_event(phone_socket, "sessions_ended", 10)
    assert event["ids"] == [laptop_id]
    phone_socket.close()


async def test_new_sign_in_elsewhere_is_pushed(server):
    first = await signed_in(server)
    socket = await open_socket(first)
    await next_event(socket, "hello")
    before = time.time()
    credentials = {"email": "ann@example.com", "password": PASSWORD}
    phone = {"User-Agent": "Phone browser/1.0"}
    assert (await server.client().post("/api/login", credentials, headers=phone)).code == 200
    event = await next_event(socket, "signin", 10)
    assert event == {
        "type": "signin",
        "at": pytest.approx((before + time.time()) / 2, abs=(time.time() - before) / 2 + 1),
        "ip": "127.0.0.1",
        "userAgent": "Phone browser/1.0",
        "device": device_name("Phone browser/1.0"),
    }
    socket.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"role": "admin"}, "role"), ({"disabled": True}, "disabled")],
)
async def test_role_change_or_disable_closes_the_socket(server, change, reason):
    admin = await signed_in(server, "root@example.com", role="admin")
    user = await signed_in(server)
    socket = await open_socket(user)
    await next_event(socket, "hello")
    target = await server.services.users.by_email("ann@example.com")
    assert (await admin.request("PATCH", f"/api/admin/users/{target.id}", change)).code == 200
    assert await closed_within(socket, 10) == (SESSION_ENDED, reason)


async def test_password_change_closes_the_other_sessions_sockets(server):
    phone = await signed_in(server)
    laptop = await signed_in(server)
    phone_socket = await open_socket(phone)
    laptop_socket = await open_socket(laptop)
    await next_event(laptop_socket, "hello")
    body = {"currentPassword": PASSWORD, "newPassword": "a brand new secret"}
    assert (await laptop.post("/api/password", body)).code == 200
    assert await closed_within(phone_socket, 10) == (SESSION_ENDED, "password")
    # this session was regenerated: its socket is told, and the page reconnects with the new cookie
    assert await closed_within(laptop_socket, 10) == (SESSION_ENDED, "regenerated")
    again = await open_socket(laptop)
    await next_event(again, "hello")
    again.close()


async def test_idle_expiry_closes_the_socket(store: Store):
    async with serving(
        settings_for(store, sessions__ttl="1s", sessions__touch_interval=0)
    ) as server:
        client = await signed_in(server)
        socket = await open_socket(client)
        await next_event(socket, "hello")
        assert await closed_within(socket, 10) == (SESSION_ENDED, "expired")
        assert (await client.get("/api/dashboard")).code == 401


@pytest.mark.store_independent  # the sharing is the hub's, whichever store counts
async def test_admin_sockets_that_open_together_share_one_count_of_the_live_sessions(
    store: Store, monkeypatch
):
    """Each admin socket gets the figures as it opens, but the store counts once a round of
    statistics however many open (a count can read every session: FerretDB's does)."""
    async with serving(settings_for(store, live__stats_interval="60s")) as server:
        admin = await signed_in(server, "root@example.com", role="admin")
        counting = server.services.sessions.store
        counted: list[float] = []
        count = counting.count

        async def counted_count(now: float) -> int:
            counted.append(now)
            return await count(now)

        monkeypatch.setattr(counting, "count", counted_count)
        sockets = await asyncio.gather(*(open_socket(admin) for _ in range(4)))
        sockets.append(await open_socket(admin))  # after the others' count
        for socket in sockets:
            assert (await next_event(socket, "stats"))["activeSessions"] == 1
        assert len(counted) == 1
        for socket in sockets:
            socket.close()


async def test_admin_socket_receives_live_statistics(store: Store):
    async with serving(settings_for(store, live__stats_interval="0.2s")) as server:
        admin = await signed_in(server, "root@example.com", role="admin")
        await server.client().login("root@example.com", "wrong password")
        socket = await open_socket(admin)
        stats = await next_event(socket, "stats", 10)
        assert stats["activeSessions"] == 1
        assert stats["signInsPerMinute"] == 1
        assert stats["failedSignInsPerMinute"] == 1
        assert stats["openSockets"] == 1
        user = await signed_in(server)
        user_socket = await open_socket(user)
        await next_event(user_socket, "hello")
        for _ in range(2):  # two rounds of statistics sent since the user's socket opened
            await next_event(socket, "stats")
        # A sign-in of the user's is pushed to the user's socket after those rounds: whatever a
        # round sent it would come before that event.
        assert (await server.client().login("ann@example.com", PASSWORD)).code == 200
        before_the_sign_in = []
        while True:
            event = json.loads(await asyncio.wait_for(user_socket.read_message(), 10))
            if event["type"] == "signin":
                break
            before_the_sign_in.append(event["type"])
        assert "stats" not in before_the_sign_in  # users get no statistics
        socket.close()
        user_socket.close()


# -- several server processes ----------------------------------------------------------------------


async def test_revocation_in_another_process_closes_socket_through_redis(tmp_path):
    require_service("redis")
    place = Store("redis", tmp_path)
    env = {
        "TORNADO_AUTH_SESSIONS__URL": REDIS_URL,
        "TORNADO_AUTH_SESSIONS__KEY_PREFIX": place.prefix,
    }
    try:
        await two_processes_revocation(tmp_path, 10, **env, expected_reason="revoked")
    finally:
        await place.cleanup()


async def test_revocation_in_another_process_with_sqlite_is_caught_by_the_periodic_check(tmp_path):
    env = {
        "TORNADO_AUTH_SESSIONS__URL": f"sqlite:///{tmp_path}/sessions.db",
        "TORNADO_AUTH_LIVE__CHECK_INTERVAL": "0.5s",
    }
    await two_processes_revocation(tmp_path, 10, **env, expected_reason="ended")


async def test_shutdown_closes_sockets_with_going_away(tmp_path):
    await add_sqlite_user(tmp_path)
    port = free_port()
    env = {"TORNADO_AUTH_SESSIONS__URL": f"sqlite:///{tmp_path}/sessions.db"}
    process = await spawn(tmp_path, port, **env)
    try:
        client = Client(f"http://127.0.0.1:{port}")
        assert (await client.login("ann@example.com", PASSWORD)).code == 200
        socket = await open_socket(client)
        await next_event(socket, "hello")
        process.send_signal(signal.SIGTERM)
        code, _ = await closed_within(socket, 10)
        assert code == 1001
    finally:
        assert await stop_process(process) == 0


# -- caps ------------------------------------------------------------------------------------------

TOO_MANY_SOCKETS = 4008


@pytest.mark.store_independent  # caps counted in the process
async def test_sockets_past_the_per_session_cap_close_the_oldest(store: Store):
    async with serving(settings_for(store, live__max_sockets_per_session=3)) as server:
        client = await signed_in(server)
        sockets = []
        for _ in range(4):
            sockets.append(await open_socket(client))
            await next_event(sockets[-1], "hello")
        assert await closed_within(sockets[0], 10) == (
            TOO_MANY_SOCKETS,
            "too many open dashboards",
        )
        assert server.services.live.open_sockets == 3
        other = await signed_in(server)  # the cap is per session: another session may open one
        extra = await open_socket(other)
        await next_event(extra, "hello")
        assert server.services.live.open_sockets == 4
        for socket in [*sockets[1:], extra]:
            assert socket.close_code is None
            socket.close()


@pytest.mark.store_independent
async def test_sockets_past_the_per_user_cap_close_the_users_oldest(store: Store):
    async with serving(settings_for(store, live__max_sockets_per_user=2)) as server:
        tabs = [await signed_in(server) for _ in range(3)]  # three sessions of one user
        sockets = []
        for tab in tabs:
            sockets.append(await open_socket(tab))
            await next_event(sockets[-1], "hello")
        assert (await closed_within(sockets[0], 10))[0] == TOO_MANY_SOCKETS
        assert server.services.live.open_sockets == 2
        for socket in sockets[1:]:
            socket.close()


async def test_a_sign_in_past_the_session_cap_closes_the_oldest_sessions_socket(store: Store):
    async with serving(settings_for(store, sessions__max_per_user=2)) as server:
        oldest = await signed_in(server)
        socket = await open_socket(oldest)
        await next_event(socket, "hello")
        await signed_in(server)
        await signed_in(server)  # the third session: the oldest ends
        assert await closed_within(socket, 10) == (SESSION_ENDED, "limit")
        assert (await oldest.get("/api/dashboard")).code == 401


def test_sign_in_counters_stay_bounded_under_a_flood_and_count_the_last_minute():
    from tornado_auth.live import RateWindow

    from .conftest import Clock

    clock = Clock()
    window = RateWindow(clock)
    for _ in range(1000):  # a burst within one second
        window.add()
    clock.now += 30
    for _ in range(500):
        window.add()
    assert window.count() == 1500
    clock.now += 31  # the burst is now more than a minute old
    assert window.count() == 500
    for _ in range(600 * 128):  # a flood over ten minutes: memory stays at a minute's buckets
        clock.now += 1 / 128  # (exact in binary: the seconds fall where they should)
        window.add()
    assert len(window.buckets) <= 61
    assert window.count() == 60 * 128 + 1  # the events of the last 60 s, both ends included


# -- what an open socket keeps -------------------------------------------------------------------


class ProbeSocket(SessionWebSocket):
    """Tells what it still has once open; "raise" makes its message handler fail."""

    def opened(self) -> None:
        self.user_agent = self.request.headers.get("User-Agent")

    def on_message(self, message: str | bytes) -> None:
        if message == "raise":
            raise RuntimeError("the handler failed")
        try:
            kept = self.session is not None
        except RuntimeError:
            kept = False
        handshakes = [
            task
            for task in asyncio.all_tasks()
            if task.get_coro().__qualname__ == "RequestHandler._execute"
        ]
        self.write_json(
            {
                "email": self.current_user.email,
                "ip": self.request.remote_ip,
                "path": self.request.path,
                "headers": len(self.request.headers),
                "userAgentInOpened": self.user_agent,
                "sessionKept": kept,
                "handshakesRunning": len(handshakes),
            }
        )


async def open_probe(client: Client) -> Any:
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    url = client.base_url.replace("http://", "ws://") + "/ws/probe"
    request = HTTPRequest(url, headers={"Cookie": cookie, "User-Agent": "Probe/1.0"})
    return await tornado.websocket.websocket_connect(request)


@pytest.mark.store_independent
async def test_an_open_socket_keeps_its_user_and_address_but_not_the_handshake(store: Store):
    async with serving(settings_for(store), routes=[(r"/ws/probe", ProbeSocket)]) as server:
        client = await signed_in(server)
        socket = await open_probe(client)
        await socket.write_message("what do you have?")
        assert json.loads(await socket.read_message()) == {
            "email": "ann@example.com",
            "ip": "127.0.0.1",
            "path": "/ws/probe",
            "headers": 0,  # let go of once open; what the socket needs is read in opened()
            "userAgentInOpened": "Probe/1.0",
            "sessionKept": False,
            "handshakesRunning": 0,  # frames are read by a task of their own
        }
        socket.close()


@pytest.mark.store_independent
async def test_a_failing_message_handler_is_logged_with_its_request_and_closes_the_socket(
    store: Store, caplog: pytest.LogCaptureFixture
):
    async with serving(settings_for(store), routes=[(r"/ws/probe", ProbeSocket)]) as server:
        client = await signed_in(server)
        socket = await open_probe(client)
        with caplog.at_level(logging.ERROR):
            await socket.write_message("raise")
            assert await closed_within(socket, 10) == (None, None)
        assert "the handler failed" in caplog.text
        assert "GET /ws/probe (127.0.0.1)" in caplog.text
        assert server.services.live.open_sockets == 0


# -- pings -------------------------------------------------------------------------------------


class RawSocket:
    """A dashboard socket spoken to byte by byte, so a test decides whether pings are answered."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client: Client) -> RawSocket:
        host = client.base_url.removeprefix("http://")
        reader, writer = await asyncio.open_connection(*host.split(":"))
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws/dashboard HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Cookie: {cookie}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: its opcode and payload."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    def pong(self, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        self.writer.close()


PING, CLOSE = 0x9, 0x8


@pytest.mark.store_independent  # pings: the process's heartbeat
async def test_a_socket_that_answers_pings_stays_open(store: Store):
    async with serving(settings_for(store, live__ping_interval="0.3s")) as server:
        socket = await RawSocket.open(await signed_in(server))
        pings = 0
        while pings < 3:  # each ping answered before the next: never closed for it
            opcode, payload = await asyncio.wait_for(socket.frame(), 10)
            assert opcode != CLOSE, payload
            if opcode == PING:
                pings += 1
                socket.pong(payload)
        assert server.services.live.open_sockets == 1
        socket.close()


@pytest.mark.store_independent
async def test_a_socket_that_does_not_answer_a_ping_is_closed(store: Store):
    async with serving(settings_for(store, live__ping_interval="0.3s")) as server:
        socket = await RawSocket.open(await signed_in(server))
        pings = 0
        while True:
            opcode, payload = await asyncio.wait_for(socket.frame(), 10)
            if opcode == CLOSE:
                break
            pings += opcode == PING
        assert pings == 1  # the next visit finds it unanswered
        assert struct.unpack(">H", payload[:2])[0] == 1000
        assert payload[2:] == b"ping timed out"
        socket.close()


class FakeSocket:
    def __init__(self) -> None:
        self.pings = 0
        self.ended: tuple[int, str] | None = None

    def send_ping(self) -> None:
        self.pings += 1

    def end(self, code: int, reason: str) -> None:
        self.ended = (code, reason)


async def test_one_heartbeat_pings_every_socket_once_per_round_and_closes_the_silent():
    heartbeat = Heartbeat(1.0)  # ten slots, one visited per tick
    sockets = [FakeSocket() for _ in range(50)]
    for socket in sockets:
        heartbeat.add(socket)  # type: ignore[arg-type]
    heartbeat.close()  # the test turns the slots itself

    def round_() -> None:
        for _ in heartbeat.slots:
            heartbeat.visit()

    round_()
    assert [socket.pings for socket in sockets] == [1] * 50
    for socket in sockets[1:]:
        heartbeat.answered(socket)  # type: ignore[arg-type]
    heartbeat.remove(sockets[1])  # type: ignore[arg-type]
    round_()
    assert sockets[0].ended == (1000, "ping timed out")
    assert sockets[0].pings == 1 and sockets[1].pings == 1
    assert all(socket.pings == 2 and socket.ended is None for socket in sockets[2:])
    round_()  # closed or removed: neither pinged nor closed again
    assert sockets[0].pings == 1 and sockets[1].pings == 1 and sockets[1].ended is None


# -- expiry deadlines --------------------------------------------------------------------------


async def test_deadlines_come_in_order_once_each_and_follow_a_moved_expiry():
    from .conftest import Clock

    clock, now = Clock(), Clock().now
    deadlines = Deadlines(clock, lambda keys: None)
    try:
        deadlines.set("a", now + 10)
        deadlines.set("b", now + 5)
        deadlines.set("b", now + 5)  # a second socket of the session
        deadlines.set("c", now + 7)
        deadlines.discard("c")  # its last socket closed
        deadlines.set("a", now + 20)  # activity elsewhere moved its expiry
        clock.now = now + 6
        assert deadlines.pop_due() == ["b"]
        clock.now = now + 15
        assert deadlines.pop_due() == []
        clock.now = now + 20
        assert deadlines.pop_due() == ["a"]
        assert deadlines.at["a"] == now + 20  # known until the check decides what it was
    finally:
        deadlines.close()


async def test_deadlines_moved_again_and_again_keep_a_bounded_heap():
    from .conftest import Clock

    clock = Clock()
    deadlines = Deadlines(clock, lambda keys: None)
    try:
        for number in range(10_000):
            deadlines.set(f"key{number % 10}", clock.now + 100 + number)
        assert len(deadlines.heap) <= 2 * 10 + 17
    finally:
        deadlines.close()
