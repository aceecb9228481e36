"""The request path in-process: what a session costs a request, without the network.

    .venv/bin/python -m bench.request_path [--requests 20000] [--rounds 5] [--json F]

The app is built as ``serve`` builds it (Redis sessions, the in-process session cache), and
requests are handed to it directly: an ``HTTPServerRequest`` with the same headers wrk sends (a
session cookie and a Chrome User-Agent) and a connection object that only records the end of
the response. No socket, no HTTP parsing, no other process: what is left is routing, the
handler, the session and the response, so the figures barely move from run to run, unlike the
wrk figures of (a), which include the kernel and the HTTP layer and vary with the machine's
neighbours. ``GET /healthz`` and ``GET /api/dashboard`` alternate, ``--rounds`` times
``--requests`` each; the minimum and median microseconds per request of each are reported, and
their difference is the session's cost. Then the session's own steps, timed alone with timeit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import timeit
from pathlib import Path
from typing import Any

from tornado import httputil, web

from bench._common import REDIS_URL, USER_AGENT, login_session, remove_prefix, tag, write_json
from tornado_auth import SessionUser, load_settings, make_app, start_services

# the app's JSON encoding (compact separators), timed as a step of its own
to_json = json.JSONEncoder(separators=(",", ":")).encode


class _Context:
    remote_ip = "127.0.0.1"
    protocol = "http"
    address = ("127.0.0.1", 40000)


class _Connection:
    """Just enough of an HTTP connection for a handler: the response is dropped, its end noted."""

    context = _Context()

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


async def main(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench:{tag()}:"
    settings = load_settings(
        environ={},
        overrides={
            "sessions.url": REDIS_URL,
            "sessions.key_prefix": prefix,
            "users.url": f"sqlite:///{args.tmp}/users.db",
            "secrets.secret_file": f"{args.tmp}/cookie_secret",
            "logging.access_log": False,
            "users.demo_users": False,
        },
    )
    services = await start_services(settings)
    try:
        # The per-process cache serves only while events are live: wait for the subscription.
        await asyncio.wait_for(services.sessions.events.connected(), 10)
        app = make_app(services)
        session = login_session(0)
        change = await services.sessions.commit(session)
        name = app.settings["session_cookie"]
        value = web.create_signed_value(services.cookie_secret, name, change.token).decode()
        headers = {
            "Host": "127.0.0.1:8888",
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            "Cookie": f'{name}="{value}"',
        }

        async def request(path: str) -> int:
            connection = _Connection()
            start_line = httputil.RequestStartLine("GET", path, "HTTP/1.1")
            server_request = httputil.HTTPServerRequest(
                start_line=start_line,
                headers=httputil.HTTPHeaders(headers),
                connection=connection,
            )
            delegate = app.find_handler(server_request)
            delegate.execute()
            await connection.done
            return delegate.handler.get_status()

        paths = {"healthz": "/healthz", "dashboard": "/api/dashboard"}
        for path in paths.values():
            status = await request(path)
            assert status == 200, f"{path} answered {status}"
        # the cache serves a session once the store's events are live: until then, ask again
        async with asyncio.timeout(10):
            while services.sessions.cached(change.token, session.key) is None:
                await request("/api/dashboard")
                await asyncio.sleep(0.01)
        for _ in range(args.requests // 10):  # warm-up: caches filled, code paths hot
            for path in paths.values():
                await request(path)
        timings: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for endpoint, path in paths.items():
                began = time.perf_counter()
                for _ in range(args.requests):
                    await request(path)
                timings[endpoint].append(1e6 * (time.perf_counter() - began) / args.requests)
        result: dict[str, Any] = {
            "params": {"requests": args.requests, "rounds": args.rounds},
            "endpoints": {
                endpoint: {"min_us": min(values), "median_us": statistics.median(values)}
                for endpoint, values in timings.items()
            },
        }
        result["session_us"] = (
            result["endpoints"]["dashboard"]["min_us"] - result["endpoints"]["healthz"]["min_us"]
        )
        result["steps_ns"] = steps(app, services, headers["Cookie"])
        return result
    finally:
        await services.close()
        await remove_prefix(prefix)


def steps(app: web.Application, services: Any, cookie_header: str) -> dict[str, float]:
    """The session's steps on a request, each timed alone (best of 5 runs, ns per call)."""
    cookies, sessions = app.settings["signed_cookies"], services.sessions
    cookie = cookies.from_header(cookie_header)
    session = sessions.cached(cookie.token, cookie.key)
    assert session is not None, "the session is not in the cache"
    payload = {"message": "Welcome to dashboard", "userId": session.user_id, "email": "e"}
    work = {
        "verified cookie from the Cookie header": lambda: cookies.from_header(cookie_header),
        "session from the cache": lambda: sessions.cached(cookie.token, cookie.key),
        "the signed-in user": lambda: SessionUser(
            session.user_id, session.get("email", ""), session.get("role", "user")
        ),
        "commit needed? (no)": lambda: sessions.plan(session),
        "dashboard JSON": lambda: to_json(payload),
        "healthz JSON": lambda: to_json({"status": "ok"}),
    }
    number = 100_000
    return {
        label: 1e9 * min(timeit.repeat(call, number=number, repeat=5)) / number
        for label, call in work.items()
    }


def report(result: dict[str, Any]) -> None:
    for endpoint, row in result["endpoints"].items():
        print(f"  {endpoint:10} min {row['min_us']:6.2f} us  median {row['median_us']:6.2f} us")
    print(f"  the session's cost: {result['session_us']:.2f} us a request")
    for label, ns in result["steps_ns"].items():
        print(f"    {label:42} {ns:6.0f} ns")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per endpoint")
    parser.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    return parser.parse_args()


if __name__ == "__main__":
    import tempfile

    arguments = parse_args()
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as directory:
        arguments.tmp = directory
        outcome = asyncio.run(main(arguments))
    report(outcome)
    write_json(arguments.json, outcome)
