"""One ``tornado-auth serve`` process (Redis sessions, MongoDB users, bcrypt cost 12) under wrk:
(a) dashboard vs /healthz, (b) sign-ins vs the bcrypt limit, (c) dashboard p99 in a sign-in
storm, (d) memory per idle WebSocket (see bench/README.md).

    .venv/bin/python -m bench.http_load [--quick] --json F
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
import timeit
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
# (c) reads the dashboard as another user: the storm's sign-ins end the oldest sessions of theirs
# (sessions.max_per_user), which would otherwise soon include the one the dashboard is read with
VIEWER = "viewer@example.com"
# healthz/dashboard pairs of (a), seconds of (b) and (c), alone/storm pairs of (c), sockets of (d)
FULL = {"pairs": 15, "login_s": 15, "storm_s": 10, "storm_runs": 3, "sockets": 10_000}
QUICK = {"pairs": 2, "login_s": 5, "storm_s": 3, "storm_runs": 1, "sockets": 1000}


async def wrk(url: str, connections: int, seconds: float, cookie: str = "", threads: int = 2,
              body: dict[str, str] | None = None, cookies: str = "",
              one_pass: bool = False) -> dict[str, Any]:  # fmt: skip
    """One wrk run: req/s, latency (ms), non-2xx responses, the command line. ``cookies``: a
    file of Cookie headers, one per line, rotated over by the requests; ``one_pass``: each of
    them once, in order (one thread), then stop (``seconds`` is then a limit)."""
    args = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds:g}s"]
    args += ["--latency", "--timeout", "30s", "-s", LUA, "-H", f"User-Agent: {common.USER_AGENT}"]
    args += ["-H", f"Cookie: {cookie}", url] if cookie else [url]
    env = dict(os.environ, WRK_BODY=json.dumps(body) if body else "", WRK_COOKIES=cookies,
               WRK_PASS="1" if one_pass else "")  # fmt: skip
    if one_pass:
        args[1] = "-t1"
    process = await asyncio.create_subprocess_exec(
        *args, cwd=common.REPO, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("WRK_JSON ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()}{out.decode()}")
    figures = json.loads(lines[-1].removeprefix("WRK_JSON "))
    shown = shlex.join(args).replace(common.USER_AGENT, "$CHROME_UA")
    shown = shown.replace(cookie or "\0", "session=<cookie>")
    if cookies:
        shown = f"WRK_COOKIES={cookies} {shown}"
    if body:
        shown = f"WRK_BODY='{json.dumps(body | {'password': '<password>'})}' {shown}"
    seconds = figures["duration_us"] / 1e6
    latency = {name: us / 1000 for name, us in figures["latency_us"].items()}
    return {"rps": figures["requests"] / seconds, "requests": figures["requests"],
            "seconds": seconds, "latency_ms": latency, "non_2xx": figures["errors"]["status"],
            "command": shown}  # fmt: skip


def bcrypt_limit() -> dict[str, Any]:
    """One cost-12 check at a time (median of 7), as the server makes them; cores / check."""
    secret = secrets.token_hex(22).encode()  # 44 bytes, like the SHA-256 pre-hash
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(12))
    checks = [timeit.timeit(lambda: bcrypt.checkpw(secret, hashed), number=1) for _ in range(7)]
    cores, check = os.cpu_count() or 1, statistics.median(checks)
    return {"cores": cores, "check_s": check, "limit_per_s": cores / check}


def rss(pid: int) -> int:
    """A process's resident memory in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return 1024 * int(status.split("VmRSS:")[1].split()[0])  # kB


