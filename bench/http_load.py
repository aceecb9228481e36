"""The HTTP server under load: session overhead, sign-in throughput, a sign-in storm, idle sockets.

    .venv/bin/python -m bench.http_load [--duration 10] [--pairs 15] [--pair-duration 2]
        [--sockets 10000] [--json F]

Starts one ``tornado-auth serve`` process (Redis sessions under a unique key prefix, users in a
unique MongoDB database, bcrypt cost 12, no access log) and drives it with ``wrk`` on loopback:

a. ``GET /api/dashboard`` with a session cookie vs ``GET /healthz`` at 1, 10, 50 (and 200)
   connections, as 15 back-to-back pairs of 2 s runs per level, pooled;
b. ``POST /api/login`` in a loop, against the bcrypt limit: cores / (one cost-12 check);
c. dashboard latency at 10 connections with and without a 50-connection sign-in storm, three
   times (the run with the median p99 ratio is reported);
d. server memory (VmRSS) per idle, authenticated ``/ws/dashboard`` WebSocket.

Each measurement waits for a quiet machine and is repeated once when other processes took CPU
meanwhile; the CPU accounting of the run kept is part of the results.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import secrets
import shlex
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import bcrypt
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.web import create_signed_value
from tornado.websocket import WebSocketClientConnection, websocket_connect

from bench._common import (
    OUT,
    REPO,
    USER_AGENT,
    CpuMeter,
    Server,
    drop_database,
    login_session,
    measured,
    raise_fd_limit,
    remove_prefix,
    run_cli,
    serve,
    server_env,
    tag,
    write_json,
)
from tornado_auth import load_settings, start_services

LUA = REPO / "bench" / "wrk_report.lua"
EMAIL = "bench@example.com"
CONCURRENCY = (1, 10, 50, 200)  # 200 is beyond the brief: it shows what happens past 100
STORM_CONNECTIONS = 50
STORM_DASHBOARD_CONNECTIONS = 10
# Handshakes in flight while opening sockets: below redis-py's default pool of 100 connections,
# past which the server answers 503 (see RESULTS.md).
HANDSHAKES_IN_FLIGHT = 50
BCRYPT_ROUNDS = 12


async def wrk(
    url: str,
    connections: int,
    seconds: float,
    cookie: str | None = None,
    body: dict[str, Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """One wrk run; its counts, latency percentiles (ms), requests/s and the command line."""
    threads = threads or min(2, connections)
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    args += ["--timeout", "30s", "-s", str(LUA.relative_to(REPO))]
    args += ["-H", f"User-Agent: {USER_AGENT}"]
    if cookie:
        args += ["-H", f"Cookie: {cookie}"]
    args.append(url)
    env = dict(os.environ, WRK_BODY=json.dumps(body) if body else "")
    process = await asyncio.create_subprocess_exec(
        *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("WRK_JSON ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()}{out.decode()}")
    result = json.loads(lines[-1].removeprefix("WRK_JSON "))
    latency = result.pop("latency_us")
    result["latency_ms"] = {name: value / 1000 for name, value in latency.items()}
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["non_2xx"] = result["errors"]["status"]
    result["command"] = shown_command(args, body)
    return result


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several wrk runs of one endpoint as one: requests over time, the median of each latency
    percentile, every non-2xx, and the server CPU per request over all of them."""
    seconds = sum(run["duration_us"] for run in runs) / 1e6
    requests = sum(run["requests"] for run in runs)
    server_cpu = sum(run["cpu"]["server_cores"] * run["duration_us"] / 1e6 for run in runs)
    return {
        "runs": len(runs),
        "requests": requests,
        "duration_us": seconds * 1e6,
        "rps": requests / seconds,
        "latency_ms": {
            name: statistics.median(run["latency_ms"][name] for run in runs)
            for name in runs[0]["latency_ms"]
        },
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "cpu": {
            "server_cores": round(server_cpu / seconds, 2),
            "foreign_cores": max(run["cpu"]["foreign_cores"] for run in runs),
        },
        "server_cpu_us_per_request": 1e6 * server_cpu / requests,
        "command": runs[0]["command"],
    }


def shown_command(args: list[str], body: dict[str, Any] | None) -> str:
    """The wrk command line with the session cookie, the password and the User-Agent elided."""
    shown = []
    for arg in args:
        if arg.startswith("Cookie: "):
            arg = "Cookie: session=<cookie from POST /api/login>"
        shown.append(shlex.quote(arg.replace(USER_AGENT, "$CHROME_UA")).replace("'", '"'))
    prefix = ""
    if body:
        prefix = "WRK_BODY=" + shlex.quote(json.dumps(body | {"password": "<password>"})) + " "
    return prefix + " ".join(shown)


