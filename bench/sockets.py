"""Many idle authenticated dashboard sockets on one ``tornado-auth serve`` process (Redis
sessions): server memory per socket, sessions revoked one at a time and in bursts with the time
until the right socket is told, and the dashboard's latency meanwhile (see bench/README.md).

    .venv/bin/python -m bench.sockets [--quick] [--sockets N] [--trace FRAMES] --json F
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import linecache
import math
import os
import resource
import secrets
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from bench import _common as common
from bench.http_load import rss, wrk
from tornado_auth import load_settings, start_services

# sockets: how many to open; step: RSS measured every that many; cache: the session cache's
# size, past which sockets add no cached session; single and bursts x burst: revocations;
# clients: sockets per client process; dashboard_s: each wrk run; idle_s: the server's CPU
# with every socket open and nothing else; trace: tracemalloc frames (0: off; see ``trace``)
FULL = {"sockets": 50_000, "step": 5000, "cache": 10_000, "single": 300, "bursts": 4,
        "burst": 50, "clients": 12_500, "dashboard_s": 5, "idle_s": 20, "trace": 0}  # fmt: skip
QUICK = {"sockets": 2000, "step": 500, "cache": 1000, "single": 40, "bursts": 2, "burst": 20,
         "clients": 1000, "dashboard_s": 2, "idle_s": 3, "trace": 0}  # fmt: skip
HANDSHAKES = 64  # in flight at once, over all client processes (the listen backlog is 128)
WARM_UP = 200  # sockets opened and closed first: what the first ones cost once is not counted
CLOSE_WAIT = 10.0  # seconds a revoked socket may take before it counts as missed
FILES_SPARE = 256  # descriptors a process needs besides its sockets


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]

    return {"p50": at(0.5), "p99": at(0.99), "max": ordered[-1], "mean": statistics.mean(values)}


class ClientProcess:
    """One ``bench.socket_clients`` process: its sockets, from its own loopback address."""

    def __init__(self, process: asyncio.subprocess.Process, closes: dict[int, dict[str, Any]],
                 closed: asyncio.Condition) -> None:  # fmt: skip
        self.process, self.closes, self.closed = process, closes, closed
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if "closed" in message:
                self.closes[message["closed"]] = message
                async with self.closed:
                    self.closed.notify_all()
            else:
                await self.answers.put(message)

    async def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.answers.get()

    @property
    def cpu(self) -> float:
        return common._process_cpu(self.process.pid)

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await self.process.wait()
        await self.reader


class Run:
    def __init__(self, server: common.Server, args: argparse.Namespace) -> None:
        self.server, self.args = server, args
        self.port = int(server.url.rsplit(":", 1)[1])
        self.clients: list[ClientProcess] = []
        self.closes: dict[int, dict[str, Any]] = {}  # socket index -> its close, as told
        self.closed = asyncio.Condition()
        self.owner: dict[int, ClientProcess] = {}

    @contextlib.asynccontextmanager
    async def client_processes(self, count: int) -> AsyncIterator[None]:
        try:
            for number in range(count):
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.socket_clients", "127.0.0.1", str(self.port),
                    f"127.0.0.{2 + number}", cwd=common.REPO, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                self.clients.append(ClientProcess(process, self.closes, self.closed))
            yield
        finally:
            for client in self.clients:
                await client.stop()

    async def open(self, sockets: list[tuple[int, str]]) -> dict[str, Any]:
        """Open these sockets, spread over the client processes; each counts once greeted."""
        share = math.ceil(len(sockets) / len(self.clients))
        batches = [sockets[n * share : (n + 1) * share] for n in range(len(self.clients))]
        concurrency = max(1, HANDSHAKES // len(self.clients))
        for client, batch in zip(self.clients, batches, strict=True):
            self.owner.update((index, client) for index, _ in batch)
        answers = await asyncio.gather(
            *(client.ask({"open": batch, "concurrency": concurrency})
              for client, batch in zip(self.clients, batches, strict=True) if batch)
        )  # fmt: skip
        failures = [a["first_failure"] for a in answers if a["first_failure"]]
        return {"opened": sum(a["opened"] for a in answers),
                "failed": sum(a["failed"] for a in answers),
                "first_failure": failures[0] if failures else None}  # fmt: skip

    async def warm_up(self, cookies: list[str]) -> dict[str, Any]:
        """Sockets opened and closed: the one-off costs of the first ones are paid before any
        measure (the server has seen them close once this returns)."""
        indexes = [-1 - n for n in range(len(cookies))]
        opened = await self.open(list(zip(indexes, cookies, strict=True)))
        for client in self.clients:
            mine = [index for index in indexes if self.owner.get(index) is client]
            await client.ask({"close": mine})
        await asyncio.sleep(1)  # the server reads the ends of those connections
        return opened

    async def close_of(self, index: int, within: float) -> dict[str, Any] | None:
        """The close the socket's client reported, once it did (None after ``within`` s)."""
        async with self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait_for(lambda: index in self.closes), within)
        return self.closes.get(index)

    def client_cpu(self) -> float:
        return sum(client.cpu for client in self.clients) + common._process_cpu(os.getpid())


