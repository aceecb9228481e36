"""Shared by the benchmark scripts: their command line, the machine's load, the server under
test and sessions made without it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from tornado.httpclient import HTTPResponse
from tornado.web import create_signed_value

from tools import probes, services
from tornado_auth import Services, Session

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"  # server logs and quick runs (git-ignored)
# Servers the run may fill and leave behind: run.py's private ones, or given to a script run alone.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")
MONGO_URL = os.environ.get("BENCH_MONGO_URL", "")
SETTLE = float(os.environ.get("BENCH_SETTLE", "30"))  # seconds; 2 in a quick run
USER_AGENT = (  # a typical desktop Chrome's (111 characters), sent with every request
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


def cli(doc: str, main: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
        full: dict[str, Any], quick: dict[str, Any]) -> None:  # fmt: skip
    """``[--quick] --json F``: ``main`` with the full or quick parameters, its figures to F."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"short runs: {quick}")
    parser.add_argument("--json", type=Path, required=True, help="the figures' file")
    numbers = {name: value for name, value in full.items() if type(value) in (int, float)}
    for name, value in numbers.items():  # a number among the parameters may be set: --sockets 9
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), metavar="N",
                            help=f"default {value:,}, quick {quick[name]:,}")  # fmt: skip
    lists = [name for name, value in full.items() if isinstance(value, list)
             and all(type(item) is int for item in value)]  # fmt: skip
    for name in lists:  # and a list of them: --counts 1,2000
        parser.add_argument(f"--{name.replace('_', '-')}", metavar="N,N",
                            type=lambda text: [int(item) for item in text.split(",")],
                            help=f"default {full[name]}, quick {quick[name]}")  # fmt: skip
    args = parser.parse_args()
    if not (REDIS_URL and MONGO_URL):
        parser.error("set BENCH_REDIS_URL and BENCH_MONGO_URL (servers to fill), or use bench.run")
    chosen = quick if args.quick else full
    params = {name: value if (given := getattr(args, name, None)) is None else given
              for name, value in chosen.items()}  # fmt: skip
    write_json(args.json, asyncio.run(main(argparse.Namespace(**params))))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def command_line() -> str:
    """How this script was started, as a reader would type it."""
    return shlex.join([".venv/bin/python", "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]])


# -- the machine is shared: settle first, then record the load -----------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # all but idle and iowait


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


@contextlib.asynccontextmanager
async def quiet(
    pid: int | None = None, settle: float | None = None
) -> AsyncIterator[dict[str, float]]:
    """The block runs once the machine had a second under half a core busy (sign-ins whose
    clients left finish meanwhile), or after ``settle`` s (default SETTLE); the dict yielded then
    holds the seconds waited, the cores the server (by default this process) used meanwhile and
    the load average."""
    began, settle = time.monotonic(), SETTLE if settle is None else settle
    while time.monotonic() - began < settle:
        start, at = _machine_busy(), time.monotonic()
        await asyncio.sleep(1)
        if (_machine_busy() - start) / (time.monotonic() - at) < 0.5:
            break
    figures = {"settled_s": round(time.monotonic() - began, 1)}
    pid = pid or os.getpid()
    began, cpu = time.monotonic(), _process_cpu(pid)
    yield figures
    figures["server_cores"] = round((_process_cpu(pid) - cpu) / (time.monotonic() - began), 2)
    figures["load_average"] = round(os.getloadavg()[0], 2)


# -- sessions and the server under test ----------------------------------------------------------


def login_session(number: int, user_id: str | None = None) -> Session:
    """A new session signed in as a distinct user (or as ``user_id``), as a sign-in builds it
    (its data, an IP address and a browser's User-Agent)."""
    session = Session()
    data = {"email": f"user{number}@example.com", "role": "user", "amr": ["pwd"]}
    session.login(user_id or secrets.token_hex(12), data, remember_me=False, ttl=86400)
    session.ip = f"203.0.{number // 256 % 256}.{number % 256}"
    session.user_agent = USER_AGENT
    return session


async def signed_in(services: Services, number: int, user_id: str | None = None) -> tuple[str, str]:
    """A new session of a distinct user (or of ``user_id``) in the services' store: its token
    and Cookie header."""
    change = await services.sessions.commit(login_session(number, user_id))
    assert change is not None and change.token is not None
    value = create_signed_value(services.cookie_secret, "session", change.token).decode()
    return change.token, f'session="{value}"'


def session_cookie(response: HTTPResponse) -> str:
    """The Cookie header for the session a response set."""
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        cookie.load(header)
    return f"session={cookie['session'].coded_value}"


def server_env(settings: dict[str, str]) -> dict[str, str]:
    """This environment without TORNADO_AUTH_*, plus the given settings and common ones."""
    common = {"ENV": "development", "USERS__DEMO_USERS": "false",
              "SECRETS__COOKIE_SECRET": secrets.token_urlsafe(48), "LOGGING__ACCESS_LOG": "false",
              "LOGGING__LEVEL": "warning", "SERVER__SHUTDOWN_GRACE": "2s"}  # fmt: skip
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
    url: str  # http://127.0.0.1:PORT
    env: dict[str, str]
    log: Path


@contextlib.asynccontextmanager
async def spawned(command: list[str], cwd: Path, env: dict[str, str], log: Path, port: int,
                  name: str) -> AsyncIterator[Server]:  # fmt: skip
    """``command`` started with its output in ``log``, once it listens on ``port``; SIGTERM on
    exit (SIGKILL 30 s later)."""
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=cwd, stdout=output, stderr=output
        )
    server = Server(process, f"http://127.0.0.1:{port}", env, log)
    try:
        listening = functools.partial(probes.listening, port)
        await asyncio.to_thread(services.wait_until, listening, [], log, name, 60)
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def serve(env: dict[str, str], log: Path, processes: int = 1,
                module: str = "tornado_auth") -> AsyncIterator[Server]:  # fmt: skip
    """``tornado-auth serve`` (or ``python -m MODULE serve``, MODULE taking the same command line)
    on a free port, once it listens; SIGTERM on exit."""
    OUT.mkdir(parents=True, exist_ok=True)
    port = services.free_ports(1)[0]
    command = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1", "--port",
               str(port), "--processes", str(processes)]  # fmt: skip
    async with spawned(command, OUT, env, log, port, "tornado-auth serve") as server:
        yield server


def commit() -> str:
    """The commit measured, marked when tornado_auth/ has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()  # fmt: skip

    dirty = " + uncommitted changes" if git("status", "--porcelain", "tornado_auth") else ""
    return git("rev-parse", "--short", "HEAD") + dirty
