"""Shared by the benchmark scripts: latency statistics, service URLs, the server under test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import resource
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from bson import ObjectId
from pymongo import AsyncMongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tornado_auth import Session

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"  # raw results and server logs (git-ignored)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
MONGO_URL = os.environ.get("BENCH_MONGO_URL", "mongodb://127.0.0.1:27017")
# A typical desktop Chrome User-Agent (111 characters).
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
CLIENT_IP = "203.0.113.7"
SESSION_TTL = 86400  # sessions.ttl in settings.yaml


def tag() -> str:
    """A unique suffix for the keys, databases and files of one run."""
    return f"{time.strftime('%H%M%S')}{secrets.token_hex(3)}"


def login_session(number: int, user_agent: str = USER_AGENT) -> Session:
    """A new session signed in as a distinct user, as the login handler builds it."""
    session = Session()
    data = {"email": f"user{number}@example.com", "role": "user"}
    session.login(str(ObjectId()), data, remember_me=False, ttl=SESSION_TTL)
    session.ip, session.user_agent = CLIENT_IP, user_agent
    return session


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, linearly interpolated."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(seconds: list[float]) -> dict[str, float]:
    """Latencies in milliseconds and the sequential rate of a list of durations in seconds."""
    ordered = sorted(seconds)
    total = sum(ordered)
    return {
        "n": len(ordered),
        "mean_ms": 1000 * total / len(ordered),
        "p50_ms": 1000 * percentile(ordered, 50),
        "p99_ms": 1000 * percentile(ordered, 99),
        "max_ms": 1000 * ordered[-1],
        "ops_per_s": len(ordered) / total,
    }


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2)
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def raise_fd_limit() -> int:
    """Lift this process's open-file limit to the hard limit (children inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- CPU accounting: the machine is shared; each measurement says who else used the CPU --

TICK = os.sysconf("SC_CLK_TCK")
SERVICE_NAMES = ("redis-server", "ferretdb", "mongod")
FOREIGN_LIMIT = 0.3  # cores taken by anything else, above which a measurement is repeated
QUIET_CORES = 0.3  # machine busy below which a measurement may start
QUIET_WAIT = 45.0  # seconds to wait for that, at most
ATTEMPTS = 2


@dataclass(frozen=True)
class CpuSample:
    wall: float
    machine_busy: int  # ticks of all CPUs, from /proc/stat
    processes: dict[int, tuple[str, int]]  # pid -> (group, ticks)
    children: float  # CPU seconds of this process's children that ended (wrk runs)