async def make_sessions(env: dict[str, str], count: int, sample: list[int]) -> dict[str, Any]:
    """Sessions written straight into the server's store: one per socket, each of its own user,
    and for the sampled sockets a second session of that user, which revokes the first."""
    services = await start_services(load_settings(environ=env))
    users = [secrets.token_hex(12) for _ in range(count)]
    cookies: list[str] = []
    try:
        for start in range(0, count, 500):  # a few hundred writes in flight at a time
            made = await asyncio.gather(
                *(
                    common.signed_in(services, n, users[n])
                    for n in range(start, min(count, start + 500))
                )
            )
            cookies += [cookie for _, cookie in made]  # fmt: skip
        callers = await asyncio.gather(*(common.signed_in(services, n, users[n]) for n in sample))
        extra = await asyncio.gather(*(common.signed_in(services, count + n)
                                       for n in range(WARM_UP + 1)))  # fmt: skip
    finally:
        await services.close()
    return {"sockets": cookies, "callers": dict(zip(sample, [c for _, c in callers], strict=True)),
            "warm_up": [c for _, c in extra[:-1]], "dashboard": extra[-1][1]}  # fmt: skip


class Revocations:
    """Sessions revoked through the API by another session of their user, one at a time and in
    bursts; for each, when its socket's close arrived after the revoke's response."""

    def __init__(self, run: Run, callers: dict[int, str]) -> None:
        self.run, self.callers = run, callers
        self.client = AsyncHTTPClient(force_instance=True, max_clients=run.args.burst)
        self.ids: dict[int, str] = {}

    async def find_ids(self) -> None:
        """The public id of each sampled socket's session, as its user's other session lists it."""
        for index, cookie in self.callers.items():
            response = await self.client.fetch(f"{self.run.server.url}/api/sessions",
                                               headers={"Cookie": cookie})  # fmt: skip
            sessions = json.loads(response.body)["sessions"]
            self.ids[index] = next(s["id"] for s in sessions if not s["current"])

    async def revoke(self, index: int) -> dict[str, Any]:
        url = f"{self.run.server.url}/api/sessions/{self.ids[index]}"
        sent = time.monotonic()
        response = await self.client.fetch(url, method="DELETE",
                                           headers={"Cookie": self.callers[index]})  # fmt: skip
        answered = time.monotonic()
        assert response.code == 204, response.code
        close = await self.run.close_of(index, CLOSE_WAIT)
        if close is None:
            return {"index": index, "missed": True, "revoke_ms": (answered - sent) * 1000}
        return {"index": index, "missed": False, "code": close["code"], "reason": close["reason"],
                "revoke_ms": (answered - sent) * 1000,
                "from_response_ms": (close["at"] - answered) * 1000,
                "from_request_ms": (close["at"] - sent) * 1000}  # fmt: skip

    async def measure(self, single: list[int], bursts: list[list[int]]) -> dict[str, Any]:
        pid = self.run.server.process.pid
        server_cpu, client_cpu, began = common._process_cpu(pid), self.run.client_cpu(), (
            time.monotonic())  # fmt: skip
        results = {"single": [await self.revoke(index) for index in single], "bursts": []}
        for burst in bursts:
            results["bursts"] += await asyncio.gather(*map(self.revoke, burst))
        seconds = time.monotonic() - began
        figures: dict[str, Any] = {"seconds": seconds, "cpu": {
            "server_cores": (common._process_cpu(pid) - server_cpu) / seconds,
            "client_cores": (self.run.client_cpu() - client_cpu) / seconds}}  # fmt: skip
        for name, rows in results.items():
            done = [row for row in rows if not row["missed"]]
            figures[name] = {
                "revoked": len(rows), "missed": len(rows) - len(done),
                "wrong_close": [r for r in done if (r["code"], r["reason"]) != (4001, "revoked")],
                "from_response_ms": percentiles([r["from_response_ms"] for r in done]),
                "from_request_ms": percentiles([r["from_request_ms"] for r in done]),
                "revoke_ms": percentiles([r["revoke_ms"] for r in rows]),
            }  # fmt: skip
        every = results["single"] + results["bursts"]
        done = [row for row in every if not row["missed"]]
        figures["all"] = {
            "revoked": len(every), "missed": len(every) - len(done),
            "from_response_ms": percentiles([r["from_response_ms"] for r in done]),
            "from_request_ms": percentiles([r["from_request_ms"] for r in done]),
        }  # fmt: skip
        return figures


