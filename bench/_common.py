"""Shared by the benchmark scripts: statistics, the machine's load, the server under test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from bson import ObjectId
from pymongo import AsyncMongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPResponse
from tornado.web import create_signed_value

from tools import services
from tornado_auth import Services, Session, load_settings, start_services

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"  # server logs and quick runs (git-ignored)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
MONGO_URL = os.environ.get("BENCH_MONGO_URL", "mongodb://127.0.0.1:27017")
# A typical desktop Chrome User-Agent (111 characters), sent with every request.
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


def tag() -> str:
    """A unique suffix for the keys, databases and files of one run."""
    return f"{time.strftime('%H%M%S')}{secrets.token_hex(3)}"


def login_session(number: int) -> Session:
    """A new session signed in as a distinct user, as a sign-in builds it."""
    session = Session()
    data = {"email": f"user{number}@example.com", "role": "user"}
    session.login(str(ObjectId()), data, remember_me=False, ttl=86400)
    return session


async def app_services(
    sessions_url: str, prefix: str, tmp: str, overrides: dict[str, Any] | None = None
) -> Services:
    """The services of an app (``start_services``) whose sessions are at ``sessions_url``."""
    settings = {
        "sessions.url": sessions_url,
        "sessions.key_prefix": prefix,
        "users.url": f"sqlite:///{tmp}/users.db",
        "users.demo_users": False,
        "secrets.secret_file": f"{tmp}/cookie_secret",
        "logging.access_log": False,
    }
    return await start_services(load_settings(environ={}, overrides=settings | (overrides or {})))


async def signed_in(services: Services, number: int) -> tuple[str, str]:
    """A new session of a distinct user in the services' store: its token and Cookie header."""
    change = await services.sessions.commit(login_session(number))
    assert change is not None and change.token is not None
    value = create_signed_value(services.cookie_secret, "session", change.token).decode()
    return change.token, f'session="{value}"'


def session_cookie(response: HTTPResponse) -> str:
    """The Cookie header for the session a response set."""
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        cookie.load(header)
    return f"session={cookie['session'].coded_value}"


def summarize(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and mean in milliseconds of durations in seconds."""
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"n": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99),
            "mean_ms": 1000 * sum(ordered) / len(ordered)}  # fmt: skip


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2) + "\n"
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def command_line() -> str:
    """How this script was started, as a reader would type it."""
    return shlex.join([".venv/bin/python", "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]])


# -- the machine is shared: settle first, then record what else ran ------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # all but idle and iowait


def _process_cpu(pid: int) -> float:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    return 0.0


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def tested_pids(server: int | None = None) -> list[int]:
    """The server's pid and those of the services under test (BENCH_SERVICE_PIDS, from run.py)."""
    given = os.environ.get("BENCH_SERVICE_PIDS", "")
    return [pid for pid in [server, *map(int, filter(None, given.split(",")))] if pid]


class Cpu:
    """Cores used meanwhile by the tested processes, this script with its children (wrk), and
    everything else on the machine (``others``)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        own = os.times()
        mine = own.user + own.system + own.children_user + own.children_system
        tested = sum(_process_cpu(pid) for pid in self.pids)
        return time.monotonic(), _machine_busy(), tested, mine

    def cores(self) -> dict[str, float]:
        wall, machine, tested, mine = (
            end - start for end, start in zip(self._sample(), self.start, strict=True)
        )
        return {
            "tested_cores": round(tested / wall, 2),
            "bench_cores": round(mine / wall, 2),
            "others_cores": round(max(0.0, machine - tested - mine) / wall, 2),
            "load_average": load_average(),
        }


SETTLE = float(os.environ.get("BENCH_SETTLE", "30"))  # seconds; 2 in a quick run


async def settle(limit: float = SETTLE, busy: float = 0.5) -> float:
    """Wait (at most ``limit`` s) for a second in which the machine used under ``busy`` cores;
    the seconds waited. Sign-ins whose clients left finish meanwhile, too."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        start, at = _machine_busy(), time.monotonic()
        await asyncio.sleep(1)
        if (_machine_busy() - start) / (time.monotonic() - at) < busy:
            break
    return round(time.monotonic() - began, 1)


# -- the server under test -----------------------------------------------------------------------


def server_env(settings: dict[str, str]) -> dict[str, str]:
    """This environment without TORNADO_AUTH_*, plus the given settings and common ones."""
    common = {
        "ENV": "development",
        "USERS__DEMO_USERS": "false",
        "SECRETS__COOKIE_SECRET": secrets.token_urlsafe(48),
        "LOGGING__ACCESS_LOG": "false",
        "LOGGING__LEVEL": "warning",
        "SERVER__SHUTDOWN_GRACE": "2s",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORNADO_AUTH_")}
    return env | {f"TORNADO_AUTH_{name}": value for name, value in (common | settings).items()}


async def run_cli(env: dict[str, str], *args: str, stdin: str = "") -> None:
    """``tornado-auth ARGS``; RuntimeError with its error output when it fails."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tornado_auth", *args, env=env, cwd=OUT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate(stdin.encode())
    if process.returncode != 0:
        raise RuntimeError(f"tornado-auth {' '.join(args)}: {err.decode().strip()}")


@dataclass
class Server:
    """A ``tornado-auth serve`` subprocess."""

    process: asyncio.subprocess.Process
    port: int
    env: dict[str, str]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
        assert match, "no VmRSS in /proc status"
        return int(match.group(1)) * 1024


@contextlib.asynccontextmanager
async def serve(env: dict[str, str], log: Path, processes: int = 1) -> AsyncIterator[Server]:
    """``tornado-auth serve`` on a free port, once healthy; SIGTERM on exit."""
    OUT.mkdir(parents=True, exist_ok=True)
    port = services.free_ports(1)[0]
    command = ["serve", "--host", "127.0.0.1", "--port", str(port), "--processes", str(processes)]
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tornado_auth", *command, env=env, cwd=OUT, stdout=output,
            stderr=output,
        )  # fmt: skip
    server = Server(process, port, env, log)
    try:
        async with asyncio.timeout(60):
            while process.returncode is None:
                with contextlib.suppress(HTTPClientError, OSError):
                    await AsyncHTTPClient().fetch(f"{server.base_url}/healthz", request_timeout=2)
                    break
                await asyncio.sleep(0.05)
        if process.returncode is not None:
            raise RuntimeError(f"the server did not start (see {log})")
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def clean_up(prefix: str, databases: list[str]) -> None:
    """Delete the run's Redis keys (under ``prefix``) and MongoDB databases."""
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        for name in databases:
            await mongo.drop_database(name)
    finally:
        await mongo.close()
