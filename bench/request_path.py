"""The request path in-process: what a session costs a request, without the network.

    .venv/bin/python -m bench.request_path [--requests 20000] [--rounds 5] [--json F]

``make_app`` as ``serve`` builds it (Redis sessions, the per-process cache) is handed requests
with wrk's headers directly (no socket, no HTTP parsing): /healthz and /api/dashboard alternate,
min and median µs per request; then the session's steps, each timed alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from tornado import httputil

from bench import _common as common
from tornado_auth import SessionUser, make_app

to_json = json.JSONEncoder(separators=(",", ":")).encode  # the app's compact JSON


class _Connection:
    """Just enough of an HTTP connection for a handler: the response is dropped, its end noted."""

    class context:  # tornado's attribute name
        remote_ip, protocol, address = "127.0.0.1", "http", ("127.0.0.1", 40000)

    def __init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()

    def set_close_callback(self, callback: Any) -> None:
        pass

    def write_headers(self, start_line: Any, headers: Any, chunk: bytes | None = None) -> Any:
        return self._written()

    def write(self, chunk: bytes) -> Any:
        return self._written()

    def finish(self) -> None:
        self.done.set_result(None)

    @staticmethod
    def _written() -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def best_ns(call: Callable[[], Awaitable[Any]], number: int = 20_000) -> float:
    """Nanoseconds per awaited call, the best of 5 runs."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(number):
            await call()
        runs.append(time.perf_counter() - start)
    return 1e9 * min(runs) / number


async def main(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    prefix = f"bench:{common.tag()}:"
    services = await common.app_services(common.REDIS_URL, prefix, tmp)
    redis = aioredis.from_url(common.REDIS_URL)
    try:
        app = make_app(services)
        token, cookie = await common.signed_in(services, 0)
        headers = httputil.HTTPHeaders(
            {"Host": "127.0.0.1:8888", "User-Agent": common.USER_AGENT, "Accept": "*/*",
             "Cookie": cookie}
        )  # fmt: skip

        async def request(path: str) -> int:
            connection = _Connection()
            start_line = httputil.RequestStartLine("GET", path, "HTTP/1.1")
            delegate = app.find_handler(
                httputil.HTTPServerRequest(
                    start_line=start_line,
                    headers=headers,
                    connection=connection,  # type: ignore[arg-type]
                )
            )
            delegate.execute()
            await connection.done
            return delegate.handler.get_status()

        paths = {"healthz": "/healthz", "dashboard": "/api/dashboard"}
        for path in paths.values():
            assert await request(path) == 200, path

        async def redis_commands() -> int:
            return int((await redis.info("stats"))["total_commands_processed"])

        # The cache serves sessions once the store's events are live: wait until 100 dashboard
        # requests send Redis no command (the count includes our INFO and the events' pings).
        async with asyncio.timeout(10):
            while True:
                before = await redis_commands()
                for _ in range(100):
                    await request("/api/dashboard")
                if await redis_commands() - before < 10:
                    break
                await asyncio.sleep(0.01)
        for _ in range(args.requests // 10):
            for path in paths.values():
                await request(path)
        timings: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, path in paths.items():
                began = time.perf_counter()
                for _ in range(args.requests):
                    await request(path)
                timings[name].append(1e6 * (time.perf_counter() - began) / args.requests)
        endpoints = {
            name: {"min_us": min(values), "median_us": statistics.median(values)}
            for name, values in timings.items()
        }
        session = await services.sessions.load(token)
        assert session is not None and session.user_id is not None
        user_id = session.user_id
        payload = {"message": "Welcome to dashboard", "userId": session.user_id, "email": "e"}

        async def user() -> SessionUser:
            return SessionUser(user_id, session.get("email", ""), session.get("role", ""))

        async def dashboard_json() -> str:
            return to_json(payload)

        steps = {  # each alone, ns per call; the cookie's signature is Tornado's
            "session from the cache (load)": await best_ns(lambda: services.sessions.load(token)),
            "the signed-in user": await best_ns(user),
            "commit with nothing to write": await best_ns(
                lambda: services.sessions.commit(session)
            ),
            "dashboard JSON": await best_ns(dashboard_json),
        }
    finally:
        await redis.aclose()
        await services.close()
        await common.clean_up(prefix, [])
    result = {
        "command": common.command_line(),
        "endpoints": endpoints,
        "session_us": endpoints["dashboard"]["min_us"] - endpoints["healthz"]["min_us"],
        "steps_ns": steps,
    }
    for name, row in endpoints.items():
        print(f"  {name:10} min {row['min_us']:6.2f} us  median {row['median_us']:6.2f} us")
    print(f"  the session's cost: {result['session_us']:.2f} us a request")
    for label, ns in steps.items():
        print(f"    {label:32} {ns:6.0f} ns")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per endpoint")
    parser.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as directory:
        common.write_json(arguments.json, asyncio.run(main(arguments, directory)))