def sample_of(count: int, size: int) -> list[int]:
    """``size`` socket indexes spread evenly over all of them, in a shuffled order."""
    size = min(size, count)
    chosen = [int(n * count / size) for n in range(size)]
    secrets.SystemRandom().shuffle(chosen)
    return chosen


async def main(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server and clients inherit it
    count = min(args.sockets, hard - FILES_SPARE)  # one process holds every socket
    if count < args.sockets:
        print(f"  the open-file limit here is {hard:,}: {count:,} sockets, not {args.sockets:,}")
    run_id = secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="ta-bench-sockets-") as root:
        env = common.server_env({"SESSIONS__URL": common.REDIS_URL,
                                 "SESSIONS__KEY_PREFIX": f"bench:{run_id}:",
                                 "SESSIONS__CACHE_SIZE": str(args.cache),
                                 "USERS__URL": f"sqlite:///{root}/users.db"})  # fmt: skip
        results: dict[str, Any] = {
            "command": common.command_line(), "params": vars(args) | {"sockets": count},
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "clients": 0,
            "requested": args.sockets, "open_files_hard_limit": hard, "commit": common.commit(),
            "settings": {k: v for k, v in env.items() if k.startswith("TORNADO_AUTH_")
                         and "SECRET" not in k and "USERS__URL" not in k},
        }  # fmt: skip
        single = args.single
        sample = sample_of(count, single + args.bursts * args.burst)
        print(f"  {count:,} sessions in the store", flush=True)
        cookies = await make_sessions(env, count, sample)
        log = common.OUT / f"server-sockets-{run_id}.log"
        traced = args.trace > 0
        snapshots = common.OUT / f"trace-{run_id}"  # kept, to look at in other ways
        if traced:  # (the server finds bench.traced_serve through PYTHONPATH, after any given)
            snapshots.mkdir(parents=True)
            path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(common.REPO)]))
            env |= {"BENCH_TRACE_FRAMES": str(args.trace), "BENCH_TRACE_DIR": str(snapshots),
                    "PYTHONPATH": path}  # fmt: skip
        module = "bench.traced_serve" if traced else "tornado_auth"
        async with common.serve(env, log, module=module) as server:
            run = Run(server, args)
            results["clients"] = clients = math.ceil(count / min(args.clients, hard - FILES_SPARE))
            async with run.client_processes(clients):
                if traced:
                    results["trace"] = await trace(run, cookies, count, snapshots)
                else:
                    results |= await measure(run, cookies, count, sample, single)
    return results


