"""Fixtures: real Redis, a MongoDB wire-protocol server (mongod when present, else FerretDB),
per-test isolation, and the app on an unused port."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis
import tornado.httpserver
import tornado.testing
from pymongo import AsyncMongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from tools import probes
from tornado_auth import Services, make_app, start_services
from tornado_auth.accounts import Origin
from tornado_auth.server import http_server
from tornado_auth.sessions import Backend, backend_for_url
from tornado_auth.sessions.redis import parse_url, redis_client
from tornado_auth.settings import Settings, load_settings

if TYPE_CHECKING:
    from .helpers import LiveApp

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MONGO_URL = os.environ.get("TEST_MONGO_URL", "mongodb://127.0.0.1:27017")
# started by scripts/services (cluster-up, sentinel-up)
REDIS_CLUSTER_URL = os.environ.get(
    "TEST_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"
)
REDIS_SENTINEL_URL = os.environ.get(
    "TEST_REDIS_SENTINEL_URL",
    "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/mymaster",
)
REDIS_URLS = {
    "redis": REDIS_URL,
    "redis-cluster": REDIS_CLUSTER_URL,
    "redis-sentinel": REDIS_SENTINEL_URL,
}
PASSWORD = "correct horse battery"  # the password test users sign in with
SESSION_BACKENDS = ("memory", "sqlite", "redis", "mongodb", "redis-cluster", "redis-sentinel")
USER_STORES = ("sqlite", "mongodb")
# The store of a test marked store_independent: SQLite, the default (its files stay in tmp_path).
ONE_STORE = "sqlite"


def free_port() -> int:
    """A port nothing listens on right now."""
    sock, port = tornado.testing.bind_unused_port()
    sock.close()
    return port


def free_ports_in_a_row(count: int) -> int:
    """The first of ``count`` consecutive ports nothing listens on right now (for programs that
    take a first port and count up from it)."""
    while True:
        first = free_port()
        if first + count > 65536:
            continue
        socks = []
        try:
            for port in range(first + 1, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue  # one of them is taken: another first port
        finally:
            for sock in socks:
                sock.close()


_CLUSTER_MASTERS: dict[str, list[tuple[str, int]]] = {}  # tests never reshard a cluster


def _redis_group_answers(url: str) -> bool:
    """Every node of a cluster says it is whole, or the master the sentinels name answers."""
    nodes, master, _, _ = parse_url(url)
    host, ports = nodes[0][0], [port for _, port in nodes]
    if master is None:
        return probes.cluster_answers(ports, host)
    return probes.sentinel_master(ports, master, host) is not None


def missing(message: str) -> None:
    """What a test does when something it needs is missing: fail under CI (where the project's
    own scripts must have provided it), skip elsewhere; ``message`` names what is missing."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_program(name: str, why: str) -> None:
    """Fail under CI, skip elsewhere, when the program ``name`` is not on PATH."""
    if shutil.which(name) is None:
        missing(f"{name} is not installed: {why}")


def require_service(name: str) -> None:
    """Fail under CI (naming the service), skip elsewhere, when a real service is missing."""
    if name in ("redis-cluster", "redis-sentinel"):
        url = REDIS_URLS[name]
        if not _redis_group_answers(url):
            missing(f"{name} is not reachable at {url}: run scripts/services up")
        return
    url = REDIS_URL if name == "redis" else MONGO_URL
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    answers = probes.redis_answers if name == "redis" else probes.mongo_answers
    if not answers(int(port), host):
        missing(f"{name} is not reachable at {host_port}: run scripts/services up")


