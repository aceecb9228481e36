"""Helpers shared by the test modules: signing in, forms, the live socket, server processes, the
CLI, browser pages. Fixtures and the app on an unused port are in conftest.py; no test module
imports another."""

from __future__ import annotations

import asyncio
import atexit
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import tornado.testing
import tornado.websocket
from tornado.httpclient import HTTPRequest, HTTPResponse

from tornado_auth import make_app, start_services, tasks
from tornado_auth.handlers.base import BaseHandler
from tornado_auth.handlers.lifecycle import Lifecycle
from tornado_auth.server import http_server
from tornado_auth.sessions import Lifetime, Session, SessionManager
from tornado_auth.users import User, new_user_id
from tornado_auth.users.passwords import hash_password
from tornado_auth.users.sqlite import SQLiteUserStore

from .conftest import PASSWORD, Client, Server, Store, free_port, settings_for, stop_server
from .counting import count_writes

REPO = Path(__file__).resolve().parent.parent
HOUR = 3600.0
# Session lifetimes for tests that drive a SessionManager directly: a day, 30 days remembered,
# two days at most, a touch at most every minute.
LIFETIME = Lifetime(
    ttl=24 * HOUR, remember_me_ttl=720 * HOUR, absolute_ttl=48 * HOUR, touch_interval=60
)
SESSION_ENDED = 4001  # the close code of a socket whose session ended


# -- signing in over HTTP --------------------------------------------------------------------------


async def form_token(client: Client, path: str) -> str:
    page = await client.get(path)
    assert page.code == 200
    found = re.search(rb'name="_xsrf" value="([^"]+)"', page.body)
    assert found is not None, page.body[:300]
    return found.group(1).decode()


async def submit(
    client: Client, path: str, fields: dict[str, str], page: str | None = None
) -> HTTPResponse:
    """Post a page's form as a browser would: with the XSRF token of ``page`` (else ``path``)."""
    token = await form_token(client, page or path)
    body = urllib.parse.urlencode({**fields, "_xsrf": token})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return await client.request("POST", path, raw=body, headers=headers)


async def signed_in(
    server: Server,
    email: str = "ann@example.com",
    role: str = "user",
    *,
    form: bool = False,
    prefix: str = "",
    remember_me: bool = False,
    agent: str | None = None,
) -> Client:
    """A client signed in as ``email`` with PASSWORD (added with ``role`` unless it exists), with
    no second step pending: through the JSON API (``remember_me``; ``agent``: the User-Agent the
    sign-in is made with), or through the sign-in page with ``form``; ``prefix`` is where the
    routes are mounted."""
    if await server.services.users.by_email(email) is None:
        await server.add_user(email, PASSWORD, role)
    client = server.client()
    if form:
        assert agent is None and not remember_me, "form sign-ins send neither"
        response = await submit(client, prefix + "/login", {"email": email, "password": PASSWORD})
        assert response.code == 302, response.body
        location = response.headers["Location"]
        assert not location.startswith(prefix + "/login/mfa"), "a second step is pending"
    else:
        fields = {"email": email, "password": PASSWORD, "rememberMe": remember_me}
        headers = {"User-Agent": agent} if agent else None
        response = await client.request("POST", prefix + "/api/login", fields, headers)
        assert response.code == 200, response.body
        assert "mfaRequired" not in json.loads(response.body), "a second step is pending"
    return client


async def leave_once_stored(
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    fields: dict[str, Any],
    client: Client | None = None,
) -> None:
    """POST ``fields`` (JSON, with ``client``'s cookies) to ``path`` over a connection of its own,
    and go away the moment the user store has stored the change, before what must follow it:
    returns once the server noticed, cut the request, and finished what runs to its end."""
    users = server.services.accounts.users
    real_set, stored, release, gone = users.set, asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def held_set(*args: Any, **kwargs: Any) -> Any:
        changed = await real_set(*args, **kwargs)
        stored.set()
        await release.wait()
        return changed

    real_close = Lifecycle.on_connection_close

    def closed(handler: Lifecycle) -> None:
        real_close(handler)
        gone.set()

    monkeypatch.setattr(users, "set", held_set)
    monkeypatch.setattr(Lifecycle, "on_connection_close", closed)
    payload = json.dumps(fields).encode()
    cookies = "; ".join(f"{k}={v}" for k, v in (client.cookies if client else {}).items())
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Cookie: {cookies}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await asyncio.wait_for(stored.wait(), 10)
    writer.close()  # gone with the change stored, and what follows it not yet done
    await asyncio.wait_for(gone.wait(), 10)  # the server noticed, and cut the request
    release.set()
    await tasks.settle(10)
    monkeypatch.setattr(users, "set", real_set)


