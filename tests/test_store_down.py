"""A store that is down gives a clear 503, /readyz names it, and the server recovers by itself."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from tornado.web import create_signed_value

from tornado_auth import ApiHandler, authenticated

from .conftest import (
    MONGO_URL,
    PASSWORD,
    REDIS_URL,
    Store,
    body,
    free_port,
    require_program,
    require_service,
    serving,
    settings_for,
)
from .helpers import Outage


class RedisProcess:
    """A private redis-server on its own port, to stop and start under a running app."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(self.directory)),
            stdout=subprocess.DEVNULL,
        )
        client = aioredis.from_url(f"redis://127.0.0.1:{self.port}")
        try:
            for _ in range(200):  # until it answers PING, at most ~10 s
                try:
                    await client.ping()
                    return
                except (OSError, aioredis.ConnectionError):
                    await asyncio.sleep(0.05)
            raise RuntimeError("redis-server did not start")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await self.process.wait()
            self.process = None


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    require_program("redis-server", "this test stops and starts a private one")
    redis = RedisProcess(free_port(), tmp_path)
    await redis.start()
    yield redis
    await redis.stop()


@pytest.fixture
def place(tmp_path: Path) -> Store:
    return Store("sqlite", tmp_path)


async def test_redis_down_gives_503_and_readyz_names_it_then_recovers(place, private_redis):
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    async with serving(settings_for(place, sessions__url=url)) as server:
        await server.add_user("ann@example.com", PASSWORD)
        client = server.client()
        assert (await client.login("ann@example.com", PASSWORD)).code == 200

        await private_redis.stop()
        response = await client.get("/api/dashboard")
        assert response.code == 503
        assert body(response) == {"error": "Session store unavailable"}
        login = await server.client().login("ann@example.com", PASSWORD)
        assert login.code == 503
        assert body(login) == {"error": "Session store unavailable"}
        ready = await client.get("/readyz")
        assert ready.code == 503
        assert body(ready)["down"] == ["session store (redis)"]
        assert (await client.get("/healthz")).code == 200
        assert b"Traceback" not in response.body + login.body + ready.body

        await private_redis.start()  # back, empty: the server reconnects by itself
        assert body(await client.get("/readyz")) == {"status": "ready"}
        again = server.client()
        assert (await again.login("ann@example.com", PASSWORD)).code == 200
        assert (await again.get("/api/dashboard")).code == 200


async def test_anonymous_requests_do_not_need_the_session_store(place):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with serving(settings_for(place, sessions__url=dead)) as server:
        response = await server.client().get("/api/dashboard")
        assert response.code == 401  # no cookie: nothing to look up
        assert (await server.client().get("/healthz")).code == 200


async def test_mongodb_user_store_down_gives_503_naming_the_user_store(place):
    dead = f"mongodb://127.0.0.1:{free_port()}/ta_down?serverSelectionTimeoutMS=300"
    async with serving(settings_for(place, users__url=dead)) as server:
        response = await server.client().login("ann@example.com", PASSWORD)
        assert response.code == 503
        assert body(response) == {"error": "User store unavailable"}
        ready = await server.client().get("/readyz")
        assert ready.code == 503
        assert body(ready)["down"] == ["user store (mongodb)"]


async def test_mongodb_session_store_down_gives_503(place):
    dead = f"mongodb://127.0.0.1:{free_port()}/ta_down?serverSelectionTimeoutMS=300"
    async with serving(settings_for(place, sessions__url=dead)) as server:
        await server.add_user("ann@example.com", PASSWORD)  # users in SQLite, which answers
        login = await server.client().login("ann@example.com", PASSWORD)
        assert login.code == 503
        assert body(login) == {"error": "Session store unavailable"}
        assert "Set-Cookie" not in login.headers
        returning = server.client()
        token = "a-token-of-an-earlier-session"  # a signed cookie: its session is looked up
        returning.cookies["session"] = create_signed_value(server.secret, "session", token).decode()
        dashboard = await returning.get("/api/dashboard")
        assert dashboard.code == 503
        assert body(dashboard) == {"error": "Session store unavailable"}
        ready = await server.client().get("/readyz")
        assert ready.code == 503
        assert body(ready)["down"] == ["session store (mongodb)"]


class Cart(ApiHandler):
    """What an app keeps in its users' sessions."""

    @authenticated
    async def get(self) -> None:
        self.send_json({"cart": self.session.get("cart")})

    @authenticated
    async def post(self) -> None:
        self.session["cart"] = self.json_body()["cart"]
        self.send_json({"cart": self.session["cart"]})


@pytest.fixture(params=["redis", "mongodb"])
async def outage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Outage, str, Store]]:
    """A session store reached through an Outage, and its URL through the proxy."""
    require_service(request.param)
    place = Store(request.param, tmp_path)
    proxy = Outage.to(REDIS_URL if request.param == "redis" else MONGO_URL)
    await proxy.start()
    url = proxy.url(place.session_url())
    if request.param == "mongodb":  # this server only, as the proxy: no replica set discovery
        url += "?directConnection=true"
    yield proxy, url, place
    await proxy.close()
    await place.cleanup()


async def test_an_outage_between_a_sessions_load_and_its_commit_gives_503_and_loses_nothing(
    outage, monkeypatch, caplog
):
    proxy, url, place = outage
    settings = settings_for(
        place, sessions__url=url, users__url=f"sqlite:///{place.tmp_path}/users.db"
    )
    async with serving(settings, routes=[(r"/cart", Cart)]) as server:
        await server.add_user("ann@example.com", PASSWORD)
        await server.add_user("bob@example.com", PASSWORD)
        client, other = server.client(), server.client()
        assert (await client.login("ann@example.com", PASSWORD)).code == 200
        assert (await client.post("/cart", {"cart": ["book"]})).code == 200
        assert (await other.login("bob@example.com", PASSWORD)).code == 200
        assert (await other.post("/cart", {"cart": ["pen"]})).code == 200

        store = server.services.sessions.store
        real_update = store.update
        loaded = asyncio.Event()

        async def update_after_an_outage(*args, **kwargs):
            loaded.set()  # the request loaded its session and changed it...
            proxy.cut()  # ...and its commit meets a store that is down
            return await real_update(*args, **kwargs)

        monkeypatch.setattr(store, "update", update_after_an_outage)
        caplog.clear()
        response = await client.post("/cart", {"cart": ["book", "lamp"]})
        assert loaded.is_set()
        assert response.code == 503
        assert body(response) == {"error": "Session store unavailable"}
        assert "Set-Cookie" not in response.headers
        tracebacks = [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text]
        assert tracebacks == []  # a store that is down is logged as a warning, not a crash

        monkeypatch.setattr(store, "update", real_update)
        proxy.end()
        cart = await client.get("/cart")  # still signed in, the cart as last committed
        assert cart.code == 200 and body(cart) == {"cart": ["book"]}
        assert body(await other.get("/cart")) == {"cart": ["pen"]}  # another session untouched
        assert (await client.post("/cart", {"cart": ["book", "lamp"]})).code == 200
        assert body(await client.get("/cart")) == {"cart": ["book", "lamp"]}
        assert body(await other.get("/cart")) == {"cart": ["pen"]}