class Store:
    """A unique place in a real service for one test, and a way to read all of it back."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        # the service it runs on (a fixture parameter), and the backend tests branch on: every
        # Redis deployment (single server, Cluster, Sentinel) is kind "redis"
        self.service = kind
        self.kind = "redis" if kind in REDIS_URLS else kind
        self.tag = uuid.uuid4().hex[:12]
        self.prefix = f"test:{self.tag}:"
        self.database = f"ta_test_{self.tag}"
        self.tmp_path = tmp_path

    def session_url(self) -> str:
        if self.kind == "redis":
            return REDIS_URLS[self.service]
        return {
            "memory": "memory://",
            "sqlite": f"sqlite:///{self.tmp_path}/sessions.db",
            "mongodb": f"{MONGO_URL}/{self.database}",
        }[self.kind]

    def user_url(self) -> str:
        """Users in the MongoDB wire-protocol server (mongod when present, else FerretDB) beside
        the Redis and MongoDB session stores, else in SQLite (also for
        Redis Cluster and Sentinel: their runs test the session store, and stay quick)."""
        if self.service in ("redis", "mongodb"):
            return f"{MONGO_URL}/{self.database}"
        return f"sqlite:///{self.tmp_path}/users.db"

    async def redis_masters(self, decode: bool = True) -> list[aioredis.Redis]:
        """A client for each Redis master holding this store's keys: every master of a cluster,
        the current master of a Sentinel group; the caller closes them. ``decode``: replies as
        text, else as bytes (session values are MessagePack)."""
        if self.service == "redis":
            return [aioredis.from_url(REDIS_URL, decode_responses=decode)]
        url = self.session_url()
        addresses = _CLUSTER_MASTERS.get(url, [])
        if not addresses:
            client = redis_client(url, decode_responses=True)
            try:
                if self.service == "redis-cluster":
                    await client.initialize()
                    addresses = [(node.host, node.port) for node in client.get_primaries()]
                    _CLUSTER_MASTERS[url] = addresses
                else:  # the master may change: asked every time
                    pool = client.connection_pool
                    addresses = [await pool.sentinel_manager.discover_master(pool.service_name)]
            finally:
                await client.aclose()
                if self.service == "redis-sentinel":
                    await client.connection_pool.sentinel_manager.aclose()
        return [aioredis.Redis(host=h, port=p, decode_responses=decode) for h, p in addresses]

    async def redis_keys(self) -> dict[str, list[bytes]]:
        """This test's keys, by the master that holds them (``host:port``), as bytes (a
        session's name is raw bytes)."""
        found = {}
        for client in await self.redis_masters(decode=False):
            address = client.get_connection_kwargs()
            keys = [key async for key in client.scan_iter(match=self.prefix + "*")]
            found[f"{address['host']}:{address['port']}"] = keys
            await client.aclose()
        return found

    async def dump(self, backend: Backend | None = None) -> str:
        """Everything this test stored, as text, to search for secrets. Redis names a session by
        its store key's raw bytes (before, in base64url): the key in hex follows each such name."""
        if self.kind == "redis":
            parts = []
            for client in await self.redis_masters(decode=False):
                async for key in client.scan_iter(match=self.prefix + "*"):
                    kind = (await client.type(key)).decode()
                    read = {"hash": client.hgetall, "string": client.get}.get(kind)
                    value = await (read(key) if read else client.zrange(key, 0, -1))
                    session = f"{self.prefix}s:".encode()
                    name = key.decode("utf-8", "backslashreplace")
                    if key.startswith(session) and len(key) == len(session) + 32:
                        name += " " + key[len(session) :].hex()
                    elif key.startswith(session) and len(key) == len(session) + 43:
                        name += " " + base64.urlsafe_b64decode(key[-43:] + b"=").hex()
                    parts.append(f"{name}={value!r}")
                await client.aclose()
            return "\n".join(parts)
        if self.kind == "mongodb":
            client = AsyncMongoClient(MONGO_URL)
            parts = []
            for name in await client[self.database].list_collection_names():
                parts += [repr(doc) async for doc in client[self.database][name].find({})]
            await client.close()
            return "\n".join(parts)
        if self.kind == "sqlite":
            return "\n".join(
                path.read_bytes().decode("latin-1") for path in self.tmp_path.glob("*.db*")
            )
        return repr(backend.store._records) + repr(backend.store._users)

    async def cleanup(self) -> None:
        if self.kind == "redis":
            for client in await self.redis_masters(decode=False):  # every master of a cluster
                keys = [key async for key in client.scan_iter(match=self.prefix + "*")]
                async with client.pipeline(transaction=False) as pipe:
                    for key in keys:  # one by one: a cluster node refuses keys of two slots
                        pipe.delete(key)
                    await pipe.execute()
                await client.aclose()
        if self.service in ("redis", "mongodb"):  # users live in MongoDB for both
            client = AsyncMongoClient(MONGO_URL)
            await client.drop_database(self.database)
            await client.close()