async def burst(
    monkeypatch: pytest.MonkeyPatch,
    server: Server,
    count: int,
    send: Callable[[Client, int], Awaitable[HTTPResponse]],
    client: Client | None = None,
) -> list[int]:
    """Send ``count`` requests at once (``send(client, n)`` for n in 0..count-1) and hold each at
    the server, before it does anything, until all ``count`` are there: then they go on together,
    as the worst burst would. Their status codes, sorted. ``client``: the one to send with (its
    cookies), else a fresh one; either way with room for all ``count`` in flight at once."""
    arrived, everyone_here = 0, asyncio.Event()
    prepare = BaseHandler.prepare

    async def held(handler: BaseHandler) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone_here.set()
        await everyone_here.wait()
        resolving = prepare(handler)
        if resolving is not None:
            await resolving

    sender = client or server.client()
    concurrent = Client(sender.base_url, max_clients=count)
    concurrent.cookies = sender.cookies
    with monkeypatch.context() as patched:
        patched.setattr(BaseHandler, "prepare", held)
        responses = await asyncio.gather(*(send(concurrent, n) for n in range(count)))
    assert arrived == count
    return sorted(response.code for response in responses)


# -- signing in through a SessionManager ----------------------------------------------------------


def signed_in_session(
    user: str = "u1", remember: bool = False, ttl: float = LIFETIME.ttl
) -> Session:
    """A new session signed in as ``user`` (``user@example.com``, role user) for ``ttl``
    seconds, not yet committed: it has no token until a SessionManager commits it."""
    session = Session()
    session.login(user, {"email": f"{user}@example.com", "role": "user"}, remember, ttl)
    return session


async def committed_session(
    manager: SessionManager, user: str = "u1", remember: bool = False
) -> Session:
    """A session signed in as ``user`` for the ``manager``'s lifetime (remembered or not),
    committed through it: stored under its token."""
    lifetime = manager.lifetime
    session = signed_in_session(
        user, remember, lifetime.remember_me_ttl if remember else lifetime.ttl
    )
    change = await manager.commit(session)
    assert change is not None and change.token == session.token
    return session


# -- the live socket -------------------------------------------------------------------------------


async def open_socket(
    client: Client, **headers: str
) -> tornado.websocket.WebSocketClientConnection:
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    url = client.base_url.replace("http://", "ws://") + "/ws/dashboard"
    request = HTTPRequest(url, headers={"Cookie": cookie, **headers})
    return await tornado.websocket.websocket_connect(request)


async def next_event(socket: Any, kind: str, within: float = 10.0) -> dict:
    """The next message of this type; skips others (e.g. stats). ``within``: a deadline for
    correctness on a busy machine, not a measure of speed (bench/sockets.py measures that)."""
    deadline = time.monotonic() + within
    while True:
        message = await asyncio.wait_for(socket.read_message(), deadline - time.monotonic())
        assert message is not None, f"closed ({socket.close_code}) before a {kind} event"
        event = json.loads(message)
        if event["type"] == kind:
            return event


async def closed_within(socket: Any, seconds: float) -> tuple[int | None, str | None]:
    """Wait for the server to close the socket; its close code and reason."""
    deadline = time.monotonic() + seconds
    while True:
        message = await asyncio.wait_for(socket.read_message(), deadline - time.monotonic())
        if message is None:
            return socket.close_code, socket.close_reason


# -- server processes ------------------------------------------------------------------------------


async def add_sqlite_user(tmp_path: Path, email: str = "ann@example.com") -> None:
    """A user in ``tmp_path/users.db``, for server processes to sign in with PASSWORD."""
    users = SQLiteUserStore(f"sqlite:///{tmp_path}/users.db")
    await users.start()
    hashed = await hash_password(PASSWORD, 4)
    await users.add(User(new_user_id(), email, "Ann", "user", hashed, time.time()))
    await users.close()


