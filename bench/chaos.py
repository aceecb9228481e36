"""The server under faults: signed-in traffic while Redis, a worker, MongoDB or a master dies;
then every session acknowledged before the fault is asked for (see bench/README.md).

    .venv/bin/python -m bench.chaos [--quick] [--only redis,worker,mongodb,sentinel]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.iostream import StreamClosedError

from bench import _common as common
from bench import report
from bench._common import OUT, Server
from tools import probes, services

PASSWORD = "chaos-" + secrets.token_hex(8)
SENTINEL = "chaos"
USERS, CLIENTS, OUTAGE = 40, 20, 2  # users signed in at start, request loops, seconds down
FULL = {"rate": 200, "before": 5, "after": 10}  # requests/s, seconds before and after a fault
QUICK = {"rate": 100, "before": 2, "after": 3}
RESULTS = Path(__file__).resolve().parent / "results" / "chaos.json"


@dataclass
class Answer:
    started: float  # seconds since the scenario began
    seconds: float  # until the response (or the failure)
    kind: str  # dashboard, profile or login
    status: int  # 599: no HTTP response


def workers(server: Server) -> list[int]:
    """The pids of the supervisor's worker processes."""
    pid = server.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


class Traffic:
    """Signed-in users' requests, paced, rotating over every acknowledged session."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.http = AsyncHTTPClient(max_clients=100)
        self.sessions: list[str] = []  # cookies, in the order the server acknowledged them
        self.answers: list[Answer] = []  # the running scenario's
        self.began = time.monotonic()

    async def request(self, kind: str, path: str, cookie: str = "", body: Any = None) -> Any:
        """One request, its answer kept unless ``kind`` is empty; None if no response came."""
        started, response = time.monotonic(), None
        headers = {"Cookie": cookie} if cookie else {"Content-Type": "application/json"}
        with contextlib.suppress(OSError, HTTPClientError, StreamClosedError):
            response = await self.http.fetch(
                self.url + path, method="GET" if body is None else "POST",
                body=None if body is None else json.dumps(body), headers=headers,
                raise_error=False, request_timeout=10,
            )  # fmt: skip
        if kind:
            status, seconds = response.code if response else 599, time.monotonic() - started
            self.answers.append(Answer(started - self.began, seconds, kind, status))
        return response

    async def sign_in(self, number: int) -> str | None:
        """A new session for user ``number``; its cookie once the server acknowledged it."""
        body = {"email": f"chaos{number % USERS}@example.com", "password": PASSWORD}
        response = await self.request("login", "/api/login", body=body)
        return common.session_cookie(response) if response and response.code == 200 else None

    async def run(self, stop: asyncio.Event) -> None:
        """CLIENTS loops, ``rate`` requests/s in all, until ``stop``: the first signs in (its
        sessions join the rotation), the others ask the dashboard or the profile."""

        async def loop(index: int) -> None:
            turn = index
            while not stop.is_set():
                began = time.monotonic()
                if index == 0:
                    if cookie := await self.sign_in(turn):
                        self.sessions.append(cookie)
                else:
                    kind = "profile" if turn % 4 == 0 else "dashboard"
                    await self.request(
                        kind, f"/api/{kind}", self.sessions[turn % len(self.sessions)]
                    )
                turn += CLIENTS
                with contextlib.suppress(TimeoutError):  # pacing, or the end of the run
                    pause = CLIENTS / self.rate - (time.monotonic() - began)
                    await asyncio.wait_for(stop.wait(), pause)

        await asyncio.gather(*(loop(index) for index in range(CLIENTS)))

    async def lost(self, cookies: list[str]) -> int:
        """How many sessions are gone: 401 on the dashboard (other failures asked 3 times)."""
        pending, gone = cookies, 0
        for _ in range(3):
            answers = await asyncio.gather(
                *(self.request("", "/api/dashboard", c) for c in pending)
            )
            codes = [answer.code if answer else 599 for answer in answers]
            gone += codes.count(401)
            pending = [c for c, code in zip(pending, codes, strict=True) if code not in (200, 401)]
            if not pending:
                break
            await asyncio.sleep(1)  # a store still settling: ask again
        return gone

    async def scenario(self, name: str, fault: Callable[[], None],
                       args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
        """Traffic before, through and after ``fault``; then every pre-fault session checked."""
        print(f"chaos: {name}", flush=True)
        stop = asyncio.Event()
        self.answers, self.began = [], time.monotonic()
        running = asyncio.create_task(self.run(stop))
        await asyncio.sleep(args.before)
        acknowledged, fault_at = list(self.sessions), time.monotonic() - self.began
        await asyncio.to_thread(fault)
        back_at = time.monotonic() - self.began
        await asyncio.sleep(args.after)
        stop.set()
        await running
        answers = sorted(self.answers, key=lambda answer: answer.started)
        failed = [a.started for a in answers if a.status != 200 and a.started >= fault_at]
        recovered = next((a.started for a in answers if failed and a.started > failed[-1]), None)
        result = {
            "responses": len(answers),
            "by_status": dict(sorted(Counter(f"{a.kind} {a.status}" for a in answers).items())),
            "500s": sum(a.status == 500 for a in answers),
            "down_s": round(back_at - fault_at, 2),
            "recovery_s": round(recovered - fault_at, 2) if recovered else 0.0,
            "slowest_s": round(max(a.seconds for a in answers), 2),
            "sessions_before_fault": len(acknowledged),
            "sessions_lost": await self.lost(acknowledged),
        }
        print(f"  {json.dumps(result)}", flush=True)
        return result


def chaos_env(sessions_url: str, users_url: str) -> dict[str, str]:
    # no cap on sessions per user: the traffic signs them in again and again, and older sessions
    # that a cap ended would count as lost
    return common.server_env({"SESSIONS__URL": sessions_url, "SESSIONS__KEY_PREFIX": "chaos:",
                              "USERS__URL": users_url, "USERS__BCRYPT_ROUNDS": "4",
                              "SESSIONS__MAX_PER_USER": "0"})  # fmt: skip


@contextlib.asynccontextmanager
async def signed_in(env: dict[str, str], rate: float) -> AsyncIterator[tuple[Server, Traffic]]:
    """``serve --processes 2``, with every user signed in once."""
    async with common.serve(env, OUT / "chaos-server.log", processes=2) as server:
        traffic = Traffic(server.url, rate)
        for number in range(USERS):
            if (cookie := await traffic.sign_in(number)) is None:
                raise RuntimeError(f"could not sign in chaos{number} (see {server.log})")
            traffic.sessions.append(cookie)
        yield server, traffic


async def main(args: argparse.Namespace) -> dict[str, Any]:
    redis_port, mongo_port, master, replica, *sentinels = services.free_ports(7)
    root = Path(tempfile.mkdtemp(prefix="ta-chaos-"))
    starts: dict[str, Callable[[], subprocess.Popen[bytes]]] = {  # each returns once it answers
        "redis": lambda: services.redis_server(redis_port, root, OUT / "chaos-redis.log",
                                               "--appendonly", "yes", "--appendfsync", "always"),
        "mongodb": lambda: services.mongodb_server(mongo_port, root / "mongo",
                                                   OUT / "chaos-mongodb.log"),
    }  # fmt: skip
    started: dict[str, list[subprocess.Popen[bytes]]] = {}

    def restart(name: str, signum: int) -> None:
        started[name][0].send_signal(signum)
        started[name][0].wait()
        time.sleep(OUTAGE)
        started[name] = [starts[name]()]

    params = {"users": USERS, "clients": CLIENTS, "outage": OUTAGE} | vars(args)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, Any] = {"command": common.command_line(), "params": params, "date": date}
    results["scenarios"] = {}
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        for name, start in starts.items():
            started[name] = [await asyncio.to_thread(start)]
        users_url = f"mongodb://{probes.HOST}:{mongo_port}/chaos"
        env = chaos_env(f"redis://{probes.HOST}:{redis_port}/0", users_url)
        limit = asyncio.Semaphore(4)

        async def create(number: int) -> None:
            async with limit:
                await common.run_cli(env, "create-user", "--email", f"chaos{number}@example.com",
                                     "--name", "Chaos", "--password-stdin",
                                     stdin=PASSWORD + "\n")  # fmt: skip

        await asyncio.gather(*map(create, range(USERS)))
        async with signed_in(env, args.rate) as (server, traffic):

            def kill_a_worker() -> None:
                killed = workers(server)[0]
                os.kill(killed, signal.SIGKILL)
                services.wait_until(
                    lambda: len(now := workers(server)) == 2 and killed not in now, [],
                    server.log, "a new worker", 30,
                )  # fmt: skip

            faults = {
                "redis": lambda: restart("redis", signal.SIGKILL),
                "worker": kill_a_worker,
                "mongodb": lambda: restart("mongodb", signal.SIGTERM),
            }
            for name in [name for name in faults if name in args.only.split(",")]:
                results["scenarios"][name] = await traffic.scenario(name, faults[name], args)
        if "sentinel" in args.only.split(","):
            (root / "sentinel").mkdir()
            started["sentinel"] = await asyncio.to_thread(
                services.sentinel_group, master, replica, sentinels, SENTINEL,
                root / "sentinel", OUT,
            )  # fmt: skip
            hosts = ",".join(f"{probes.HOST}:{port}" for port in sentinels)
            env = chaos_env(f"redis+sentinel://{hosts}/{SENTINEL}", users_url)

            def fail_over() -> None:
                # once a write is on the replica, so is every earlier one (WAIT)
                probes.redis_command(master, "SET", "chaos:fence", "1")
                if probes.redis_command(master, "WAIT", "1", "2000") != 1:
                    raise RuntimeError("the replica did not acknowledge the master's writes")
                started["sentinel"][0].kill()
                services.wait_until(
                    lambda: probes.sentinel_master(sentinels, SENTINEL) == replica, [],
                    OUT / f"redis-sentinel-{sentinels[0]}.log", "the failover", 60,
                )  # fmt: skip

            async with signed_in(env, args.rate) as (server, traffic):
                scenario = await traffic.scenario("sentinel", fail_over, args)
            results["scenarios"]["sentinel"] = scenario
    finally:
        for process in [each for processes in started.values() for each in processes]:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"into bench/out/quick/: {QUICK}")
    parser.add_argument("--only", default=",".join(report.SCENARIOS), help="scenarios to run")
    arguments = parser.parse_args()
    services.exit_on_sigterm()
    params = QUICK if arguments.quick else FULL
    target = OUT / "quick" / "chaos.json" if arguments.quick else RESULTS
    common.write_json(target, asyncio.run(main(argparse.Namespace(**params, only=arguments.only))))
    print(f"chaos: wrote {target} and {report.write(target.parent)}")
