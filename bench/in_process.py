"""In-process, no network: (a) the request path's session cost, (b) each session store's
operations, (c) Redis bytes per login session (see bench/README.md).

    .venv/bin/python -m bench.in_process [--quick] --json F
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from tornado import httputil

from bench import _common as common
from tornado_auth import Services, SessionUser, load_settings, make_app, start_services

# requests per round and rounds per endpoint of (a), calls per operation of (b), sign-ins of (c)
FULL = {"requests": 20_000, "rounds": 5, "ops": 2000, "sessions": 10_000}
QUICK = {"requests": 3000, "rounds": 3, "ops": 300, "sessions": 2000}
OPS = ("load", "touch", "save", "create", "load_full", "touch_full")
NO_CACHE = {"sessions.cache_size": 0, "sessions.touch_interval": 0}  # every touch writes
CONNECT_REDIS_BYTES = 280  # the reference: express-session + connect-redis, per login session
to_json = json.JSONEncoder(separators=(",", ":")).encode  # the app's compact JSON


class _Connection:
    """Just enough of an HTTP connection for a handler: the response is dropped, its end noted."""

    class context:  # tornado's attribute name
        remote_ip, protocol, address = "127.0.0.1", "http", ("127.0.0.1", 40000)

    def __init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.written = asyncio.get_running_loop().create_future()
        self.written.set_result(None)

    def set_close_callback(self, callback: Any) -> None:
        pass

    def write_headers(self, start_line: Any, headers: Any, chunk: bytes | None = None) -> Any:
        return self.written

    def write(self, chunk: bytes) -> Any:
        return self.written

    def finish(self) -> None:
        self.done.set_result(None)


async def ns_per_call(calls: Mapping[str, Callable[[], Awaitable[Any]]], number: int,
                      rounds: int = 5) -> dict[str, list[float]]:  # fmt: skip
    """Nanoseconds per awaited call of each, in ``rounds`` runs of ``number``, alternating."""
    runs: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(number):
                await call()
            runs[name].append(1e9 * (time.perf_counter() - start) / number)
    return runs


async def timed(op: Callable[[int], Awaitable[Any]], count: int) -> dict[str, float]:
    """p50, p99 and mean ms of ``count`` calls one at a time, after ``count // 10`` untimed."""
    for number in range(count // 10):
        await op(number)
    durations = []
    for number in range(count):
        start = time.perf_counter()
        await op(number)
        durations.append(1000 * (time.perf_counter() - start))
    durations.sort()
    p50, p99 = (durations[round(q * (count - 1))] for q in (0.5, 0.99))
    return {"n": count, "p50_ms": p50, "p99_ms": p99, "mean_ms": sum(durations) / count}


async def request_path(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    """(a) µs per request of each endpoint, and the session's steps in ns."""
    app = make_app(services)
    token, cookie = await common.signed_in(services, 0)
    headers = httputil.HTTPHeaders({"Host": "127.0.0.1:8888", "User-Agent": common.USER_AGENT,
                                    "Accept": "*/*", "Cookie": cookie})  # fmt: skip

    async def request(path: str) -> None:
        connection: Any = _Connection()
        start = httputil.RequestStartLine("GET", path, "HTTP/1.1")
        request = httputil.HTTPServerRequest(
            start_line=start, headers=headers, connection=connection
        )
        delegate = app.find_handler(request)
        delegate.execute()
        await connection.done
        assert delegate.handler.get_status() == 200, path

    # The cache serves sessions once the store's events are live: wait until 100 dashboard
    # requests send Redis no command (the count includes our INFO and the events' pings).
    async with aioredis.from_url(common.REDIS_URL) as redis, asyncio.timeout(10):
        while True:
            before = int((await redis.info("stats"))["total_commands_processed"])
            for _ in range(100):
                await request("/api/dashboard")
            if int((await redis.info("stats"))["total_commands_processed"]) - before < 10:
                break
    calls = {
        "healthz": functools.partial(request, "/healthz"),
        "dashboard": functools.partial(request, "/api/dashboard"),
    }
    await ns_per_call(calls, args.requests // 10, rounds=1)  # warm up
    runs = await ns_per_call(calls, args.requests, args.rounds)
    endpoints = {
        name: {"min_us": min(ns) / 1000, "median_us": statistics.median(ns) / 1000}
        for name, ns in runs.items()
    }
    session = await services.sessions.load(token)
    assert session is not None and session.user_id is not None
    user_id = session.user_id
    payload = {"message": "Welcome to dashboard", "userId": user_id, "email": "e"}

    async def user() -> SessionUser:
        return SessionUser(user_id, session.get("email", ""), session.get("role", ""))

    async def dashboard_json() -> str:
        return to_json(payload)

    steps = await ns_per_call({  # each alone; the cookie's signature is Tornado's
        "session from the cache (load)": lambda: services.sessions.load(token),
        "the signed-in user": user,
        "commit with nothing to write": lambda: services.sessions.commit(session),
        "dashboard JSON": dashboard_json,
    }, 20_000)  # fmt: skip
    session_us = endpoints["dashboard"]["min_us"] - endpoints["healthz"]["min_us"]
    print(f"  dashboard - healthz: {session_us:.2f} us a request", flush=True)
    steps_ns = {name: min(ns) for name, ns in steps.items()}
    return {"endpoints": endpoints, "session_us": session_us, "steps_ns": steps_ns}


async def store_ops(services: Services, count: int) -> dict[str, Any]:
    """(b) Each operation's latencies on one store."""
    sessions, (token, _) = services.sessions, await common.signed_in(services, 0)

    async def load(number: int) -> None:
        assert await sessions.load(token) is not None

    async def save(number: int, change: bool = True) -> None:
        session = await sessions.load(token)
        assert session is not None
        if change:
            session["counter"] = number
        await sessions.commit(session)

    async def touch(number: int) -> None:
        await save(number, change=False)

    async def create(number: int) -> None:
        await sessions.commit(common.login_session(number))

    ops = (load, touch, save, create, load, touch)
    return {name: await timed(op, count) for name, op in zip(OPS, ops, strict=True)}


async def redis_memory(services: Services, count: int) -> dict[str, Any]:
    """(c) Memory of ``count`` sign-ins of distinct users, created one at a time."""
    async with aioredis.from_url(common.REDIS_URL) as client:  # keys as bytes: names are binary
        await services.sessions.commit(common.login_session(-1))  # connections, scripts, live index
        before = int((await client.info("memory"))["used_memory"])
        for number in range(count):
            await services.sessions.commit(common.login_session(number))
        after = int((await client.info("memory"))["used_memory"])
        prefix = services.settings["sessions.key_prefix"]
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        usage = sum([await client.memory_usage(key, samples=0) or 0 for key in keys])
    return {
        "sessions": count,
        "info_bytes_per_session": (after - before) / count,
        "memory_usage_bytes_per_session": usage / (count + 1),  # the session, its indexes
        "reference_bytes": CONNECT_REDIS_BYTES,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    run = secrets.token_hex(4)  # in the keys and the database of this run
    prefix, database = f"bench:{run}:", f"ta_bench_{run}"
    results: dict[str, Any] = {"command": common.command_line(), "stores": {}, "cpu": {}}
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as tmp:

        async def step(name: str, url: str, overrides: dict[str, Any],
                       measure: Callable[[Services], Awaitable[Any]]) -> Any:  # fmt: skip
            """``measure`` on the services of an app, once the machine settled."""
            print(f"in_process: {name}", flush=True)
            settings = {"sessions.url": url, "sessions.key_prefix": f"{prefix}{name}:",
                        "users.url": f"sqlite:///{tmp}/users.db", "users.demo_users": False,
                        "secrets.secret_file": f"{tmp}/cookie_secret",
                        "logging.access_log": False} | overrides  # fmt: skip
            async with common.quiet() as results["cpu"][name]:
                services = await start_services(load_settings(environ={}, overrides=settings))
                try:
                    return await measure(services)
                finally:
                    await services.close()

        urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/sessions.db",
                "redis": common.REDIS_URL, "mongodb": f"{common.MONGO_URL}/{database}"}  # fmt: skip
        # the request path as served (the cache on); the stores with every touch written
        results |= await step("path", urls["redis"], {}, lambda s: request_path(s, args))
        for name, url in urls.items():
            results["stores"][name] = await step(
                name, url, NO_CACHE, lambda s: store_ops(s, args.ops)
            )
        measure = functools.partial(redis_memory, count=args.sessions)
        results["redis_memory"] = await step("redis_memory", urls["redis"], NO_CACHE, measure)
    return results


if __name__ == "__main__":
    common.cli(__doc__, main, FULL, QUICK)
