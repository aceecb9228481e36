"""Our dashboard beside the Express guide's own stack (express-session + connect-redis + bcrypt,
``bench/peers/express``), one process each on the same Redis, under the same wrk load: with one
session, then with wrk rotating over many distinct signed-in sessions, as real traffic is; ours
with the session cache on (the defaults) and off. Rounds alternate the servers; medians.

    .venv/bin/python -m bench.peers [--quick] --json F
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from tornado.httpclient import AsyncHTTPClient

from bench import _common as common
from bench.http_load import wrk
from tools import services
from tornado_auth import load_settings, start_services

PEER = common.REPO / "bench" / "peers" / "express"
COOKIES = common.OUT / "peers"  # one Cookie header per line, for wrk_report.lua
EMAIL = "bench@example.com"
FULL = {"counts": [1, 2000, 20_000, 100_000], "rounds": 5, "seconds": 5, "connections": 32}
QUICK = {"counts": [1, 2000], "rounds": 1, "seconds": 2, "connections": 32}
SERVERS = ("express", "cache on", "cache off")
MADE_AT_ONCE = 200  # sessions committed concurrently while filling the store


def npm_install() -> str:
    """The peer's locked packages (``npm ci``) when missing; the versions that run."""
    if not (PEER / "node_modules").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("bench.peers: npm is missing (apt-get install nodejs npm)")
        command = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        subprocess.run(command, cwd=PEER, check=True)
    lock = json.loads((PEER / "package-lock.json").read_text())["packages"]
    names = ("express", "express-session", "connect-redis", "redis", "bcrypt")
    versions = [f"{name} {lock[f'node_modules/{name}']['version']}" for name in names]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return f"Node.js {node.stdout.strip()}, " + ", ".join(versions)


@contextlib.asynccontextmanager
async def bare_tornado() -> AsyncIterator[common.Server]:
    """Tornado alone (``bench/peers/bare_tornado.py``) on a free port, once it listens."""
    port = services.free_ports(1)[0]
    command = [sys.executable, str(PEER.parent / "bare_tornado.py"), str(port)]
    log = common.OUT / "peer-bare-tornado.log"
    async with common.spawned(command, common.OUT, dict(os.environ), log, port,
                              "bare Tornado") as server:  # fmt: skip
        yield server


@contextlib.asynccontextmanager
async def express(secret: str, password: str) -> AsyncIterator[common.Server]:
    """The peer app on a free port, once it listens."""
    port = services.free_ports(1)[0]
    env = dict(os.environ, PORT=str(port), REDIS_URL=common.REDIS_URL, SESSION_SECRET=secret,
               PEER_EMAIL=EMAIL, PEER_PASSWORD=password, NODE_ENV="production")  # fmt: skip
    log = common.OUT / "peer-express.log"
    async with common.spawned(["node", "app.js"], PEER, env, log, port, "express peer") as server:
        yield server


def express_cookie(secret: str, sid: str) -> str:
    """connect.sid as express-session signs it (cookie-signature: HMAC-SHA256, base64, no =)."""
    mac = hmac.new(secret.encode(), sid.encode(), hashlib.sha256).digest()
    signed = f"s:{sid}.{base64.b64encode(mac).decode().rstrip('=')}"
    return f"connect.sid={quote(signed, safe='')}"


async def express_sessions(server: common.Server, secret: str, password: str, count: int) -> Path:
    """``count`` sessions as the peer's own sign-in stores them: one made by signing in, the
    rest copies of its record under new ids; their Cookie headers, one per line."""
    client = AsyncHTTPClient()
    response = await client.fetch(
        f"{server.url}/api/login", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps({"email": EMAIL, "password": password}),
    )  # fmt: skip
    header = response.headers["Set-Cookie"].split(";")[0]
    signed = header.split("=", 1)[1].replace("%3A", ":")
    sid = signed.removeprefix("s:").rsplit(".", 1)[0]
    assert express_cookie(secret, sid) == header, "the peer's cookie is not signed as expected"
    redis = aioredis.Redis.from_url(common.REDIS_URL)
    try:
        stored = await redis.get(f"sess:{sid}")
        ttl = await redis.ttl(f"sess:{sid}")
        ids = [secrets.token_urlsafe(24) for _ in range(count - 1)]
        for start in range(0, len(ids), 5000):
            async with redis.pipeline(transaction=False) as pipe:
                for new in ids[start : start + 5000]:
                    pipe.set(f"sess:{new}", stored, ex=ttl)
                await pipe.execute()
    finally:
        await redis.aclose()
    path = COOKIES / f"express-{count}.txt"
    path.write_text("\n".join([header, *(express_cookie(secret, new) for new in ids)]) + "\n")
    return path


async def our_sessions(env: dict[str, str], count: int) -> Path:
    """``count`` sessions of distinct users, made through the public API as a sign-in makes
    them; their Cookie headers, one per line."""
    served = await start_services(load_settings(environ=env))
    # as a server's steady state has them: each last seen at a moment of the past touch interval
    # (not all at once, which would make every request of a later pass a touch)
    manager, real_clock = served.sessions, served.sessions.clock
    interval = manager.lifetime.touch_interval
    manager.clock = lambda: real_clock() - random.uniform(0, interval)
    try:
        headers: list[str] = []
        for start in range(0, count, MADE_AT_ONCE):
            numbers = range(start, min(count, start + MADE_AT_ONCE))
            made = await asyncio.gather(*(common.signed_in(served, n) for n in numbers))
            headers += [cookie for _, cookie in made]
    finally:
        await served.close()
    path = COOKIES / f"ours-{count}.txt"
    path.write_text("\n".join(headers) + "\n")
    return path


