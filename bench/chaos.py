"""The server under faults: signed-in traffic while Redis, a worker, MongoDB or a master dies.

    .venv/bin/python -m bench.chaos [--rate 200] [--before 5] [--after 10] [--only redis,worker]

``tornado-auth serve --processes 2`` on private services (Redis with ``appendfsync always``,
MongoDB, a Sentinel group); per scenario, paced traffic before, through and after the fault, then
every session acknowledged before it is asked for (a 401 is a lost one). See bench/README.md.
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
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPResponse
from tornado.iostream import StreamClosedError

from bench import report
from bench._common import (
    OUT,
    Server,
    command_line,
    run_cli,
    serve,
    server_env,
    session_cookie,
    write_json,
)
from tools import probes, services

PASSWORD = "chaos-" + secrets.token_hex(8)
SENTINEL = "chaos"
RESULTS = Path(__file__).resolve().parent / "results" / "chaos.json"


@dataclass
class Answer:
    started: float  # seconds since the scenario began
    seconds: float  # until the response (or the failure)
    kind: str  # dashboard, profile or login
    status: int  # 599: no HTTP response
    cleared: bool  # the response cleared the session cookie


def summary(answers: list[Answer], fault_at: float, back_at: float) -> dict[str, Any]:
    answers = sorted(answers, key=lambda answer: answer.started)
    failed = [a.started for a in answers if a.status != 200]
    last = max((at for at in failed if at >= fault_at), default=None)
    recovered = next((a.started for a in answers if last and a.started > last), None)
    return {
        "responses": len(answers),
        "by_status": dict(sorted(Counter(f"{a.kind} {a.status}" for a in answers).items())),
        "500s": sum(a.status == 500 for a in answers),
        "cookies_cleared": sum(a.cleared for a in answers),
        "failed_before_fault": sum(
            a.started + a.seconds < fault_at for a in answers if a.status != 200
        ),
        "failed_over_1s_after_back": sum(at > back_at + 1 for at in failed),
        "down_s": round(back_at - fault_at, 2),
        "recovery_s": round(recovered - fault_at, 2) if recovered else 0.0,
        "slowest_s": round(max(a.seconds for a in answers), 2),
    }


def workers(server: Server) -> list[int]:
    """The pids of the supervisor's worker processes."""
    pid = server.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def errors_since(log: Path, offset: int) -> list[str]:
    """Each distinct warning, error and traceback line logged past ``offset`` (numbers as N)."""
    with log.open("rb") as file:
        file.seek(offset)
        lines = file.read().decode(errors="replace").splitlines()
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
        self.answers: list[Answer] = []  # the running scenario's
        self.began = time.monotonic()

    async def fetch(self, path: str, cookie: str = "", body: Any = None) -> HTTPResponse | None:
        """One request; None when no HTTP response came (reset, refused, timed out)."""
        headers = {"Cookie": cookie} if cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        with contextlib.suppress(OSError, HTTPClientError, StreamClosedError):
            return await self.http.fetch(
                self.base_url + path, method="GET" if body is None else "POST",
                body=None if body is None else json.dumps(body), headers=headers,
                raise_error=False, request_timeout=10,
            )  # fmt: skip
        return None

    async def request(self, kind: str, path: str, cookie: str = "", body: Any = None) -> Any:
        """``fetch``, its answer kept in the running scenario."""
        started = time.monotonic()
        response = await self.fetch(path, cookie, body)
        cookies = response.headers.get_list("Set-Cookie") if response else []
        cleared = any(re.match(r'session=(""|);', cookie) for cookie in cookies)
        status = response.code if response else 599
        answer = Answer(started - self.began, time.monotonic() - started, kind, status, cleared)
        self.answers.append(answer)
        return response

    async def sign_in(self, email: str) -> str | None:
        """A new session for ``email``; its cookie once the server acknowledged it."""
        body = {"email": email, "password": PASSWORD}
        response = await self.request("login", "/api/login", body=body)
        if response is None or response.code != 200:
            return None
        return session_cookie(response)

    async def run(self, stop: asyncio.Event, clients: int) -> None:
        """``clients`` loops share ``rate`` requests/s until ``stop``: the first signs in (its
        sessions join the rotation), the others ask the dashboard or the profile."""
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
                    await self.request(
                        kind, f"/api/{kind}", self.sessions[turn % len(self.sessions)]
                    )
                turn += clients
                with contextlib.suppress(TimeoutError):  # pacing, or the end of the run
                    await asyncio.wait_for(stop.wait(), interval - (time.monotonic() - began))

        await asyncio.gather(*(loop(index) for index in range(clients)))

    async def verify(self, cookies: list[str]) -> tuple[Counter[int], int]:
        """Every cookie on the dashboard: the first answers that were not 200, and how many
        sessions are gone (401; other failures are asked again, up to three times)."""
        first: Counter[int] = Counter()
        pending, gone = cookies, 0
        for attempt in range(3):
            answers = await asyncio.gather(*(self.fetch("/api/dashboard", c) for c in pending))
            codes = [answer.code if answer else 599 for answer in answers]
            if attempt == 0:
                first.update(code for code in codes if code != 200)
            gone += sum(code == 401 for code in codes)
            pending = [c for c, code in zip(pending, codes, strict=True) if code not in (200, 401)]
            if not pending:
                break
            await asyncio.sleep(1)  # a store still settling: ask again
        return first, gone