def brief(label: str, result: dict[str, Any]) -> None:
    latency = result["latency_ms"]
    print(
        f"  {label:30} {result['rps']:9.1f} req/s  p50 {latency['p50']:8.2f} ms  "
        f"p99 {latency['p99']:8.2f} ms  non-2xx {result['non_2xx']}",
        flush=True,
    )


def bcrypt_checks(rounds: int, count: int, threads: int) -> list[float]:
    """Wall times of ``count`` cost-``rounds`` checks on ``threads`` threads, as the server
    makes them (bcrypt releases the GIL); the last item is the elapsed time of all of them."""
    secret = secrets.token_hex(22).encode()  # 44 bytes, like the SHA-256 pre-hash
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds))

    def check(_: int) -> float:
        start = time.perf_counter()
        assert bcrypt.checkpw(secret, hashed)
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        durations = list(pool.map(check, range(count)))
    return [*durations, time.perf_counter() - start]


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_summary(log: Path) -> dict[str, int]:
    """How often each distinct warning or error appears in the server's log (numbers as N)."""
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = re.match(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (.*)$", line)
        if match:
            message = re.sub(r"\d+", "N", f"{match.group(1)} {match.group(2)}")[:160]
            counts[message] = counts.get(message, 0) + 1
    return counts


class Bench:
    def __init__(self, server: Server, password: str, args: argparse.Namespace) -> None:
        self.server = server
        self.password = password
        self.args = args
        self.meter = CpuMeter(server.process.pid)
        self.cookie = ""

    @property
    def login_body(self) -> dict[str, str]:
        return {"email": EMAIL, "password": self.password}

    async def log_in(self) -> None:
        """Sign in over HTTP and keep the session cookie (checked on /api/dashboard)."""
        client = AsyncHTTPClient()
        response = await client.fetch(
            f"{self.server.base_url}/api/login",
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            body=json.dumps(self.login_body),
        )
        for header in response.headers.get_list("Set-Cookie"):
            cookie = SimpleCookie(header)
            if "session" in cookie:
                self.cookie = f"session={cookie['session'].coded_value}"
        response = await client.fetch(
            f"{self.server.base_url}/api/dashboard", headers={"Cookie": self.cookie}
        )
        assert json.loads(response.body)["email"] == EMAIL, response.body

    async def bcrypt_limit(self) -> dict[str, Any]:
        """One check at a time (the brief's limit: cores / one check), and all cores at once."""
        cores = os.cpu_count() or 1

        async def run() -> tuple[list[float], list[float]]:
            single = await asyncio.to_thread(bcrypt_checks, BCRYPT_ROUNDS, 7, 1)
            parallel = await asyncio.to_thread(bcrypt_checks, BCRYPT_ROUNDS, 4 * cores, cores)
            return single, parallel

        (single, parallel), cpu = await measured(run, self.meter)
        check = statistics.median(single[:-1])
        result = {
            "rounds": BCRYPT_ROUNDS,
            "cores": cores,
            "check_seconds": single[:-1],
            "median_check_seconds": check,
            "limit_per_s": cores / check,
            "parallel_checks_per_s": 4 * cores / parallel[-1],
            "cpu": cpu,
        }
        print(
            f"  bcrypt cost {BCRYPT_ROUNDS}: {1000 * check:.0f} ms a check; limit "
            f"{result['limit_per_s']:.2f}/s; {cores} threads at once: "
            f"{result['parallel_checks_per_s']:.2f}/s",
            flush=True,
        )
        return result

    async def load(self, label: str, path: str, connections: int, **options: Any) -> dict:
        """One wrk run against ``path``, printed as it ends."""
        result = await wrk(self.server.base_url + path, connections, **options)
        brief(label, result)
        return result

    async def overhead(self) -> list[dict[str, Any]]:
        """(a) GET /api/dashboard with a session vs GET /healthz, same headers, same server.

        Each concurrency is measured as one block of ``--pairs`` back-to-back pairs of short
        runs, alternating which endpoint goes first, so that the machine's slow and fast moments
        fall on both endpoints alike. The ratio is the dashboard's requests over healthz's in
        the whole block; every pair's own ratio is kept too.
        """
        endpoints = (("healthz", "/healthz"), ("dashboard", "/api/dashboard"))
        rows = []
        for connections in CONCURRENCY:

            async def block(connections: int = connections) -> list[dict[str, Any]]:
                pairs = []
                for index in range(self.args.pairs):
                    pair: dict[str, Any] = {}
                    for name, path in endpoints if index % 2 == 0 else endpoints[::-1]:
                        start = self.meter.sample()
                        result = await wrk(
                            self.server.base_url + path, connections,
                            self.args.pair_duration, cookie=self.cookie,
                        )  # fmt: skip
                        result["cpu"] = self.meter.usage(start)
                        pair[name] = result
                    pairs.append(pair)
                return pairs

            pairs, cpu = await measured(block, self.meter)
            row: dict[str, Any] = {"concurrency": connections, "block_cpu": cpu}
            for name, _ in endpoints:
                row[name] = pooled([pair[name] for pair in pairs])
                brief(f"{name} c={connections}", row[name])
            row["ratio"] = row["dashboard"]["rps"] / row["healthz"]["rps"]
            row["ratios"] = sorted(
                pair["dashboard"]["rps"] / pair["healthz"]["rps"] for pair in pairs
            )
            print(f"  ratio c={connections}: {row['ratio']:.3f} (pairs {row['ratios']})")
            rows.append(row)
        return rows

    async def login_rate(self, bcrypt_limit: dict[str, Any]) -> dict[str, Any]:
        """(b) POST /api/login in a loop on a few connections: enough to keep bcrypt busy."""
        connections = self.args.login_clients
        run = functools.partial(
            self.load, f"login c={connections}", "/api/login", connections,
            seconds=self.args.login_duration, body=self.login_body,
        )  # fmt: skip
        result, cpu = await measured(run, self.meter)
        return {
            "connections": connections,
            "result": result,
            "cpu": cpu,
            "fraction_of_limit": result["rps"] / bcrypt_limit["limit_per_s"],
            "fraction_of_parallel": result["rps"] / bcrypt_limit["parallel_checks_per_s"],
        }

    async def storm(self) -> dict[str, Any]:
        """(c) Dashboard alone, then during a sign-in storm that covers the whole run."""
        connections, seconds = STORM_DASHBOARD_CONNECTIONS, self.args.duration
        dashboard = functools.partial(
            self.load, path="/api/dashboard", connections=connections, seconds=seconds,
            cookie=self.cookie, threads=1,
        )  # fmt: skip

        async def during() -> dict[str, Any]:
            logins = asyncio.create_task(
                self.load(
                    f"login storm c={STORM_CONNECTIONS}", "/api/login", STORM_CONNECTIONS,
                    seconds=seconds + 4, body=self.login_body, threads=1,
                )
            )  # fmt: skip
            result = await dashboard(f"dashboard c={connections}, in storm")
            result["storm"] = await logins
            return result

        alone = functools.partial(dashboard, f"dashboard c={connections}, no storm")
        runs = []
        for _ in range(self.args.storm_runs):
            quiet, quiet_cpu = await measured(alone, self.meter)
            stormy, stormy_cpu = await measured(during, self.meter)
            after = await self.after_storm()
            runs.append(
                {
                    "alone": quiet | {"cpu": quiet_cpu},
                    "during": stormy | {"cpu": stormy_cpu},
                    "after": after,
                    "p99_ratio": stormy["latency_ms"]["p99"] / quiet["latency_ms"]["p99"],
                    "p50_ratio": stormy["latency_ms"]["p50"] / quiet["latency_ms"]["p50"],
                }
            )
        runs.sort(key=lambda run: run["p99_ratio"])
        median = runs[len(runs) // 2]
        print(f"  p99 ratio: median {median['p99_ratio']:.2f} of {[r['p99_ratio'] for r in runs]}")
        return median | {
            "dashboard_connections": connections,
            "storm_connections": STORM_CONNECTIONS,
            "p99_ratios": [run["p99_ratio"] for run in runs],
        }

    async def after_storm(self) -> dict[str, float]:
        """wrk has closed its connections, each with a sign-in in flight: does the server stop?"""
        began, start = time.monotonic(), self.meter.sample()
        await self.meter.wait_quiet()
        seconds = time.monotonic() - began
        after = {"seconds_until_idle": seconds}
        after["server_cpu_seconds"] = self.meter.usage(start)["server_cores"] * seconds
        print(
            f"  after the storm: server busy {seconds:.0f} s more, "
            f"{after['server_cpu_seconds']:.1f} CPU-seconds",
            flush=True,
        )
        return after

    async def signed_cookies(self, count: int) -> list[str]:
        """``count`` sign-ins of distinct users straight into the server's store (through the
        services of an app with the server's settings), as cookies."""
        services = await start_services(load_settings(environ=self.server.env))
        cookies = []
        try:
            for number in range(count):
                change = await services.sessions.commit(login_session(number))
                assert change is not None and change.token is not None
                value = create_signed_value(services.cookie_secret, "session", change.token)
                cookies.append(f'session="{value.decode()}"')
        finally:
            await services.close()
        return cookies

    async def open_socket(self, cookie: str, limit: asyncio.Semaphore) -> WebSocketClientConnection:
        """One authenticated /ws/dashboard socket, open once the server's hello has arrived."""
        request = HTTPRequest(
            f"ws://127.0.0.1:{self.server.port}/ws/dashboard",
            headers={"Cookie": cookie, "Origin": self.server.base_url, "User-Agent": USER_AGENT},
            connect_timeout=30,
            request_timeout=30,
        )
        async with limit:
            connection = await websocket_connect(request)
            hello = await connection.read_message()
        if hello is None or json.loads(hello).get("type") != "hello":
            raise RuntimeError(f"no hello on /ws/dashboard: {hello!r}")
        return connection

    async def websockets(self, count: int) -> dict[str, Any]:
        """(d) Server VmRSS before and after ``count`` idle authenticated sockets."""
        cookies = await self.signed_cookies(count)
        waited = await self.meter.wait_quiet()  # sign-ins abandoned by the storm may still run
        pid = self.server.process.pid
        files_before, rss_before = open_files(pid), self.server.rss
        limit = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
        start = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self.open_socket(cookie, limit) for cookie in cookies), return_exceptions=True
        )
        opened_in = time.perf_counter() - start
        files_after, rss_after = open_files(pid), self.server.rss
        sockets = [s for s in outcomes if isinstance(s, WebSocketClientConnection)]
        failures = [repr(error) for error in outcomes if isinstance(error, BaseException)]
        for socket in sockets:
            socket.close()
        result = {
            "sockets": count,
            "opened": len(sockets),
            "failures": len(failures),
            "first_failure": failures[0] if failures else None,
            "handshakes_in_flight": HANDSHAKES_IN_FLIGHT,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "bytes_per_socket": (rss_after - rss_before) / max(1, len(sockets)),
            "server_open_files_before": files_before,
            "server_open_files_after": files_after,
            "open_seconds": opened_in,
            "waited_for_quiet_s": waited,
        }
        print(
            f"  {len(sockets)} of {count} sockets open ({len(failures)} failed): VmRSS "
            f"{rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB, "
            f"{result['bytes_per_socket']:.0f} B/socket, opened in {opened_in:.1f} s",
            flush=True,
        )
        return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    fd_limit = raise_fd_limit()
    run = tag()
    prefix, database = f"bench:{run}:", f"ta_bench_{run}"
    env = server_env(prefix, database)
    password = secrets.token_urlsafe(16)
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"server-{run}.log"
    settings = {k: v for k, v in env.items() if k.startswith("TORNADO_AUTH_") and "SECRET" not in k}
    results: dict[str, Any] = {
        "params": vars(args) | {"json": str(args.json), "fd_limit": fd_limit},
        "server": {
            "command": "python -m tornado_auth serve --host 127.0.0.1 --port 0 --processes 1",
            "settings": settings,
            "log": str(log.relative_to(REPO)),
        },
    }
    try:
        await run_cli(
            env, "create-user", "--email", EMAIL, "--name", "Bench", "--password-stdin",
            stdin=password + "\n",
        )  # fmt: skip
        async with serve(env, log) as server:
            bench = Bench(server, password, args)
            results["server"]["rss_start"] = server.rss
            await bench.log_in()
            print("bcrypt limit", flush=True)
            results["bcrypt"] = await bench.bcrypt_limit()
            print("(a) session overhead", flush=True)
            results["overhead"] = await bench.overhead()
            print("(b) sign-in throughput", flush=True)
            results["login"] = await bench.login_rate(results["bcrypt"])
            print("(c) sign-in storm", flush=True)
            results["storm"] = await bench.storm()
            storm = results["storm"]["during"]["storm"]
            results["storm"]["storm_fraction_of_limit"] = (
                storm["rps"] / results["bcrypt"]["limit_per_s"]
            )
            if args.sockets:
                print("(d) idle WebSockets", flush=True)
                results["websockets"] = await bench.websockets(args.sockets)
            results["server"]["rss_end"] = server.rss
        results["server"]["log_counts"] = log_summary(log)
    finally:
        results["cleanup"] = {"redis_keys_removed": await remove_prefix(prefix)}
        await drop_database(database)
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run of (c)")
    parser.add_argument("--pairs", type=int, default=15, help="healthz/dashboard pairs of (a)")
    parser.add_argument("--storm-runs", type=int, default=3, help="alone/storm pairs of (c)")
    parser.add_argument("--pair-duration", type=float, default=2, help="seconds per run of (a)")
    parser.add_argument("--login-duration", type=float, default=15, help="seconds of (b)")
    parser.add_argument("--login-clients", type=int, default=4, help="connections of (b)")
    parser.add_argument("--sockets", type=int, default=10_000, help="WebSockets of (d); 0 skips")
    parser.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    write_json(arguments.json, asyncio.run(main(arguments)))