async def check(url: str, cookie_file: Path) -> None:
    """Each server must answer its first cookie with the dashboard, not a 401."""
    cookie = (await asyncio.to_thread(cookie_file.read_text)).split("\n", 1)[0]
    response = await AsyncHTTPClient().fetch(url, headers={"Cookie": cookie}, raise_error=False)
    if response.code != 200 or b"Welcome to dashboard" not in response.body:
        raise RuntimeError(f"{url} answered {response.code} to a signed-in session")


async def measure(url: str, cookies: Path, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    async with common.quiet(pid) as load:
        figures = await wrk(url, args.connections, args.seconds, threads=1,
                            cookies=str(cookies))  # fmt: skip
    if figures["non_2xx"]:
        raise RuntimeError(f"{url}: {figures['non_2xx']} responses were not 2xx")
    return figures | {"load": load}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": statistics.median(run["rps"] for run in runs),
        "p50_ms": statistics.median(run["latency_ms"]["p50"] for run in runs),
        "p99_ms": statistics.median(run["latency_ms"]["p99"] for run in runs),
        "server_cores": statistics.median(run["load"]["server_cores"] for run in runs),
        # the server's own CPU time per answer: what a core buys, whatever else the machine does
        "cpu_us": statistics.median(1e6 * run["load"]["server_cores"] / run["rps"] for run in runs),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    COOKIES.mkdir(parents=True, exist_ok=True)
    peer = npm_install()
    run, password = secrets.token_hex(4), secrets.token_urlsafe(16)
    secret = secrets.token_urlsafe(32)
    base = {"SESSIONS__URL": common.REDIS_URL, "SESSIONS__KEY_PREFIX": f"peers:{run}:",
            "USERS__URL": f"{common.MONGO_URL}/ta_peers_{run}"}  # fmt: skip
    env = {"cache on": common.server_env(base)}
    env["cache off"] = env["cache on"] | {"TORNADO_AUTH_SESSIONS__CACHE_SIZE": "0"}
    results: dict[str, Any] = {"command": common.command_line(), "peer": peer,
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "commit": common.commit(),
                               "params": vars(args), "counts": {}}  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        servers = {"express": await stack.enter_async_context(express(secret, password))}
        for name in ("cache on", "cache off"):
            log = common.OUT / f"peers-{name.replace(' ', '-')}-{run}.log"
            servers[name] = await stack.enter_async_context(common.serve(env[name], log))
        # the floor: each server's /healthz, which reads no session, and Tornado alone answering
        # the dashboard's body, under the same load
        servers["tornado"] = await stack.enter_async_context(bare_tornado())
        floor: dict[str, list[dict[str, Any]]] = {"express": [], "cache on": [], "tornado": []}
        for name in floor:
            await wrk(f"{servers[name].url}/healthz", args.connections, 2, threads=1)  # warm
        for round_ in range(args.rounds):
            for name in floor if round_ % 2 == 0 else reversed(list(floor)):
                url, pid = f"{servers[name].url}/healthz", servers[name].process.pid
                async with common.quiet(pid) as load:
                    figures = await wrk(url, args.connections, args.seconds, threads=1)
                floor[name].append(figures | {"load": load})
        results["healthz"] = {name: summary(runs) for name, runs in floor.items()}
        for name, row in results["healthz"].items():
            print(f"  healthz {name:>9}: {row['rps']:7,.0f} req/s, {row['cpu_us']:.0f} µs CPU each",
                  flush=True)  # fmt: skip
        made = 0
        for count in args.counts:
            # each count has sessions of its own: none was seen before its first round
            started = time.monotonic()
            files = {"express": await express_sessions(servers["express"], secret, password,
                                                       count)}  # fmt: skip
            files["cache on"] = files["cache off"] = await our_sessions(env["cache on"], count)
            made += 2 * count
            print(f"  {count:,} sessions each, made in {time.monotonic() - started:.0f} s",
                  flush=True)  # fmt: skip
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
            for name in SERVERS:  # checked, then warmed unmeasured: every session once, as a
                # server that has run for longer than its users' revisit interval has seen them
                # (Node's JIT, every cache), and a bound on the time it takes
                url = f"{servers[name].url}/api/dashboard"
                await check(url, files[name])
                warm = await wrk(url, args.connections, 60 + count // 200, cookies=str(files[name]),
                                 one_pass=True)  # fmt: skip
                if warm["requests"] < count:
                    raise RuntimeError(f"{name}: the warm pass saw {warm['requests']} of {count}")
            for round_ in range(args.rounds):
                for name in SERVERS if round_ % 2 == 0 else reversed(SERVERS):
                    url, pid = f"{servers[name].url}/api/dashboard", servers[name].process.pid
                    runs[name].append(await measure(url, files[name], pid, args))
            row = {name: summary(runs[name]) | {"runs": runs[name]} for name in SERVERS}
            for name in SERVERS:
                row[name]["ratio"] = row[name]["rps"] / row["express"]["rps"]
                print(f"  {count:>7,} {name:>9}: {row[name]['rps']:7,.0f} req/s "
                      f"({row[name]['ratio']:.2f}), p50 {row[name]['p50_ms']:.2f} ms, "
                      f"p99 {row[name]['p99_ms']:.2f} ms, {row[name]['cpu_us']:.0f} µs CPU each",
                      flush=True)  # fmt: skip
            results["counts"][str(count)] = row
        results["sessions_made"] = made
    return results


if __name__ == "__main__":
    if "--help" not in sys.argv and "-h" not in sys.argv:
        AsyncHTTPClient.configure(None, max_clients=4)
    common.cli(__doc__, main, FULL, QUICK)