async def run_scenario(
    name: str, fault: Callable[[], Awaitable[None]], server: Server, traffic: Traffic,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """Traffic before, through and after ``fault``; then every pre-fault session is checked."""
    print(f"chaos: {name}", flush=True)
    stop, offset = asyncio.Event(), server.log.stat().st_size
    traffic.answers, traffic.began = [], time.monotonic()
    running = asyncio.create_task(traffic.run(stop, args.clients))
    await asyncio.sleep(args.before)
    acknowledged, fault_at = list(traffic.sessions), time.monotonic() - traffic.began
    await fault()
    back_at = time.monotonic() - traffic.began
    await asyncio.sleep(args.after)
    stop.set()
    await running
    first, lost = await traffic.verify(acknowledged)
    print(f"  {json.dumps(result := summary(traffic.answers, fault_at, back_at))}", flush=True)
    errors = errors_since(server.log, offset)[:20]
    return result | {
        "sessions_before_fault": len(acknowledged), "sessions_lost": lost,
        "verify_first_non_200": dict(first), "server_log_errors": errors,
    }  # fmt: skip


@contextlib.asynccontextmanager
async def signed_in(
    env: dict[str, str], emails: list[str], log: Path, rate: float
) -> AsyncIterator[tuple[Server, Traffic]]:
    async with serve(env, log, processes=2) as server:
        traffic = Traffic(server.base_url, emails, rate)
        for email in emails:
            cookie = await traffic.sign_in(email)
            if cookie is None:
                raise RuntimeError(f"could not sign in {email} (see {log})")
            traffic.sessions.append(cookie)
        yield server, traffic


def chaos_env(sessions_url: str, users_url: str) -> dict[str, str]:
    return server_env({
        "SESSIONS__URL": sessions_url,
        "SESSIONS__KEY_PREFIX": "chaos:",
        "USERS__URL": users_url,
        "USERS__BCRYPT_ROUNDS": "4",
        # the traffic signs the same users in again and again: a cap would end older sessions,
        # which the check would then count as lost
        "SESSIONS__MAX_PER_USER": "0",
    })  # fmt: skip


async def main(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    redis_port, mongo_port, master, replica, *sentinels = services.free_ports(7)
    root = Path(tempfile.mkdtemp(prefix="ta-chaos-"))
    started: dict[str, Any] = {}

    def start_redis() -> None:
        started["redis"] = services.redis_server(
            redis_port, root, OUT / "chaos-redis.log", "--appendonly", "yes",
            "--appendfsync", "always",
        )  # fmt: skip

    def start_mongodb() -> None:
        started["mongodb"] = services.mongodb_server(
            mongo_port, root / "mongo", OUT / "chaos-mongodb.log"
        )

    async def restart(name: str, signum: int, start: Callable[[], None]) -> None:
        started[name].send_signal(signum)
        await asyncio.to_thread(started[name].wait)
        await asyncio.sleep(args.outage)
        await asyncio.to_thread(start)  # returns once the service answers

    emails = [f"chaos{n}@example.com" for n in range(args.users)]
    results: dict[str, Any] = {"command": command_line(), "params": vars(args), "scenarios": {}}
    log = OUT / "chaos-server.log"
    log.write_bytes(b"")
    chosen = args.only.split(",")
    try:
        await asyncio.to_thread(start_redis)
        await asyncio.to_thread(start_mongodb)
        users_url = f"mongodb://{probes.HOST}:{mongo_port}/chaos"
        env = chaos_env(f"redis://{probes.HOST}:{redis_port}/0", users_url)
        limit = asyncio.Semaphore(4)

        async def create(email: str) -> None:
            async with limit:
                await run_cli(env, "create-user", "--email", email, "--name", "Chaos",
                              "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip

        await asyncio.gather(*map(create, emails))
        async with signed_in(env, emails, log, args.rate) as (server, traffic):

            def kill_a_worker() -> None:
                killed = workers(server)[0]
                os.kill(killed, signal.SIGKILL)
                services.wait_until(
                    lambda: len(now := workers(server)) == 2 and killed not in now, [],
                    server.log, "a new worker", 30,
                )  # fmt: skip

            faults = {
                "redis": lambda: restart("redis", signal.SIGKILL, start_redis),
                "worker": lambda: asyncio.to_thread(kill_a_worker),
                "mongodb": lambda: restart("mongodb", signal.SIGTERM, start_mongodb),
            }
            for name, fault in faults.items():
                if name in chosen:
                    results["scenarios"][name] = await run_scenario(
                        name, fault, server, traffic, args
                    )
        if "sentinel" in chosen:
            (root / "sentinel").mkdir()
            started["sentinel"] = await asyncio.to_thread(
                services.sentinel_group, master, replica, sentinels, SENTINEL,
                root / "sentinel", OUT,
            )  # fmt: skip
            hosts = ",".join(f"{probes.HOST}:{port}" for port in sentinels)
            env = chaos_env(f"redis+sentinel://{hosts}/{SENTINEL}", users_url)

            def promoted() -> None:
                services.wait_until(
                    lambda: probes.sentinel_master(sentinels, SENTINEL) == replica, [],
                    OUT / f"redis-sentinel-{sentinels[0]}.log", "the failover", 60,
                )  # fmt: skip

            async def fail_over() -> None:
                # once a write is on the replica, so is every earlier one (WAIT)
                probes.redis_command(master, "SET", "chaos:fence", "1")
                if probes.redis_command(master, "WAIT", "1", "2000") != 1:
                    raise RuntimeError("the replica did not acknowledge the master's writes")
                started["sentinel"][0].kill()
                await asyncio.to_thread(promoted)

            async with signed_in(env, emails, log, args.rate) as (server, traffic):
                results["scenarios"]["sentinel"] = await run_scenario(
                    "sentinel", fail_over, server, traffic, args
                )
    finally:
        for process in started.values():
            for each in process if isinstance(process, list) else [process]:
                each.kill()
                each.wait()
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=40, help="users, each signed in at start")
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--clients", type=int, default=20, help="concurrent request loops")
    parser.add_argument("--before", type=float, default=5, help="seconds of traffic before a fault")
    parser.add_argument("--after", type=float, default=10, help="seconds of traffic after it")
    parser.add_argument("--outage", type=float, default=2, help="seconds a service stays down")
    parser.add_argument("--only", default="redis,worker,mongodb,sentinel", help="scenarios to run")
    arguments = parser.parse_args()
    services.exit_on_sigterm()
    figures = asyncio.run(main(arguments))
    write_json(RESULTS, figures | {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    report.write()
    print(f"chaos: wrote {RESULTS} and bench/RESULTS.md")