async def measure(run: Run, cookies: dict[str, Any], count: int, sample: list[int],
                  single: int) -> dict[str, Any]:  # fmt: skip
    args, server = run.args, run.server
    pid = server.process.pid
    results: dict[str, Any] = {}
    dashboard = f"{server.url}/api/dashboard"
    async with common.quiet(pid) as cpu:
        alone = await wrk(dashboard, 10, args.dashboard_s, cookies["dashboard"], threads=1)
    results["dashboard_alone"] = alone | {"cpu": cpu}
    results["warm_up"] = await run.warm_up(cookies["warm_up"])
    # memory: RSS every ``step`` sockets, the clients' and server's CPU while opening
    points = [{"sockets": 0, "rss": rss(pid)}]
    began, server_cpu, client_cpu = time.monotonic(), common._process_cpu(pid), run.client_cpu()
    sockets = list(enumerate(cookies["sockets"]))
    opened, failed, failures = 0, 0, []
    for start in range(0, count, args.step):
        answer = await run.open(sockets[start : start + args.step])
        opened, failed = opened + answer["opened"], failed + answer["failed"]
        failures += [answer["first_failure"]] if answer["first_failure"] else []
        points.append({"sockets": min(count, start + args.step), "rss": rss(pid)})
        print(
            f"  {points[-1]['sockets']:,} open: RSS {points[-1]['rss'] / 2**20:,.0f} MiB",
            flush=True,
        )
    seconds = time.monotonic() - began
    results["open"] = {
        "opened": opened, "failed": failed, "first_failure": failures[0] if failures else None,
        "seconds": seconds, "per_s": opened / seconds,
        "server_cores": (common._process_cpu(pid) - server_cpu) / seconds,
        "client_cores": (run.client_cpu() - client_cpu) / seconds,
    }  # fmt: skip
    results["memory"] = memory(points, args.cache)
    async with common.quiet(pid) as cpu:
        during = await wrk(dashboard, 10, args.dashboard_s, cookies["dashboard"], threads=1)
    results["dashboard_open"] = during | {"cpu": cpu}
    async with common.quiet(pid) as cpu:  # the heartbeat alone: a ping per socket per interval
        await asyncio.sleep(args.idle_s)
    results["idle"] = cpu | {"seconds": args.idle_s}
    stray = dict(run.closes)  # none should have closed by now
    revocations = Revocations(run, cookies["callers"])
    await revocations.find_ids()
    bursts = [sample[single + n * args.burst : single + (n + 1) * args.burst]
              for n in range(args.bursts)]  # fmt: skip
    results["revocations"] = figures = await revocations.measure(sample[:single], bursts)
    await asyncio.sleep(2)  # a socket closed that nobody revoked: time for its close to show
    revoked = set(sample)
    others = {i: c for i, c in run.closes.items() if i not in revoked and i >= 0} | stray
    figures["other_sockets_closed"] = len(others)
    figures["other_closes"] = list(others.values())[:10]
    results["rss_end"] = rss(pid)
    print(f"  revocations: {json.dumps(figures['all'])}", flush=True)
    return results


def memory(points: list[dict[str, int]], cache: int) -> dict[str, Any]:
    """Bytes per socket: while each socket's session also entered the session cache (up to its
    size), and past it, where a socket adds only itself."""
    base = points[0]
    figures: dict[str, Any] = {"points": points}
    filling = [p for p in points if 0 < p["sockets"] <= cache]
    if filling:
        last = filling[-1]
        figures["with_cached_session"] = {
            "sockets": last["sockets"],
            "bytes_per_socket": (last["rss"] - base["rss"]) / last["sockets"],
        }
        past = [p for p in points if p["sockets"] > last["sockets"]]
        if past:
            end = past[-1]
            figures["socket_alone"] = {
                "from": last["sockets"], "to": end["sockets"],
                "bytes_per_socket": (end["rss"] - last["rss"]) / (end["sockets"] - last["sockets"]),
            }  # fmt: skip
    end = points[-1]
    figures["all"] = {
        "sockets": end["sockets"],
        "bytes_per_socket": (end["rss"] - base["rss"]) / max(1, end["sockets"]),
    }
    return figures