async def spawn(tmp_path: Path, port: int, **env: str) -> asyncio.subprocess.Process:
    environment = {
        **os.environ,
        "TORNADO_AUTH_USERS__URL": f"sqlite:///{tmp_path}/users.db",
        "TORNADO_AUTH_SECRETS__COOKIE_SECRET": "s" * 40,
        "TORNADO_AUTH_USERS__DEMO_USERS": "false",
        "TORNADO_AUTH_LOGGING__ACCESS_LOG": "false",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tornado_auth", "serve", "--port", str(port)),
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert b"listening" in line
    return process


async def stop_process(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 30)


async def two_processes_revocation(tmp_path: Path, seconds: float, **env: str) -> None:
    """A socket held by process A closes when process B serves the revocation."""
    await add_sqlite_user(tmp_path)
    ports = free_port(), free_port()
    processes = [await spawn(tmp_path, port, **env) for port in ports]
    try:
        holder = Client(f"http://127.0.0.1:{ports[0]}")
        assert (await holder.login("ann@example.com", PASSWORD)).code == 200
        socket = await open_socket(holder)
        await next_event(socket, "hello", 10)
        revoker = Client(f"http://127.0.0.1:{ports[1]}")
        assert (await revoker.login("ann@example.com", PASSWORD)).code == 200
        assert (await revoker.post("/api/sessions/revoke-others")).code == 200
        assert await closed_within(socket, seconds) == (SESSION_ENDED, env["expected_reason"])
    finally:
        codes = [await stop_process(process) for process in processes]
    assert codes == [0, 0]


# -- a service that goes away ----------------------------------------------------------------


class Outage:
    """A TCP proxy to a real service (Redis, a MongoDB wire-protocol server) that a test takes
    away while its data stays where it is: ``cut()`` drops every connection through the proxy and
    closes new ones at once (a server that is down); ``freeze()`` keeps them open but passes no
    byte either way (a server that stopped answering); ``end()`` restores the service. ``asked``
    counts the bytes clients sent while it was frozen: none means the service was not asked."""

    def __init__(self, host: str, port: int) -> None:
        self.target = host, port
        self.cut_off = False
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.asked = 0
        self.pipes: set[asyncio.StreamWriter] = set()

    @classmethod
    def to(cls, url: str) -> Outage:
        """A proxy to the (first) host:port of a redis:// or mongodb:// URL."""
        host_port = url.split("://", 1)[1].split("/", 1)[0].split(",")[0].rsplit("@", 1)[-1]
        host, _, port = host_port.rpartition(":")
        return cls(host, int(port))

    def url(self, url: str) -> str:
        """``url`` with its host:port replaced by the proxy's."""
        scheme, rest = url.split("://", 1)
        authority, slash, path = rest.partition("/")
        credentials = authority.rpartition("@")[0]
        at = "@" if credentials else ""
        return f"{scheme}://{credentials}{at}127.0.0.1:{self.port}{slash}{path}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.pipes |= {writer, upstream}
        await asyncio.gather(
            self._pump(reader, upstream, counted=True),
            self._pump(upstream_reader, writer, counted=False),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counted: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if not self.flowing.is_set():
                    self.asked += len(data) if counted else 0
                    await self.flowing.wait()  # held, as by a server that stopped answering
                if writer.is_closing():
                    break  # cut meanwhile: what was held goes nowhere
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self.pipes.discard(writer)

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self.pipes):
            writer.close()
        self.flowing.set()  # what was held goes nowhere: its connections are closed

    def freeze(self) -> None:
        self.asked = 0
        self.flowing.clear()

    def end(self) -> None:
        self.cut_off = False
        self.flowing.set()

    async def close(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()


# -- the CLI ---------------------------------------------------------------------------------------


def cli_environment(tmp_path: Path, env: dict[str, str | None] | None = None) -> dict[str, str]:
    """The CLI's environment: its stores under tmp_path, ``env`` on top (None removes one)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TORNADO_AUTH_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ.update(
        {
            "TORNADO_AUTH_USERS__URL": f"sqlite:///{tmp_path}/users.db",
            "TORNADO_AUTH_SESSIONS__URL": f"sqlite:///{tmp_path}/sessions.db",
            "TORNADO_AUTH_USERS__BCRYPT_ROUNDS": "4",
            "TORNADO_AUTH_SECRETS__SECRET_FILE": f"{tmp_path}/secret",
        }
    )
    environ.update(env or {})
    return {name: value for name, value in environ.items() if value is not None}


class Forks:
    """``python -m tests.forks``: one process that has imported the CLI and forks a child for each
    run, so a run costs a fork, not Python's start-up and the package's imports. Started at the
    first run, ended when the tests end; one run at a time, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.forks"],
                cwd=REPO,
                env=cli_environment(REPO),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            atexit.register(self.stop)
        return self.process

    def run(
        self, args: list[str], env: dict[str, str], cwd: Path, stdin: str, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """As ``subprocess.run(args, input=stdin, capture_output=True, text=True, ...)``."""
        with tempfile.TemporaryDirectory() as folder:
            streams = {name: Path(folder) / name for name in ("stdin", "stdout", "stderr")}
            with streams["stdin"].open("w") as written:  # encoded as text mode encodes input
                written.write(stdin)
            for name in ("stdout", "stderr"):
                streams[name].touch()
            request = {
                "args": args,
                "env": env,
                "cwd": str(cwd),
                "timeout": timeout,
                **{name: str(path) for name, path in streams.items()},
            }
            with self.lock:
                process = self._started()
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                reply = process.stdout.readline()
            assert reply, "python -m tests.forks ended"
            status = json.loads(reply)["status"]
            # read back as text mode reads a pipe: the locale's encoding, universal newlines
            stdout, stderr = (streams[name].open().read() for name in ("stdout", "stderr"))
        command = [sys.executable, "-m", "tornado_auth", *args]
        if status is None:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, status, stdout, stderr)

    def stop(self) -> None:
        if self.process is not None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(30)
            self.process = None


FORKS = Forks()


def cli(
    tmp_path: Path, *args: str, stdin: str = "", env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tornado_auth ARGS`` with its stores under tmp_path: in a process of its own,
    forked from one that has imported the package already (``FORKS``)."""
    return FORKS.run(list(args), cli_environment(tmp_path, env), tmp_path, stdin, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The CLI failed with ``status`` and said why in one line, without a traceback."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def create_user(
    tmp_path: Path, email: str = "a@example.com", *extra: str, **kwargs
) -> subprocess.CompletedProcess[str]:
    args = ("create-user", "--email", email, "--name", "A", "--password-stdin", *extra)
    return cli(tmp_path, *args, stdin=PASSWORD + "\n", **kwargs)


async def _audit_events(tmp_path: Path) -> list[tuple[str, str | None, str, dict]]:
    store = SQLiteUserStore(f"sqlite:///{tmp_path}/users.db")
    await store.start()
    entries, _ = await store.audit_page(0, 100)
    await store.close()
    return [(e.event, e.email, e.user_agent, e.detail) for e in reversed(entries)]


def audit_events(tmp_path: Path) -> list[tuple[str, str | None, str, dict]]:
    """The audit trail, oldest first: (event, email, user agent, detail)."""
    return asyncio.run(_audit_events(tmp_path))


# -- browser pages ---------------------------------------------------------------------------------

ARTIFACTS = Path(__file__).parent / "artifacts"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


async def axe_violations(page: Any) -> list[str]:
    """What axe-core finds against WCAG 2.1 AA on the page as it is now."""
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG_AA}})
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}"
        for v in results.response["violations"]
    ]


SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def browser_sign_in(page: Any, base_url: str, email: str) -> None:
    """Sign in through the page a visit to the dashboard leads to, and land on the dashboard."""
    await page.goto(f"{base_url}/dashboard")
    assert "/login?next=/dashboard" in page.url
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(f"{base_url}/dashboard")


# -- the app on a loop of its own, for fuzzing with blocking clients ------------------------------

COOKIE = "session"
# The people a fuzzed app serves (as name@fuzz.test, with PASSWORD), by role.
PEOPLE = {
    "member": "user",
    "admin": "admin",
    "victim": "user",
    "bait": "user",
    "traveller": "user",
    "keeper": "user",
}
SIGNED_IN_PEOPLE = ("member", "admin", "bait", "keeper")
RESTORED_FIELDS = ("email", "name", "role", "password_hash", "disabled")


class CountersOfOneTest:
    """A store's throttle counters, each name under a prefix that ``next_test()`` changes: a
    test's throttles count only what it did, never what an earlier test sent to the same app."""

    def __init__(self, counters: Any) -> None:
        self.counters = counters
        self.tests = 0

    def next_test(self) -> None:
        self.tests += 1

    def _name(self, name: str) -> str:
        return f"test{self.tests}:{name}"

    async def hit(self, name: str, window: float, now: float) -> tuple[int, float]:
        return await self.counters.hit(self._name(name), window, now)

    async def peek(self, name: str, now: float) -> tuple[int, float]:
        return await self.counters.peek(self._name(name), now)

    async def release(self, name: str, now: float) -> None:
        await self.counters.release(self._name(name), now)

    async def clear(self, name: str) -> None:
        await self.counters.clear(self._name(name))

    async def sweep(self, now: float) -> int:
        return await self.counters.sweep(now)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LiveApp:
    """The app served from a background thread's event loop, for blocking clients; ``reset``
    gives each test the same people in the same state."""

    def __init__(self, kind: str, store: Store) -> None:
        self.kind = kind
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"fuzz-{kind}")
        self.thread.start()
        self.server: Server | None = None
        self.people: dict[str, User] = {}  # as created
        self.cookies: dict[str, bytes] = {}  # a session of each of SIGNED_IN_PEOPLE, by name
        self.ids: dict[str, str] = {}  # each person's user id; "admin_session": the admin's
        self.clean: tuple[int, list[User | None]] | None = None  # the state the last reset left

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> Server:
        settings = settings_for(
            self.store,
            # Failed sign-ins must not turn into 429s that hide what the fuzz is after.
            throttle__account_ip_failures=10**9,
            throttle__ip_failures=10**9,
            # No lazy "touch" write in the middle of a run, so "nothing written" is exact.
            sessions__touch_interval="1d",
        )
        services = await start_services(settings)
        self.counted = count_writes(services.sessions)
        # what the throttles count (sign-ins, registrations, passkey challenges, mail), per test
        self.counters = CountersOfOneTest(services.accounts.throttle.counters)
        services.accounts.throttle.counters = services.lifecycle.counters = self.counters
        server = http_server(make_app(services), settings.replace(server__xheaders=True))
        sock, port = tornado.testing.bind_unused_port()
        server.add_sockets([sock])
        return Server(services, port, server)

    def start(self) -> None:
        self.server = self.call(self._start())
        for name, role in PEOPLE.items():
            user = self.call(self.server.add_user(f"{name}@fuzz.test", PASSWORD, role, name))
            self.people[name] = user

    def reset(self) -> None:
        """Every person as created, signed in (the ones in SIGNED_IN_PEOPLE) and nowhere else:
        each test starts from this, whatever the tests before it changed. When the test before
        wrote no session and left every person's record as the last reset did, that state is
        still there and its sessions are kept; otherwise all are restored and signed in afresh.
        The throttles' counters start from nothing whatever the state."""
        self.counters.next_test()
        if self.clean is not None and self.clean == self.call(self._state()):
            return
        self.call(self._restore())
        self.ids = {name: user.id for name, user in self.people.items()}
        self.cookies = {name: self.log_in(f"{name}@fuzz.test") for name in SIGNED_IN_PEOPLE}
        # The admin's own session, as the member would name it: never the member's to revoke.
        sessions = self.send("GET", "/api/sessions", {"Cookie": self.cookies["admin"]}).json()
        self.ids["admin_session"] = sessions["sessions"][0]["id"]
        self.clean = self.call(self._state())

    async def _state(self) -> tuple[int, list[User | None]]:
        """(session store writes, every person's record as stored): what a test may change."""
        assert self.server is not None
        users = self.server.services.users
        return self.writes, [await users.get(user.id) for user in self.people.values()]

    async def _restore(self) -> None:
        assert self.server is not None
        services = self.server.services
        for user in self.people.values():
            fields = {name: getattr(user, name) for name in RESTORED_FIELDS}
            await services.users.set(user.id, **fields)
            await services.sessions.revoke_user(user.id)

    def log_in(self, email: str, headers: dict[str, bytes] | None = None) -> bytes:
        """A ``Cookie`` header value for a new session of ``email``."""
        reply = self.send(
            "POST",
            "/api/login",
            {"Content-Type": b"application/json", **(headers or {})},
            json.dumps({"email": email, "password": PASSWORD}).encode(),
        )
        assert reply.status == 200, reply.body
        return session_cookie(reply)

    def stop(self) -> None:
        async def shut_down() -> None:
            if self.server is not None:
                await stop_server(self.server)
            await self.store.cleanup()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        try:
            self.call(shut_down())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    # -- requests and store state --

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def secret(self) -> Any:
        assert self.server is not None
        return self.server.secret

    @property
    def max_body_size(self) -> int:
        assert self.server is not None
        return self.server.services.settings["server.max_body_size"]

    def send(
        self,
        method: str,
        path: str,
        headers: dict[str, bytes] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, response.msg, response.read())
        finally:
            connection.close()

    @property
    def writes(self) -> int:
        return self.counted.writes

    def user_total(self) -> int:
        assert self.server is not None
        return self.call(self.server.services.users.page(0, 1))[1]

    def snapshot(self) -> tuple[int, int]:
        """(session store writes, users): what a rejected request must leave unchanged."""
        return self.writes, self.user_total()


def session_cookie(reply: Reply) -> bytes:
    for header in reply.headers.get_all("Set-Cookie") or []:
        cookie = SimpleCookie()
        cookie.load(header)
        if COOKIE in cookie and cookie[COOKIE].value:
            return f"{COOKIE}={cookie[COOKIE].coded_value}".encode()
    raise AssertionError(f"no session cookie in {reply.headers}")