@pytest.fixture(params=list(REDIS_URLS))
async def redis_backend(request, tmp_path: Path) -> AsyncIterator[Backend]:
    """A started Redis session backend on each Redis service (one server, Cluster, Sentinel)."""
    require_service(request.param)
    store = Store(request.param, tmp_path)
    backend = backend_for_url(store.session_url(), store.prefix)
    await backend.start()
    yield backend
    await backend.close()
    await store.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "store_independent: the test checks what no store decides (HTTP handling, validation, "
        "headers, cookies, pages), so its store fixture is ONE_STORE instead of every session "
        "backend",
    )
    config.addinivalue_line(
        "markers",
        "user_stores: the test checks what the user store decides (users, audit trail), so its "
        "store fixture is each of USER_STORES (SQLite; MongoDB sessions with MongoDB users) "
        "instead of every session backend",
    )
    config.addinivalue_line(
        "markers",
        "stores(*kinds): the store fixture is each of these kinds (of SESSION_BACKENDS) instead "
        "of every session backend; for a module whose own choice of stores a test may override "
        "with store_independent or user_stores",
    )


STORE_MARKS = ("store_independent", "user_stores", "stores")


@pytest.hookimpl(tryfirst=True)  # before the parametrize marks are read
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The ``store`` of a test marked ``store_independent`` is ONE_STORE; of one marked
    ``user_stores``, each of USER_STORES; of one marked ``stores(*kinds)``, each of those kinds.
    The mark closest to the test wins (on the test, then its class, then its module's
    ``pytestmark``), so a module may choose its stores and a test of it run on one."""
    found = [
        (node, mark)
        for node, mark in metafunc.definition.iter_markers_with_node()
        if mark.name in STORE_MARKS
    ]
    if not found or "store" not in metafunc.fixturenames:
        return
    closest, mark = found[0]
    here = sorted({other.name for node, other in found if node is closest})
    if len(here) > 1:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: marked {' and '.join(here)}")
    if mark.name == "store_independent":
        stores = [ONE_STORE]
    elif mark.name == "user_stores":
        stores = list(USER_STORES)
    else:
        stores = list(mark.args)
        unknown = set(stores) - set(SESSION_BACKENDS)
        if not stores or unknown:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: stores{tuple(stores)}")
    # as a parametrize mark, which takes precedence over the fixture's own params
    metafunc.definition.add_marker(pytest.mark.parametrize("store", stores, indirect=True))


@pytest.fixture(params=SESSION_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """One session backend kind per run of the test: every one of SESSION_BACKENDS, unless the
    test is marked ``store_independent``, ``user_stores`` or ``stores`` or parametrises ``store``
    itself."""
    if request.param in ("redis", "mongodb"):
        require_service(request.param)
        require_service("mongodb")
    elif request.param in REDIS_URLS:
        require_service(request.param)
    place = Store(request.param, tmp_path)
    yield place
    await place.cleanup()


@pytest.fixture
async def backend(store: Store) -> AsyncIterator[Backend]:
    backend = backend_for_url(store.session_url(), store.prefix)
    await backend.start()
    yield backend
    await backend.close()


class Clock:
    """A clock a test moves by hand: ``clock.now += 61``."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings_for(store: Store, **overrides: Any) -> Settings:
    values = {
        "sessions.url": store.session_url(),
        "sessions.key_prefix": store.prefix,
        "users.url": store.user_url(),
        "users.bcrypt_rounds": 4,
        "users.demo_users": False,
        "secrets.secret_file": str(store.tmp_path / "cookie_secret"),
        "logging.access_log": False,
        "mail.url": f"file:///{store.tmp_path}/outbox",  # read back by tests/mailbox.py
    }
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    return load_settings(environ={}, overrides=values)


