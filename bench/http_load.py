"""One ``tornado-auth serve`` process (Redis sessions, MongoDB users, bcrypt cost 12) under wrk.

    .venv/bin/python -m bench.http_load [--pairs 15] [--sockets 10000] [--json F]

(a) dashboard vs /healthz req/s at 1, 10, 50 connections, alternating 2 s runs, pooled; (b)
sign-ins/s vs the bcrypt limit (cores / one check); (c) dashboard p99 during a sign-in storm vs
alone; (d) server memory per idle authenticated WebSocket. Each starts once the machine settled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shlex
import statistics
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import bcrypt
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from bench import _common as common
from tornado_auth import load_settings, start_services

LUA = "bench/wrk_report.lua"  # a JSON body from WRK_BODY; one JSON line of figures at the end
EMAIL = "bench@example.com"
LEVELS = (1, 10, 50)
HANDSHAKES_IN_FLIGHT = 50  # below redis-py's pool of 100 connections


async def wrk(url: str, connections: int, seconds: float, cookie: str = "", threads: int = 2,
              body: dict[str, str] | None = None, label: str = "") -> dict[str, Any]:  # fmt: skip
    """One wrk run (printed when labelled): req/s, latency (ms), non-2xx, the command line."""
    args = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds:g}s"]
    args += ["--latency", "--timeout", "30s", "-s", LUA, "-H", f"User-Agent: {common.USER_AGENT}"]
    args += ["-H", f"Cookie: {cookie}", url] if cookie else [url]
    env = dict(os.environ, WRK_BODY=json.dumps(body) if body else "")
    process = await asyncio.create_subprocess_exec(
        *args, cwd=common.REPO, env=env, stdout=PIPE, stderr=PIPE
    )  # fmt: skip
    out, err = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("WRK_JSON ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()}{out.decode()}")
    figures = json.loads(lines[-1].removeprefix("WRK_JSON "))
    shown = shlex.join(args).replace(common.USER_AGENT, "$CHROME_UA")
    shown = shown.replace(cookie or "\0", "session=<cookie>")
    if body:
        shown = f"WRK_BODY='{json.dumps(body | {'password': '<password>'})}' {shown}"
    latency = {name: us / 1000 for name, us in figures["latency_us"].items()}
    result = {
        "rps": figures["requests"] / (figures["duration_us"] / 1e6),
        "requests": figures["requests"], "seconds": figures["duration_us"] / 1e6,
        "latency_ms": latency, "non_2xx": figures["errors"]["status"], "command": shown,
    }  # fmt: skip
    if label:
        print(f"  {label:26} {result['rps']:9.1f} req/s  p50 {latency['p50']:7.2f} ms  p99 "
              f"{latency['p99']:7.2f} ms  non-2xx {result['non_2xx']}", flush=True)  # fmt: skip
    return result


def bcrypt_limit() -> dict[str, Any]:
    """One cost-12 check at a time (median of 7), as the server makes them; cores / check."""
    secret = secrets.token_hex(22).encode()  # 44 bytes, like the SHA-256 pre-hash
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(12))
    checks = []
    for _ in range(7):
        start = time.perf_counter()
        assert bcrypt.checkpw(secret, hashed)
        checks.append(time.perf_counter() - start)
    cores = os.cpu_count() or 1
    check = statistics.median(checks)
    return {"cores": cores, "check_s": check, "limit_per_s": cores / check}


class Bench:
    def __init__(self, server: common.Server, password: str, args: argparse.Namespace) -> None:
        self.server, self.args = server, args
        self.login = {"email": EMAIL, "password": password}
        self.cookie = ""
        self.pids = common.tested_pids(server.process.pid)

    async def sign_in(self) -> None:
        client = AsyncHTTPClient()
        response = await client.fetch(
            f"{self.server.base_url}/api/login", method="POST", body=json.dumps(self.login),
            headers={"Content-Type": "application/json", "User-Agent": common.USER_AGENT},
        )  # fmt: skip
        self.cookie = common.session_cookie(response)
        response = await client.fetch(
            f"{self.server.base_url}/api/dashboard", headers={"Cookie": self.cookie}
        )
        assert json.loads(response.body)["email"] == EMAIL, response.body

    async def measure(self, label: str, path: str, connections: int, seconds: float,
                      **options: Any) -> dict[str, Any]:  # fmt: skip
        waited = await common.settle()
        cpu = common.Cpu(self.pids)
        result = await wrk(
            self.server.base_url + path, connections, seconds, label=label, **options
        )
        return result | {"cpu": cpu.cores() | {"settled_s": waited}}

    async def overhead(self) -> list[dict[str, Any]]:
        """(a) Alternating short runs put the machine's slow and fast moments on both alike."""
        rows = []
        for connections in LEVELS:
            await common.settle()
            cpu = common.Cpu(self.pids)
            runs: dict[str, list[dict[str, Any]]] = {"healthz": [], "dashboard": []}
            for index in range(self.args.pairs):
                order = ["healthz", "dashboard"][:: 1 if index % 2 == 0 else -1]
                for name in order:
                    path = "/healthz" if name == "healthz" else "/api/dashboard"
                    url = self.server.base_url + path
                    runs[name].append(await wrk(url, connections, 2, cookie=self.cookie))
            row: dict[str, Any] = {"connections": connections, "cpu": cpu.cores()}
            for name, done in runs.items():
                row[name] = {
                    "rps": sum(r["requests"] for r in done) / sum(r["seconds"] for r in done),
                    "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in done),
                    "non_2xx": sum(r["non_2xx"] for r in done),
                    "command": done[0]["command"],
                }
            row["ratio"] = row["dashboard"]["rps"] / row["healthz"]["rps"]
            print(f"  c={connections}: ratio {row['ratio']:.3f}", flush=True)
            rows.append(row)
        return rows

    async def storm(self) -> dict[str, Any]:
        """(c) The dashboard alone, then while a sign-in storm covers the whole run."""
        seconds, runs = self.args.storm_duration, []
        for _ in range(self.args.storm_runs):
            alone = await self.measure("dashboard c=10, alone", "/api/dashboard", 10, seconds,
                                       cookie=self.cookie, threads=1)  # fmt: skip
            await common.settle()
            cpu = common.Cpu(self.pids)
            login = f"{self.server.base_url}/api/login"
            storm = asyncio.create_task(wrk(login, 50, seconds + 4, body=self.login, threads=1))
            during = await wrk(f"{self.server.base_url}/api/dashboard", 10, seconds, self.cookie,
                               threads=1, label="dashboard c=10, in storm")  # fmt: skip
            during |= {"cpu": cpu.cores(), "storm": await storm}
            ratio = during["latency_ms"]["p99"] / alone["latency_ms"]["p99"]
            runs.append({"p99_ratio": ratio, "alone": alone, "during": during})
        runs.sort(key=lambda run: run["p99_ratio"])
        return runs[len(runs) // 2] | {"p99_ratios": [run["p99_ratio"] for run in runs]}

    async def websockets(self, count: int) -> dict[str, Any]:
        """(d) Server VmRSS before and after ``count`` idle authenticated sockets."""
        # sessions written straight into the server's store, through an app with its settings
        services = await start_services(load_settings(environ=self.server.env))
        try:
            cookies = [(await common.signed_in(services, n))[1] for n in range(count)]
        finally:
            await services.close()
        await common.settle()
        limit = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)

        async def open_socket(cookie: str) -> WebSocketClientConnection:
            request = HTTPRequest(
                f"ws://127.0.0.1:{self.server.port}/ws/dashboard", connect_timeout=30,
                request_timeout=30, headers={"Cookie": cookie, "Origin": self.server.base_url},
            )  # fmt: skip
            async with limit:
                socket = await websocket_connect(request)
                hello = await socket.read_message()
            assert hello is not None and json.loads(hello)["type"] == "hello", hello
            return socket

        before = self.server.rss()
        opened = await asyncio.gather(*map(open_socket, cookies), return_exceptions=True)
        after = self.server.rss()
        sockets = [s for s in opened if isinstance(s, WebSocketClientConnection)]
        failures = [repr(s) for s in opened if isinstance(s, BaseException)]
        for socket in sockets:
            socket.close()
        result = {
            "sockets": count, "opened": len(sockets), "failures": len(failures),
            "first_failure": failures[0] if failures else None,
            "rss_before": before, "rss_after": after,
            "bytes_per_socket": (after - before) / max(1, len(sockets)),
        }  # fmt: skip
        print(f"  {len(sockets)} sockets: {result['bytes_per_socket']:.0f} B each", flush=True)
        return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # (d): the server inherits it
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run = common.tag()
    prefix, database = f"bench:{run}:", f"ta_bench_{run}"
    env = common.server_env({
        "SESSIONS__URL": common.REDIS_URL,
        "SESSIONS__KEY_PREFIX": prefix,
        "USERS__URL": f"{common.MONGO_URL}/{database}",
        "USERS__BCRYPT_ROUNDS": "12",
        # (b) and (c) measure bcrypt, not the throttle: failures in flight count until they end
        "THROTTLE__ACCOUNT_IP_FAILURES": "1000000",
        "THROTTLE__IP_FAILURES": "1000000",
    })  # fmt: skip
    password = secrets.token_urlsafe(16)
    settings = {k: v for k, v in env.items() if k.startswith("TORNADO_AUTH_") and "SECRET" not in k}
    results: dict[str, Any] = {
        "command": common.command_line(),
        "server": "python -m tornado_auth serve --host 127.0.0.1 --port 0 --processes 1",
        "settings": settings,
    }
    try:
        await common.run_cli(env, "create-user", "--email", EMAIL, "--name", "Bench",
                      "--password-stdin", stdin=password + "\n")  # fmt: skip
        async with common.serve(env, common.OUT / f"server-{run}.log") as server:
            bench = Bench(server, password, args)
            await bench.sign_in()
            print("bcrypt limit", flush=True)
            results["bcrypt"] = bcrypt_limit()
            print("(a) dashboard vs healthz", flush=True)
            results["overhead"] = await bench.overhead()
            print("(b) sign-in throughput", flush=True)
            login = await bench.measure("login c=4", "/api/login", 4, args.login_duration,
                                        body=bench.login)  # fmt: skip
            results["login"] = login | {"of_limit": login["rps"] / results["bcrypt"]["limit_per_s"]}
            print("(c) sign-in storm", flush=True)
            results["storm"] = await bench.storm()
            if args.sockets:
                print("(d) idle WebSockets", flush=True)
                results["websockets"] = await bench.websockets(args.sockets)
    finally:
        await common.clean_up(prefix, [database])
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=15, help="healthz/dashboard pairs of (a)")
    parser.add_argument("--login-duration", type=float, default=15, help="seconds of (b)")
    parser.add_argument("--storm-duration", type=float, default=10, help="seconds of (c)")
    parser.add_argument("--storm-runs", type=int, default=3, help="alone/storm pairs of (c)")
    parser.add_argument("--sockets", type=int, default=10_000, help="WebSockets of (d); 0 skips")
    parser.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    arguments = parser.parse_args()
    common.write_json(arguments.json, asyncio.run(main(arguments)))