async def trace(run: Run, cookies: dict[str, Any], count: int, snapshots: Path) -> dict[str, Any]:
    """tracemalloc in the server: snapshots at two socket counts, their difference per socket by
    traceback (the server is slower, and its RSS meaningless, meanwhile)."""
    pid = run.server.process.pid
    await run.warm_up(cookies["warm_up"])
    sockets = list(enumerate(cookies["sockets"]))
    half = count // 2
    taken = []
    for number, (start, end) in enumerate(((0, half), (half, count)), 1):
        await run.open(sockets[start:end])
        await asyncio.sleep(1)  # pending callbacks of the last handshakes run
        os.kill(pid, signal.SIGUSR1)
        path = snapshots / f"{number}.snapshot"
        while not path.exists():  # noqa: ASYNC110 (written by another process)
            await asyncio.sleep(0.2)
        taken.append(tracemalloc.Snapshot.load(str(path)))
    return breakdown(taken[0], taken[1], count - half)


STDLIB = ("asyncio/", "functools.py", "<frozen", "runpy", "contextlib.py", "selectors.py")
PARTS = (  # the part of a socket a site belongs to, by its file
    ("tornado/httputil.py", "HTTP headers, request line and fields"),
    ("tornado/iostream.py tornado/tcpserver.py tornado/netutil.py tornado/platform/ socket.py",
     "connection: IOStream, socket, loop registration"),
    ("tornado/websocket.py", "WebSocket protocol, its coroutines and tasks"),
    ("tornado/web.py tornado/gen.py tornado/routing.py tornado/http1connection.py "
     "tornado/httpserver.py", "handler, HTTP request objects, the handshake's task"),
    ("tornado_auth/live.py", "live hub: indexes, deadlines, pings"),
    ("tornado_auth/handlers/", "our socket handler and its user"),
    ("tornado_auth/sessions/ tornado_auth/cookies.py",
     "session records and caches (cookie, session): per session"),
)  # fmt: skip


def part_of(site: str) -> str:
    for files, name in PARTS:
        if site.startswith(tuple(files.split())):
            return name
    return "other (tasks' bookkeeping, contexts)"


def breakdown(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, sockets: int,
              top: int = 40) -> dict[str, Any]:  # fmt: skip
    """The memory the later snapshot holds beyond the earlier one, per socket, by the line of
    Tornado or tornado-auth whose call allocated it (the innermost such frame)."""
    noise = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(noise).compare_to(before.filter_traces(noise), "traceback")
    sites: dict[str, list[float]] = {}
    for stat in diff:
        frames = [f for f in reversed(stat.traceback) if not shorten(f.filename).startswith(STDLIB)]
        frame = frames[0] if frames else stat.traceback[-1]
        site = f"{shorten(frame.filename)}:{frame.lineno}"
        entry = sites.setdefault(site, [0, 0, linecache.getline(frame.filename, frame.lineno)])
        entry[0] += stat.size_diff
        entry[1] += stat.count_diff
    rows = sorted(sites.items(), key=lambda item: -item[1][0])
    parts: dict[str, float] = {}
    for site, (size, _, _) in rows:
        parts[part_of(site)] = parts.get(part_of(site), 0) + size / sockets
    return {"sockets": sockets, "bytes_per_socket": sum(v[0] for _, v in rows) / sockets,
            "parts": dict(sorted(parts.items(), key=lambda item: -item[1])),
            "sites": [{"site": site, "bytes_per_socket": size / sockets,
                       "blocks_per_socket": count / sockets, "line": line.strip()}
                      for site, (size, count, line) in rows[:top]]}  # fmt: skip


def shorten(filename: str) -> str:
    """A file's path from its package (tornado/, tornado_auth/, asyncio/...) on."""
    if "/tornado_auth/" in filename:  # this checkout, or another one measured
        return "tornado_auth/" + filename.rsplit("/tornado_auth/", 1)[1]
    for marker in ("site-packages/", "lib/python3.11/", str(common.REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


if __name__ == "__main__":
    common.cli(__doc__, main, FULL, QUICK)