class Client:
    """An HTTP client with a cookie jar, like one browser profile or one API script."""

    def __init__(self, base_url: str, max_clients: int | None = None) -> None:
        """``max_clients``: requests in flight at once (Tornado's shared client allows 10, so a
        burst through it never has more than 10 at the server)."""
        self.base_url = base_url
        self.cookies: dict[str, str] = {}
        self.http = (
            AsyncHTTPClient(force_instance=True, max_clients=max_clients)
            if max_clients
            else AsyncHTTPClient()
        )

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | str | None = None,
    ) -> HTTPResponse:
        all_headers = dict(headers or {})
        if body is not None:
            raw = json.dumps(body)
            all_headers.setdefault("Content-Type", "application/json")
        if self.cookies and "Cookie" not in all_headers:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if raw is None and method in ("POST", "PATCH", "PUT"):
            raw = b""
        response = await self.http.fetch(
            self.base_url + path,
            method=method,
            body=raw,
            headers=all_headers,
            raise_error=False,
            follow_redirects=False,
            allow_nonstandard_methods=True,
        )
        self._remember(response)
        return response

    def _remember(self, response: HTTPResponse) -> None:
        for header in response.headers.get_list("Set-Cookie"):
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or (morsel["expires"] and not morsel.value):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.coded_value

    async def get(self, path: str, **kwargs: Any) -> HTTPResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> HTTPResponse:
        return await self.request("POST", path, body, **kwargs)

    async def login(self, email: str, password: str, remember_me: bool = False) -> HTTPResponse:
        body = {"email": email, "password": password, "rememberMe": remember_me}
        return await self.post("/api/login", body)


def body(response: HTTPResponse) -> Any:
    return json.loads(response.body)


class Server:
    """The app served on an unused port, with the services it runs on."""

    def __init__(self, services: Services, port: int, http: tornado.httpserver.HTTPServer) -> None:
        self.services = services
        self.app = http.request_callback
        self.port = port
        self.http = http
        self.base_url = f"http://127.0.0.1:{port}"

    @property
    def secret(self) -> Any:
        return self.app.settings["cookie_secret"]

    def client(self, max_clients: int | None = None) -> Client:
        return Client(self.base_url, max_clients)

    async def add_user(
        self, email: str, password: str = PASSWORD, role: str = "user", name: str = "Test"
    ) -> Any:
        return await self.services.accounts.register(email, name, password, Origin(), role)


async def start_server(
    settings: Settings, services: Services | None = None, **app_overrides: Any
) -> Server:
    """Serve the app; pass ``services`` to serve a second app over the same stores."""
    services = services or await start_services(settings)
    app = make_app(services, **app_overrides)
    sock, port = tornado.testing.bind_unused_port()
    http = http_server(app, settings)
    http.add_sockets([sock])
    return Server(services, port, http)


@asynccontextmanager
async def serving(settings: Settings, **app_overrides: Any) -> AsyncIterator[Server]:
    """The app (``make_app`` with ``app_overrides``) on an unused port, with services of its own,
    for the length of a ``with`` block."""
    server = await start_server(settings, **app_overrides)
    try:
        yield server
    finally:
        await stop_server(server)


async def stop_server(server: Server) -> None:
    server.http.stop()
    await server.http.close_all_connections()
    await server.services.close()


@pytest.fixture
async def server(store: Store) -> AsyncIterator[Server]:
    running = await start_server(settings_for(store))
    yield running
    await stop_server(running)


@pytest.fixture
def live(served: LiveApp) -> LiveApp:
    """A module's app on a loop of its own (its ``served`` fixture) with its people reset, so no
    test sees what another changed."""
    served.reset()
    return served


# -- fixtures several modules use ------------------------------------------------------------


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Server]:
    """Redis sessions and MongoDB users (the production pairing), for the browser tests; a
    module with an ``app`` fixture of its own uses that."""
    require_service("redis")
    require_service("mongodb")
    place = Store("redis", tmp_path)
    async with serving(settings_for(place)) as server:
        yield server
    await place.cleanup()


@pytest.fixture
async def mongo_users_url(tmp_path: Path) -> AsyncIterator[str]:
    """A unique MongoDB database for users, dropped afterwards."""
    require_service("mongodb")
    place = Store("mongodb", tmp_path)
    yield place.user_url()
    await place.cleanup()


# -- a real browser ------------------------------------------------------------------------------

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's headless Chromium, driven by Playwright."""
    if not shutil.which(CHROMIUM):
        missing(f"chromium is not installed at {CHROMIUM}: scripts/test installs it")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()