class Bench:
    def __init__(self, server: common.Server, password: str, args: argparse.Namespace) -> None:
        self.server, self.args, self.url = server, args, server.url
        self.login = {"email": EMAIL, "password": password}
        self.cookie = ""

    async def sign_in(self, email: str = EMAIL) -> str:
        """A session of ``email`` (the password is the same for both users); its cookie."""
        client = AsyncHTTPClient()
        response = await client.fetch(
            f"{self.url}/api/login", method="POST",
            body=json.dumps(self.login | {"email": email}),
            headers={"Content-Type": "application/json", "User-Agent": common.USER_AGENT},
        )  # fmt: skip
        cookie = common.session_cookie(response)
        response = await client.fetch(f"{self.url}/api/dashboard", headers={"Cookie": cookie})
        assert json.loads(response.body)["email"] == email, response.body
        return cookie

    async def overhead(self) -> list[dict[str, Any]]:
        """(a) Alternating short runs put the machine's slow and fast moments on both alike."""
        rows = []
        for connections in (1, 10, 50):
            runs: dict[str, list[dict[str, Any]]] = {"/healthz": [], "/api/dashboard": []}
            async with common.quiet(self.server.process.pid) as cpu:
                for index in range(self.args.pairs):
                    for path in list(runs)[:: 1 if index % 2 == 0 else -1]:
                        runs[path].append(await wrk(self.url + path, connections, 2, self.cookie))
            row: dict[str, Any] = {"connections": connections, "cpu": cpu}
            for path, done in runs.items():
                row[path.rsplit("/", 1)[1]] = {
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
        seconds, runs = self.args.storm_s, []
        viewer = await self.sign_in(VIEWER)
        for _ in range(self.args.storm_runs):
            dashboard = f"{self.url}/api/dashboard"
            async with common.quiet(self.server.process.pid) as alone_cpu:
                alone = await wrk(dashboard, 10, seconds, viewer, threads=1)
            async with common.quiet(self.server.process.pid) as cpu:
                login = wrk(f"{self.url}/api/login", 50, seconds + 4, body=self.login, threads=1)
                storm = asyncio.create_task(login)
                during = await wrk(dashboard, 10, seconds, viewer, threads=1)
                during["storm"] = await storm
            for figures in (alone, during, during["storm"]):
                if figures["non_2xx"]:  # the figures of error answers would mean nothing
                    raise RuntimeError(f"(c): {figures['non_2xx']} answers not 2xx: {figures}")
            ratio = during["latency_ms"]["p99"] / alone["latency_ms"]["p99"]
            print(f"  p99 {during['latency_ms']['p99']:.2f} ms vs {alone['latency_ms']['p99']:.2f}")
            runs.append({"p99_ratio": ratio, "alone": alone | {"cpu": alone_cpu},
                         "during": during | {"cpu": cpu}})  # fmt: skip
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
        limit = asyncio.Semaphore(50)  # handshakes in flight: below redis-py's pool of 100

        async def open_socket(cookie: str) -> WebSocketClientConnection:
            request = HTTPRequest(
                self.url.replace("http", "ws", 1) + "/ws/dashboard", connect_timeout=30,
                request_timeout=30, headers={"Cookie": cookie, "Origin": self.url},
            )  # fmt: skip
            async with limit:
                socket = await websocket_connect(request)
                hello = await socket.read_message()
            assert hello is not None and json.loads(hello)["type"] == "hello", hello
            return socket

        async with common.quiet(self.server.process.pid) as cpu:
            before = rss(self.server.process.pid)
            opened = await asyncio.gather(*map(open_socket, cookies), return_exceptions=True)
            after = rss(self.server.process.pid)
        sockets = [s for s in opened if isinstance(s, WebSocketClientConnection)]
        failures = [repr(s) for s in opened if isinstance(s, BaseException)]
        for socket in sockets:
            socket.close()
        per_socket = (after - before) / max(1, len(sockets))
        print(f"  {len(sockets)} sockets: {per_socket:.0f} B each", flush=True)
        return {"sockets": count, "opened": len(sockets), "failures": len(failures),
                "first_failure": failures[0] if failures else None, "rss_before": before,
                "rss_after": after, "bytes_per_socket": per_socket, "cpu": cpu}  # fmt: skip


async def main(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # (d): the server inherits it
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run, password = secrets.token_hex(4), secrets.token_urlsafe(16)
    # (b) and (c) measure bcrypt, not the throttle: failures in flight count until they end
    env = common.server_env({"SESSIONS__URL": common.REDIS_URL, "USERS__BCRYPT_ROUNDS": "12",
                             "SESSIONS__KEY_PREFIX": f"bench:{run}:",
                             "USERS__URL": f"{common.MONGO_URL}/ta_bench_{run}",
                             "THROTTLE__IP_FAILURES": "1000000",
                             "THROTTLE__ACCOUNT_IP_FAILURES": "1000000"})  # fmt: skip
    settings = {k: v for k, v in env.items() if k.startswith("TORNADO_AUTH_") and "SECRET" not in k}
    results: dict[str, Any] = {"command": common.command_line(), "settings": settings}
    for email in (EMAIL, VIEWER):
        await common.run_cli(env, "create-user", "--email", email, "--name", "Bench",
                             "--password-stdin", stdin=password + "\n")  # fmt: skip
    async with common.serve(env, common.OUT / f"server-{run}.log") as server:
        bench = Bench(server, password, args)
        bench.cookie = await bench.sign_in()
        results["bcrypt"] = limit = bcrypt_limit()
        results["overhead"] = await bench.overhead()
        async with common.quiet(server.process.pid) as cpu:
            login = await wrk(f"{server.url}/api/login", 4, args.login_s, body=bench.login)
        of_limit = login["rps"] / limit["limit_per_s"]
        print(f"  {login['rps']:.2f}/s = {of_limit:.0%} of {limit['limit_per_s']:.2f}/s")
        results["login"] = login | {"cpu": cpu, "of_limit": of_limit}
        results["storm"] = await bench.storm()
        results["websockets"] = await bench.websockets(args.sockets)
    return results


if __name__ == "__main__":
    common.cli(__doc__, main, FULL, QUICK)
