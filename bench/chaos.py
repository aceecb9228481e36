"""The server under faults: signed-in traffic while Redis, a worker, MongoDB or a master dies.

    .venv/bin/python -m bench.chaos [--rate 200] [--before 5] [--after 10] [--only redis,worker]

(``make chaos`` runs it.) Starts private services on free loopback ports with tools/services.py:
a redis-server whose append-only file is fsynced before each reply (``appendfsync always``: a
session the server acknowledged is on disk, so it survives SIGKILL), a MongoDB-compatible server,
and a Sentinel group (master, replica, three sentinels). Then ``tornado-auth serve --processes 2``
with Redis sessions and MongoDB users, signs in every user, and per scenario drives paced traffic
(``GET /api/dashboard`` and ``/api/profile`` rotating over every session, and steady sign-ins that
add sessions) for ``--before`` seconds, injects the fault, and keeps going ``--after`` seconds
once the service is back:

a. ``redis``: redis-server SIGKILLed, restarted on its port and files ``--outage`` seconds later;
b. ``worker``: one worker process SIGKILLed (the supervisor starts another);
c. ``mongodb``: the MongoDB server stopped and started again on its port and files;
d. ``sentinel``: the Sentinel group's master SIGKILLed (after a ``WAIT`` for its replica); the
   sentinels promote the replica, and the server (on ``redis+sentinel://``) follows.

Each scenario counts responses by endpoint and status (599: no HTTP response), 500s, session
cookies cleared, and then asks the dashboard with every session acknowledged before the fault:
a 401 there is a lost session. Recovery is the time from the fault to the first 200 after the
last failed response. Writes bench/chaos.json and the chaos section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPResponse
from tornado.iostream import StreamClosedError

from tools import probes, services

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
PASSWORD = "chaos-" + secrets.token_hex(8)
SENTINEL_NAME = "chaos"
RESULTS_JSON = BENCH / "results" / "chaos.json"
RESULTS_MD = BENCH / "RESULTS.md"
MARK, MARK_END = "<!-- chaos: written by bench/chaos.py -->", "<!-- /chaos -->"
SCENARIOS = {
    "redis": "(a) Redis SIGKILLed, restarted",
    "worker": "(b) a worker SIGKILLed",
    "mongodb": "(c) MongoDB restarted",
    "sentinel": "(d) Sentinel master SIGKILLed",
}


@dataclass
class Answer:
    started: float  # seconds since the scenario began
    seconds: float  # until the response (or the failure)
    kind: str  # dashboard, profile or login
    status: int  # 599: no HTTP response
    cleared: bool  # the response cleared the session cookie


@dataclass
class Scenario:
    name: str
    fault_at: float = 0.0  # the fault began
    back_at: float = 0.0  # the service was back (the fault's procedure ended)
    answers: list[Answer] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # session cookies, before the fault
    verified: Counter[int] = field(default_factory=Counter)  # their first non-200 answers
    lost: int = 0  # of them, gone (401) after the scenario
    log_lines: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        answers = sorted(self.answers, key=lambda answer: answer.started)
        failures = [a for a in answers if a.status != 200]
        failed = [a.started for a in failures]
        last = max((at for at in failed if at >= self.fault_at), default=None)
        recovered = next((a.started for a in answers if last and a.started > last), None)
        return {
            "responses": len(answers),
            "by_status": dict(sorted(Counter(f"{a.kind} {a.status}" for a in answers).items())),
            "500s": sum(a.status == 500 for a in answers),
            "cookies_cleared": sum(a.cleared for a in answers),
            "failed_before_fault": sum(a.started + a.seconds < self.fault_at for a in failures),
            "failed_after_fault": sum(at >= self.fault_at for at in failed),
            "failed_over_1s_after_back": sum(at > self.back_at + 1 for at in failed),
            "failed_outside_the_outage": [  # seconds from the fault, endpoint, status
                (round(a.started - self.fault_at, 2), a.kind, a.status)
                for a in failures
                if a.started + a.seconds < self.fault_at or a.started > self.back_at + 1
            ][:20],
            "down_s": round(self.back_at - self.fault_at, 2),
            "recovery_s": round(recovered - self.fault_at, 2) if recovered else 0.0,
            "slowest_s": round(max(a.seconds for a in answers), 2),
            "sessions_before_fault": len(self.acknowledged),
            "sessions_lost": self.lost,
            "verify_first_non_200": dict(self.verified),
            "server_log_errors": self.log_lines[:20],
        }


class Server:
    """``tornado-auth serve --processes 2`` on a free port, its errors logged to a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def __aenter__(self) -> Server:
        command = ["-m", "tornado_auth", "serve", "--port", "0", "--processes", "2"]
        with self.log.open("ab") as errors:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *command, env=self.env, cwd=OUT,
                stdout=asyncio.subprocess.PIPE, stderr=errors,
            )  # fmt: skip
        assert self.process.stdout is not None
        line = (await asyncio.wait_for(self.process.stdout.readline(), 60)).decode()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            raise RuntimeError(f"the server did not start (see {self.log}): {line!r}")
        self.base_url = match.group(1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        await asyncio.wait_for(self.process.wait(), 30)

    def workers(self) -> list[int]:
        """The pids of the supervisor's worker processes."""
        assert self.process is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                text = stat.read_text()
                if int(text[text.rindex(")") + 2 :].split()[1]) == self.process.pid:
                    found.append(int(stat.parent.name))
        return found

    def errors_since(self, offset: int) -> list[str]:
        """Each distinct warning, error and traceback line the server logged past ``offset``,
        numbers as N, with how often it came."""
        with self.log.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        found = Counter(
            re.sub(r"\d+", "N", line.split(" ", 2)[-1])[:200]
            for line in lines
            if re.search(r"WARNING|ERROR|CRITICAL|Traceback", line)
        )
        return [f"{count} x {line}" for line, count in found.most_common()]


class Traffic:
    """Signed-in users' requests, paced, rotating over every acknowledged session."""

    def __init__(self, base_url: str, emails: list[str], rate: float) -> None:
        self.base_url, self.emails, self.rate = base_url, emails, rate
        self.http = AsyncHTTPClient(max_clients=100)
        self.sessions: list[str] = []  # cookies, in the order the server acknowledged them
        self.scenario = Scenario("")
        self.began = 0.0

    async def fetch(self, path: str, cookie: str = "", body: Any = None) -> HTTPResponse | None:
        """One request; None when no HTTP response came (reset, refused, timed out)."""
        headers = {"Cookie": cookie} if cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            return await self.http.fetch(
                self.base_url + path, method="GET" if body is None else "POST",
                body=None if body is None else json.dumps(body), headers=headers,
                raise_error=False, request_timeout=10,
            )  # fmt: skip
        except (OSError, HTTPClientError, StreamClosedError):
            return None

    async def request(self, kind: str, path: str, cookie: str = "", body: Any = None) -> Any:
        """``fetch``, its answer kept in the running scenario."""
        started = time.monotonic()
        response = await self.fetch(path, cookie, body)
        cookies = response.headers.get_list("Set-Cookie") if response else []
        cleared = any(re.match(r'session=(""|);', cookie) for cookie in cookies)
        status = response.code if response else 599
        answer = Answer(started - self.began, time.monotonic() - started, kind, status, cleared)
        self.scenario.answers.append(answer)
        return response

    async def sign_in(self, email: str) -> str | None:
        """A new session for ``email``; its cookie once the server acknowledged it."""
        body = {"email": email, "password": PASSWORD}
        response = await self.request("login", "/api/login", body=body)
        if response is None or response.code != 200:
            return None
        cookie = SimpleCookie()
        for header in response.headers.get_list("Set-Cookie"):
            cookie.load(header)
        return f"session={cookie['session'].coded_value}"

    async def run(self, scenario: Scenario, stop: asyncio.Event, clients: int) -> None:
        """Paced traffic until ``stop``: ``clients`` loops share ``rate`` requests/s; the first
        signs in (its sessions join the rotation), the others ask the dashboard and, every
        fourth time, the profile (a user store read)."""
        self.scenario, self.began = scenario, time.monotonic()
        interval = clients / self.rate

        async def loop(index: int) -> None:
            turn = index
            while not stop.is_set():
                began = time.monotonic()
                if index == 0:
                    if cookie := await self.sign_in(self.emails[turn % len(self.emails)]):
                        self.sessions.append(cookie)
                else:
                    kind = "profile" if turn % 4 == 0 else "dashboard"
                    cookie = self.sessions[turn % len(self.sessions)]
                    await self.request(kind, f"/api/{kind}", cookie)
                turn += clients
                with contextlib.suppress(TimeoutError):  # pacing, or the end of the run
                    await asyncio.wait_for(stop.wait(), interval - (time.monotonic() - began))

        await asyncio.gather(*(loop(index) for index in range(clients)))

    async def verify(self, cookies: list[str], attempts: int = 3) -> tuple[Counter[int], int]:
        """Every cookie on the dashboard: the first answers that were not 200, and how many
        sessions are gone (401; other failures are asked again, up to ``attempts`` times)."""
        first: Counter[int] = Counter()
        pending = cookies
        for attempt in range(attempts):
            answers = await asyncio.gather(*(self.fetch("/api/dashboard", c) for c in pending))
            codes = [answer.code if answer else 599 for answer in answers]
            if attempt == 0:
                first.update(code for code in codes if code != 200)
            pending = [c for c, code in zip(pending, codes, strict=True) if code not in (200, 401)]
            gone = sum(code == 401 for code in codes)
            if not pending:
                break
            await asyncio.sleep(1)  # a store still settling: ask again
        return first, gone


@dataclass
class Services:
    """The private services of the run and how to restart them."""

    root: Path
    redis_port: int
    mongo_port: int
    sentinel_ports: tuple[int, int, tuple[int, ...]]  # master, replica, sentinels
    processes: dict[str, Any] = field(default_factory=dict)

    def start_redis(self) -> None:
        log = OUT / "chaos-redis.log"
        options = ("--appendonly", "yes", "--appendfsync", "always")
        self.processes["redis"] = services.redis_server(self.redis_port, self.root, log, *options)

    def start_mongodb(self) -> None:
        log = OUT / "chaos-mongodb.log"
        self.processes["mongodb"] = services.mongodb_server(
            self.mongo_port, self.root / "mongo", log
        )

    def start_sentinel(self) -> None:
        master, replica, sentinels = self.sentinel_ports
        (self.root / "sentinel").mkdir()
        group = services.sentinel_group(
            master, replica, sentinels, SENTINEL_NAME, self.root / "sentinel", OUT
        )
        self.processes["sentinel"] = group

    def stop(self) -> None:
        for started in self.processes.values():
            for process in started if isinstance(started, list) else [started]:
                process.kill()
                process.wait()


def server_env(sessions_url: str, users_url: str) -> dict[str, str]:
    settings = {
        "ENV": "development",
        "SESSIONS__URL": sessions_url,
        "SESSIONS__KEY_PREFIX": "chaos:",
        "USERS__URL": users_url,
        "USERS__BCRYPT_ROUNDS": "4",
        "USERS__DEMO_USERS": "false",
        "SECRETS__COOKIE_SECRET": secrets.token_urlsafe(48),
        "LOGGING__ACCESS_LOG": "false",
        "LOGGING__LEVEL": "warning",
        "SERVER__SHUTDOWN_GRACE": "2s",
        # The traffic signs the same users in again and again: a cap on sessions per user would
        # end the oldest ones, which the check would then count as lost.
        "SESSIONS__MAX_PER_USER": "0",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORNADO_AUTH_")}
    return env | {f"TORNADO_AUTH_{name}": value for name, value in settings.items()}


async def create_users(env: dict[str, str], emails: list[str]) -> None:
    """Through the CLI, a few at a time."""
    limit = asyncio.Semaphore(4)

    async def create(email: str) -> None:
        async with limit:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tornado_auth", "create-user", "--email", email,
                "--name", "Chaos", "--password-stdin", env=env, cwd=OUT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await process.communicate(PASSWORD.encode() + b"\n")
            if process.returncode != 0:
                raise RuntimeError(f"create-user {email} exited with {process.returncode}")

    await asyncio.gather(*(create(email) for email in emails))


async def stop_and_restart(
    process: Any, signum: int, restart: Callable[[], None], outage: float
) -> None:
    """Send ``signum``, wait out the outage, start again (the start waits for readiness)."""
    process.send_signal(signum)
    await asyncio.to_thread(process.wait)
    await asyncio.sleep(outage)
    await asyncio.to_thread(restart)


def kill_a_worker(server: Server) -> None:
    """SIGKILL one worker; back once the supervisor has started its replacement."""
    killed = server.workers()[0]
    os.kill(killed, signal.SIGKILL)
    services.wait_until(
        lambda: len(workers := server.workers()) == 2 and killed not in workers, [],
        server.log, "a new worker", 30,
    )  # fmt: skip


def promoted(sentinels: list[int], replica: int, seconds: float = 60) -> None:
    """Wait until the sentinels name the replica as the master (bounded)."""
    services.wait_until(
        lambda: probes.sentinel_master(sentinels, SENTINEL_NAME) == replica, [],
        OUT / f"redis-sentinel-{sentinels[0]}.log", "the failover", seconds,
    )  # fmt: skip


def replicated(master: int) -> None:
    """Once a write on this connection is on a replica, so is every earlier write (WAIT)."""
    probes.redis_command(master, "SET", "chaos:fence", "1")
    if probes.redis_command(master, "WAIT", "1", "2000") != 1:
        raise RuntimeError("the replica did not acknowledge the master's writes within 2 s")


async def run_scenario(
    name: str,
    fault: Callable[[], Awaitable[None]],
    server: Server,
    traffic: Traffic,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Traffic before, through and after ``fault``; then every pre-fault session is checked."""
    print(f"chaos: {name}", flush=True)
    scenario, stop, offset = Scenario(name), asyncio.Event(), server.log.stat().st_size
    running = asyncio.create_task(traffic.run(scenario, stop, args.clients))
    await asyncio.sleep(args.before)
    scenario.acknowledged = list(traffic.sessions)
    scenario.fault_at = time.monotonic() - traffic.began
    await fault()
    scenario.back_at = time.monotonic() - traffic.began
    await asyncio.sleep(args.after)
    stop.set()
    await running
    scenario.verified, scenario.lost = await traffic.verify(scenario.acknowledged)
    scenario.log_lines = server.errors_since(offset)
    summary = scenario.summary()
    print(f"  {json.dumps({k: v for k, v in summary.items() if k != 'server_log_errors'})}")
    return summary


@contextlib.asynccontextmanager
async def signed_in(
    env: dict[str, str], emails: list[str], log: Path, rate: float
) -> AsyncIterator[tuple[Server, Traffic]]:
    async with Server(env, log) as server:
        traffic = Traffic(server.base_url, emails, rate)
        traffic.scenario = Scenario("sign-in")
        for email in emails:
            cookie = await traffic.sign_in(email)
            if cookie is None:
                raise RuntimeError(f"could not sign in {email} (see {log})")
            traffic.sessions.append(cookie)
        yield server, traffic


async def main(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    redis_port, mongo_port, master, replica, *sentinels = services.free_ports(7)
    root = Path(tempfile.mkdtemp(prefix="ta-chaos-"))
    stack = Services(root, redis_port, mongo_port, (master, replica, tuple(sentinels)))
    emails = [f"chaos{n}@example.com" for n in range(args.users)]
    results: dict[str, Any] = {"params": vars(args), "scenarios": {}}
    log = OUT / "chaos-server.log"
    log.write_bytes(b"")
    try:
        await asyncio.to_thread(stack.start_redis)
        await asyncio.to_thread(stack.start_mongodb)
        users_url = f"mongodb://{probes.HOST}:{mongo_port}/chaos"
        env = server_env(f"redis://{probes.HOST}:{redis_port}/0", users_url)
        await create_users(env, emails)
        chosen = args.only.split(",")
        async with signed_in(env, emails, log, args.rate) as (server, traffic):
            faults = {
                "redis": lambda: stop_and_restart(
                    stack.processes["redis"], signal.SIGKILL, stack.start_redis, args.outage
                ),
                "worker": lambda: asyncio.to_thread(kill_a_worker, server),
                "mongodb": lambda: stop_and_restart(
                    stack.processes["mongodb"], signal.SIGTERM, stack.start_mongodb, args.outage
                ),
            }
            for name, fault in faults.items():
                if name in chosen:
                    results["scenarios"][name] = await run_scenario(
                        name, fault, server, traffic, args
                    )
        if "sentinel" in chosen:
            await asyncio.to_thread(stack.start_sentinel)
            url = (
                "redis+sentinel://"
                + ",".join(f"{probes.HOST}:{p}" for p in sentinels)
                + f"/{SENTINEL_NAME}"
            )
            async with signed_in(server_env(url, users_url), emails, log, args.rate) as (
                server,
                traffic,
            ):

                async def fail_over() -> None:
                    await asyncio.to_thread(replicated, master)
                    stack.processes["sentinel"][0].kill()
                    await asyncio.to_thread(promoted, sentinels, replica)

                results["scenarios"]["sentinel"] = await run_scenario(
                    "sentinel", fail_over, server, traffic, args
                )
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=40, help="users, each signed in at start")
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--clients", type=int, default=20, help="concurrent request loops")
    parser.add_argument("--before", type=float, default=5, help="seconds of traffic before a fault")
    parser.add_argument("--after", type=float, default=10, help="seconds of traffic after it")
    parser.add_argument(
        "--outage", type=float, default=2, help="seconds a killed service stays down"
    )
    parser.add_argument("--only", default="redis,worker,mongodb,sentinel", help="scenarios to run")
    return parser.parse_args()


def section(figures: dict[str, Any]) -> str:
    """The chaos section of RESULTS.md: one row per scenario."""
    params = figures["params"]
    lines = [
        MARK,
        "## Chaos: faults under signed-in traffic",
        "",
        f"`make chaos` on {figures['date']}: `tornado-auth serve --processes 2`, Redis sessions "
        "(append-only file, `appendfsync always`), MongoDB users, private services; "
        f"{params['rate']:g} requests/s from {params['clients']} loops ({params['users']} users; "
        "one loop signs in, the others ask the dashboard and every fourth time the profile), "
        f"{params['before']:g} s before each fault and {params['after']:g} s after the service "
        f"is back; a killed service stays down {params['outage']:g} s. Figures: "
        "[results/chaos.json](results/chaos.json). Recovery: from the fault to the first 200 "
        "after the last failure; lost: sessions acknowledged before the fault whose cookie no "
        "longer reaches the dashboard afterwards (a check that is neither 200 nor 401 is asked "
        "again, up to three times).",
        "",
        "| scenario | responses | 200 | 503 | other | 500s | sessions before / lost "
        "| not 200 at the first check | down s | recovery s | slowest s "
        "| failures > 1 s after back |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in figures["scenarios"].items():
        statuses = Counter[str]()
        for key, count in row["by_status"].items():
            statuses[key.split()[1]] += count
        other = sum(n for status, n in statuses.items() if status not in ("200", "503"))
        lines.append(
            f"| {SCENARIOS[name]} | {row['responses']} | {statuses['200']} | {statuses['503']} "
            f"| {other} | **{row['500s']}** | {row['sessions_before_fault']} / "
            f"**{row['sessions_lost']}** | {sum(row['verify_first_non_200'].values())} "
            f"| {row['down_s']} | {row['recovery_s']} "
            f"| {row['slowest_s']} | {row['failed_over_1s_after_back']} |"
        )
    return "\n".join([*lines, MARK_END])


def publish(figures: dict[str, Any]) -> None:
    """bench/results/chaos.json, and the chaos section of RESULTS.md replaced or added."""
    RESULTS_JSON.parent.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(figures, indent=2) + "\n")
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    old = re.search(f"{MARK}.*?{MARK_END}", text, re.S)
    new = section(figures)
    text = text.replace(old.group(0), new) if old else f"{text.rstrip()}\n\n{new}\n"
    RESULTS_MD.write_text(text)
    print(
        f"chaos: wrote {RESULTS_JSON.relative_to(BENCH.parent)} and the chaos section of "
        f"{RESULTS_MD.relative_to(BENCH.parent)}"
    )


if __name__ == "__main__":
    arguments = parse_args()
    services.exit_on_sigterm()
    figures = asyncio.run(main(arguments))
    publish(figures | {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