def _machine_busy() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def service_pids() -> set[int]:
    """The Redis and MongoDB processes under test: BENCH_SERVICE_PIDS (set by run.py, which
    starts private ones), else every process with a service's name."""
    given = os.environ.get("BENCH_SERVICE_PIDS")
    if given:
        return {int(pid) for pid in given.split(",")}
    pids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(entry.path, "comm").read_text().startswith(SERVICE_NAMES):
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU used, in cores, by this script and its children (bench), the server, the services,
    and everything else (foreign: the rest of the machine's busy time)."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.services = service_pids()

    def _group(self, pid: int, ppid: int) -> str | None:
        if pid == self.server_pid:
            return "server"
        if pid in self.services:
            return "services"
        if os.getpid() in (pid, ppid):
            return "bench"
        return None

    def sample(self) -> CpuSample:
        processes = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            group = self._group(int(entry.name), int(fields[1]))
            if group:
                processes[int(entry.name)] = (group, int(fields[11]) + int(fields[12]))
        ended = resource.getrusage(resource.RUSAGE_CHILDREN)
        return CpuSample(
            time.monotonic(), _machine_busy(), processes, ended.ru_utime + ended.ru_stime
        )

    def usage(self, start: CpuSample) -> dict[str, float]:
        end = self.sample()
        wall = end.wall - start.wall
        cores = {"bench": 0.0, "server": 0.0, "services": 0.0}
        for pid, (group, ticks) in end.processes.items():
            cores[group] += (ticks - start.processes.get(pid, (group, 0))[1]) / TICK / wall
        cores["bench"] += (end.children - start.children) / wall
        machine = (end.machine_busy - start.machine_busy) / TICK / wall
        result = {f"{group}_cores": round(value, 2) for group, value in cores.items()}
        result["machine_busy_cores"] = round(machine, 2)
        result["foreign_cores"] = round(max(0.0, machine - sum(cores.values())), 2)
        return result

    async def wait_quiet(self) -> float:
        """Wait (at most QUIET_WAIT s) until the machine is nearly idle; the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < QUIET_WAIT:
            start = self.sample()
            await asyncio.sleep(1)
            if self.usage(start)["machine_busy_cores"] < QUIET_CORES:
                break
        return round(time.monotonic() - began, 1)


async def measured(
    work: Callable[[], Awaitable[T]], meter: CpuMeter, attempts: int = ATTEMPTS
) -> tuple[T, dict[str, float]]:
    """Run ``work`` once the machine is quiet; again (up to ``attempts`` runs) when anything
    else took more than FOREIGN_LIMIT cores meanwhile. The run with the least foreign CPU, and
    its CPU accounting."""
    best: tuple[T, dict[str, float]] | None = None
    for attempt in range(1, attempts + 1):
        waited = await meter.wait_quiet()
        start = meter.sample()
        result = await work()
        cpu = meter.usage(start) | {"attempt": attempt, "waited_s": waited}
        if best is None or cpu["foreign_cores"] < best[1]["foreign_cores"]:
            best = (result, cpu)
        if cpu["foreign_cores"] < FOREIGN_LIMIT:
            break
        if attempt < attempts:
            print(f"  (others took {cpu['foreign_cores']:.2f} cores meanwhile: measuring again)")
    assert best is not None
    return best


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, "no VmRSS in /proc status"
    return int(match.group(1)) * 1024


@dataclass
class Server:
    """A ``tornado-auth serve`` subprocess: one process, its port, its settings environment."""

    process: asyncio.subprocess.Process
    port: int
    env: dict[str, str]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rss(self) -> int:
        return rss_bytes(self.process.pid)


def server_env(prefix: str, database: str) -> dict[str, str]:
    """Settings for the server under test: Redis sessions, MongoDB users, bcrypt cost 12."""
    settings = {
        "ENV": "development",
        "SESSIONS__URL": REDIS_URL,
        "SESSIONS__KEY_PREFIX": prefix,
        "USERS__URL": f"{MONGO_URL}/{database}",
        "USERS__BCRYPT_ROUNDS": "12",
        "USERS__DEMO_USERS": "false",
        "SECRETS__COOKIE_SECRET": secrets.token_urlsafe(48),
        "LOGGING__ACCESS_LOG": "false",
        "LOGGING__LEVEL": "warning",
        "SERVER__SHUTDOWN_GRACE": "2s",
        # sign-ins in flight count against the throttle until they succeed: (b) and (c) measure
        # bcrypt, not the throttle, so 50 concurrent sign-ins of one account must all reach it
        "THROTTLE__ACCOUNT_IP_FAILURES": "1000000",
        "THROTTLE__IP_FAILURES": "1000000",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORNADO_AUTH_")}
    env.update({f"TORNADO_AUTH_{name}": value for name, value in settings.items()})
    return env


async def run_cli(env: dict[str, str], *args: str, stdin: str = "") -> str:
    """Run ``tornado-auth ARGS``; its output, or RuntimeError with its error output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tornado_auth",
        *args,
        env=env,
        cwd=OUT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin.encode())
    if process.returncode != 0:
        raise RuntimeError(f"tornado-auth {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def _wait_healthy(base_url: str) -> None:
    """Poll /healthz until it answers 200; the caller bounds the wait."""
    client = AsyncHTTPClient()
    while True:
        try:
            await client.fetch(f"{base_url}/healthz", request_timeout=2)
            return
        except (HTTPClientError, OSError):
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serve(env: dict[str, str], log: Path) -> AsyncIterator[Server]:
    """Run ``tornado-auth serve --port 0 --processes 1``; stop it with SIGTERM on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tornado_auth",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--processes",
            "1",
            env=env,
            cwd=OUT,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
    assert process.stdout is not None
    drain: asyncio.Task[None] | None = None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"listening on http://[^:]+:(\d+)", line)
        if not match:
            raise RuntimeError(f"server did not start (see {log}): {line!r}")
        drain = asyncio.create_task(_drain(process.stdout))
        server = Server(process, int(match.group(1)), env, log)
        async with asyncio.timeout(30):
            await _wait_healthy(server.base_url)
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            await drain


async def remove_prefix(prefix: str) -> int:
    """Delete every Redis key under ``prefix``; how many."""
    client = aioredis.from_url(REDIS_URL)
    removed = 0
    try:
        batch = []
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                removed += await client.unlink(*batch)
                batch = []
        if batch:
            removed += await client.unlink(*batch)
    finally:
        await client.aclose()
    return removed


async def drop_database(name: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(MONGO_URL)
    try:
        await client.drop_database(name)
    finally:
        await client.close()
