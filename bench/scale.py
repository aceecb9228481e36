"""Cost against size: each session store's request-path operations with 10^3 to 10^6 stored
sessions, a user with 1,000 sessions, users stores of 10^5 users and an audit trail of 10^6
entries (bench/README.md, "Cost against size").

    make bench-scale                                    # private services, the full run
    .venv/bin/python -m bench.scale --quick             # 10^3 and 10^4 only, into bench/out/quick/
    .venv/bin/python -m bench.scale --stores sqlite --sizes 1000,10000 --json F

It starts its own redis-server and MongoDB-compatible server on free ports (as ``make bench``
does), fills each session store through the SessionStore API (``create``, many calls at once)
with the records sign-ins of distinct users store, and at each size measures:

- the dashboard under ``wrk`` against a ``tornado-auth serve`` process on that store (not for
  the memory store, whose records only this process holds), each request the next of up to
  ``cookies`` distinct sessions picked at random among those stored;
- in this process, one call at a time through the services an app runs on: the dashboard handed
  to the application (no socket), sign-in (the store part: the new record, its index entries and
  the per-user cap; no bcrypt), logout, revoke-others, list-sessions, a touch, one sweep run (with
  nothing expired, and with 1,000 expired records; for SQLite the bytes it read and wrote), and
  the live-session count the metrics take every 5 s;
- a user with 1,000 sessions: list-sessions, sign-in and revoke-others for that user.

Then, for the SQLite and MongoDB user stores: the users-store part of a sign-in with 10^3 to 10^5
users, and the admin's audit pages (first, middle, last; by page number and by cursor) with 10^3
to 10^6 entries. The figures go to bench/results/scale.json (after every step, so a cut run keeps
what it measured), the chart to bench/results/scale.svg and the section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import os
import random
import secrets
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
from tornado import httputil
from tornado.web import create_signed_value

from bench import _common as common
from bench import report
from bench.http_load import wrk
from bench.in_process import _Connection
from bench.run import environment, private_services
from tornado_auth import Services, Session, load_settings, make_app, start_services
from tornado_auth.audit import Audit, AuditEntry, Retention
from tornado_auth.sessions import (
    Lifetime,
    SessionManager,
    SessionRecord,
    SessionStore,
    backend_for_url,
    token_key,
)
from tornado_auth.sessions import sqlite as sqlite_sessions
from tornado_auth.sessions.session import MAX_USER_AGENT
from tornado_auth.users import User, UserStore, store_for_url
from tornado_auth.users import mongo as mongo_users
from tornado_auth.users.mongo import MongoUserStore
from tornado_auth.users.sqlite import SQLiteUserStore

FULL: dict[str, Any] = {
    "stores": ["memory", "sqlite", "redis", "mongodb"],
    "sizes": [10**3, 10**4, 10**5, 10**6],
    "users": [10**3, 10**4, 10**5],
    "audit": [10**3, 10**4, 10**5, 10**6],
    "user_stores": ["sqlite", "mongodb"],
    "ops": 300,  # calls per operation and size, one at a time...
    "op_seconds": 20.0,  # ...or fewer when they take longer than this (at least MIN_CALLS)
    "cookies": 5000,  # distinct sessions the wrk run rotates over
    "connections": 16,
    "seconds": 5.0,
    "rounds": 3,
    "settle": 10.0,  # seconds at most to wait for a quiet machine before a wrk round
    # minutes of filling each store may take; a size that would not fit is not measured
    "budget": {"memory": 20, "sqlite": 40, "redis": 60, "mongodb": 30},
}
QUICK: dict[str, Any] = FULL | {
    "sizes": [10**3, 10**4],
    "users": [10**3, 10**4],
    "audit": [10**3, 10**4],
    "ops": 100,
    "op_seconds": 5.0,
    "cookies": 1000,
    "seconds": 2.0,
    "rounds": 1,
    "settle": 2.0,
    "budget": {"memory": 5, "sqlite": 5, "redis": 5, "mongodb": 5},
}
CONCURRENCY = {"memory": 1, "sqlite": 64, "redis": 128, "mongodb": 8}  # creates at once
MIN_CALLS = 5
HEAVY = 1000  # sessions of the heavy user
EXPIRED = 1000  # expired records one measured sweep removes
TTL, ABSOLUTE_TTL = 86400.0, 90 * 86400.0  # the defaults: a day, 90 days at most
PAGE = 50  # audit entries and users per admin page
# What sign-ins send: the browsers people use (every record gets one, in turn).
USER_AGENTS = (
    common.USER_AGENT,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
)
SERVER_SETTINGS = {
    "SESSIONS__CACHE_SIZE": "0",  # every request reads the store (the cache is Redis's only)
    "SESSIONS__TOUCH_INTERVAL": "12h",  # no touch writes among the reads; touches apart
    "SESSIONS__MAX_PER_USER": str(HEAVY),  # the heavy user keeps their 1,000 sessions
}


def log(message: str) -> None:
    print(f"scale: {message}", flush=True)


# -- sessions as sign-ins store them, named by number --------------------------------------------


class Filled:
    """Sessions ``0 .. made - 1`` of one run: sign-ins of distinct users, each token derived from
    the run's seed and the number, so that any of them can be named again without keeping it."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.made = 0
        self.gone: set[int] = set()  # signed out since

    @property
    def live(self) -> int:
        return self.made - len(self.gone)

    def token(self, number: int) -> str:
        digest = hashlib.sha256(f"{self.seed}:{number}".encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()  # as token_urlsafe(32)

    def key(self, number: int) -> str:
        return token_key(self.token(number))

    def user(self, number: int) -> str:
        return hashlib.sha256(f"{self.seed}:user:{number}".encode()).hexdigest()[:24]

    def record(
        self, number: int, now: float, user_id: str | None = None, ago: float = 0.0
    ) -> SessionRecord:
        """What a sign-in (not remembered) stores, made ``ago`` seconds before ``now``."""
        made = now - ago
        absolute = made + ABSOLUTE_TTL
        return SessionRecord(
            key=self.key(number),
            created_at=made,
            last_seen_at=made,
            expires_at=min(made + TTL, absolute),
            absolute_expires_at=absolute,
            ttl=TTL,
            user_id=user_id or self.user(number),
            ip=f"100.{64 + number % 64}.{number >> 8 & 255}.{number & 255}",
            user_agent=USER_AGENTS[number % len(USER_AGENTS)][:MAX_USER_AGENT],
            data={
                "email": f"user{number}@example.com",
                "role": "user",
                "amr": ["pwd"],
                "remember_me": False,
            },
        )

    def sample(self, count: int, rng: random.Random) -> list[int]:
        """Up to ``count`` distinct numbers of live sessions, at random."""
        count = min(count, self.live)
        chosen: set[int] = set()
        while len(chosen) < count:
            number = rng.randrange(self.made)
            if number not in self.gone:
                chosen.add(number)
        return list(chosen)


def sign_in_session(user_id: str, number: int) -> Session:
    """A session as the sign-in handler builds it before its commit."""
    session = Session()
    data = {"email": f"user{number}@example.com", "role": "user", "amr": ["pwd"]}
    session.login(user_id, data, remember_me=False, ttl=TTL)
    session.ip = f"100.64.0.{number & 255}"
    session.user_agent = USER_AGENTS[number % len(USER_AGENTS)]
    return session


async def check_like_sign_in() -> None:
    """The filled records must be what a sign-in stores: compare with one the manager makes."""
    backend = backend_for_url("memory://")
    lifetime = Lifetime(TTL, 30 * 86400, ABSOLUTE_TTL, 60)
    manager = SessionManager(backend.store, backend.events, lifetime)
    session = sign_in_session("u", 0)
    await manager.commit(session)
    assert session.key is not None
    made = await backend.store.load(session.key)
    assert made is not None
    ours = Filled("check").record(0, made.created_at, user_id="u")
    for name in ("created_at", "last_seen_at", "expires_at", "absolute_expires_at", "ttl"):
        if abs(getattr(made, name) - getattr(ours, name)) > 1e-6:
            raise SystemExit(f"bench.scale: filled records differ from a sign-in's in {name}")
    if made.data != ours.data or made.user_agent != ours.user_agent:
        raise SystemExit("bench.scale: filled records differ from a sign-in's in their data")


async def fill(
    store: SessionStore, filled: Filled, upto: int, concurrency: int, deadline: float
) -> dict[str, Any]:
    """Create sessions ``filled.made .. upto - 1``, ``concurrency`` at a time, until the
    deadline (monotonic); how many, how fast."""
    start, began = filled.made, time.monotonic()
    numbers = iter(range(start, upto))
    made = start

    async def worker() -> None:
        nonlocal made
        for number in numbers:
            if time.monotonic() > deadline:
                return
            await store.create(filled.record(number, time.time()))
            made = max(made, number + 1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    filled.made = made
    seconds = time.monotonic() - began
    return {
        "from": start,
        "to": made,
        "seconds": round(seconds, 1),
        "per_s": round((made - start) / seconds) if seconds else None,
    }


# -- timing --------------------------------------------------------------------------------------


def _figures(durations: list[float]) -> dict[str, Any]:
    durations = sorted(durations)
    count = len(durations)

    def at(q: float) -> float:
        return round(durations[min(count - 1, round(q * (count - 1)))], 4)

    return {
        "n": count,
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "mean_ms": round(sum(durations) / count, 4),
        "max_ms": round(durations[-1], 4),
    }


async def timed(
    op: Callable[[int], Awaitable[Any]],
    count: int,
    seconds: float,
    prepare: Callable[[int], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """ms of ``op(i)``, one call at a time: ``count`` calls, fewer (at least MIN_CALLS) when they
    take more than ``seconds`` in all. ``prepare(i)`` runs before each, untimed."""
    durations: list[float] = []
    began = time.monotonic()
    for number in range(count):
        if number >= MIN_CALLS and time.monotonic() - began > seconds:
            break
        if prepare is not None:
            await prepare(number)
        start = time.perf_counter()
        await op(number)
        durations.append(1000 * (time.perf_counter() - start))
    return _figures(durations)


def repeat(
    work: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
) -> Callable[[int], Awaitable[Any]]:
    """An operation for ``timed`` that does the same call each time."""

    async def op(number: int) -> Any:
        return await work(*args, **kwargs)

    return op


def _io() -> dict[str, int]:
    """This process's bytes read and written through system calls (SQLite's page reads and
    writes, whether the OS serves them from its cache or the disk)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"read": int(fields["rchar"]), "written": int(fields["wchar"])}


# -- one session store at one size ---------------------------------------------------------------


class Stage:
    """One session store under measurement: its URL, its filled sessions, the fill store."""

    def __init__(self, name: str, url: str, prefix: str, tmp: Path, secret: str) -> None:
        self.name, self.url, self.prefix, self.tmp, self.secret = name, url, prefix, tmp, secret
        self.filled = Filled(f"{prefix}{name}")
        self.heavy = Filled(f"{prefix}{name}:heavy")
        self.extra = 0  # numbers of sessions made by measured sign-ins

    def settings(self) -> dict[str, Any]:
        return {
            "sessions.url": self.url,
            "sessions.key_prefix": self.prefix,
            "sessions.cache_size": 0,
            "sessions.touch_interval": 12 * 3600,
            "sessions.max_per_user": HEAVY,
            "users.url": f"sqlite:///{self.tmp}/users-{self.name}.db",
            "users.demo_users": False,
            "secrets.cookie_secret": self.secret,
            "logging.access_log": False,
            "logging.level": "warning",
        }

    def cookie(self, token: str) -> str:
        value = create_signed_value(self.secret, "session", token).decode()
        return f'session="{value}"'


async def dashboard_in_process(stage: Stage, services: Services, numbers: list[int]) -> Any:
    """The dashboard handed to the application, each request a different stored session."""
    app = make_app(services)

    async def request(number: int) -> None:
        headers = httputil.HTTPHeaders(
            {
                "Host": "127.0.0.1:8888",
                "User-Agent": common.USER_AGENT,
                "Accept": "*/*",
                "Cookie": stage.cookie(stage.filled.token(number)),
            }
        )
        connection: Any = _Connection()
        start = httputil.RequestStartLine("GET", "/api/dashboard", "HTTP/1.1")
        request = httputil.HTTPServerRequest(
            start_line=start, headers=headers, connection=connection
        )
        delegate = app.find_handler(request)
        delegate.execute()
        await connection.done
        status = delegate.handler.get_status()
        assert status == 200, f"dashboard answered {status}"

    return await timed(lambda i: request(numbers[i]), len(numbers), OP_SECONDS)


OP_SECONDS = FULL["op_seconds"]  # set from the parameters in main()


async def operations(
    stage: Stage, services: Services, store: SessionStore, args: argparse.Namespace
) -> dict[str, Any]:
    """Each request-path operation, one call at a time, on sessions picked at random."""
    rng = random.Random(stage.filled.made)
    filled, sessions = stage.filled, services.sessions
    raw = services.backend.store
    ops: dict[str, Any] = {}
    ops["dashboard"] = await dashboard_in_process(stage, services, filled.sample(args.ops, rng))

    signed: list[str] = []

    async def sign_in(i: int) -> None:
        stage.extra += 1
        session = sign_in_session(f"signin-{stage.extra}", stage.extra)
        await sessions.commit(session)
        assert session.key is not None
        signed.append(session.key)

    ops["signin"] = await timed(sign_in, args.ops, OP_SECONDS)
    for key in signed:  # back to the size measured
        await raw.delete(key)

    ended = filled.sample(args.ops, rng)

    async def log_out(i: int) -> None:
        session = await sessions.load(filled.token(ended[i]))
        assert session is not None
        session.destroy()
        await sessions.commit(session)
        filled.gone.add(ended[i])

    ops["logout"] = await timed(log_out, len(ended), OP_SECONDS)
    listed = filled.sample(args.ops, rng)

    async def list_sessions(i: int) -> None:
        assert len(await sessions.list_user(filled.user(listed[i]))) == 1

    ops["list_sessions"] = await timed(list_sessions, len(listed), OP_SECONDS)
    kept: dict[int, str] = {}

    async def three_sessions(i: int) -> None:  # a user signed in on three devices
        stage.extra += 1
        user = f"devices-{stage.extra}"
        for device in range(3):
            session = sign_in_session(user, stage.extra + device)
            await sessions.commit(session)
            assert session.key is not None
            kept[i] = session.key

    async def revoke_others(i: int) -> None:
        assert await sessions.revoke_user(f"devices-{stage.extra}", keep=kept[i]) == 2

    ops["revoke_others"] = await timed(revoke_others, args.ops, OP_SECONDS, three_sessions)
    for key in kept.values():
        await raw.delete(key)
    touched = filled.sample(args.ops, rng)

    async def touch(i: int) -> None:
        now = time.time()
        assert await sessions.store.update(filled.key(touched[i]), {}, set(), now, now + TTL)

    ops["touch"] = await timed(touch, len(touched), OP_SECONDS)
    return ops


async def sweep_and_count(stage: Stage, services: Services) -> dict[str, Any]:
    """One sweep run with nothing expired, and with EXPIRED expired records (its I/O for SQLite);
    the live count (the metrics take it every 5 s)."""
    store = services.backend.store
    figures: dict[str, Any] = {}
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        await store.sweep(time.time())
        runs.append(1000 * (time.perf_counter() - start))
    figures["sweep_idle_ms"] = round(statistics.median(runs), 3)
    runs, io = [], []
    for round_ in range(3):
        now = time.time()
        for number in range(EXPIRED):  # signed in a day and an hour ago, never seen since
            record = stage.heavy.record(10**9 + round_ * EXPIRED + number, now, ago=TTL + 3600)
            await store.create(record)
        before, start = _io(), time.perf_counter()
        removed = await store.sweep(time.time())
        runs.append(1000 * (time.perf_counter() - start))
        after = _io()
        io.append({name: after[name] - before[name] for name in after})
        if removed < EXPIRED and stage.name != "redis":  # Redis expires records by itself
            log(f"{stage.name}: the sweep removed {removed} of {EXPIRED} expired records")
    figures["sweep_expired_ms"] = round(statistics.median(runs), 3)
    if stage.name == "sqlite":
        figures["sweep_expired_io_kib"] = {
            name: round(statistics.median(run[name] for run in io) / 1024) for name in io[0]
        }
        figures["sweep_full_run"] = await sweep_full_run(stage, store)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        await store.count(time.time())
        runs.append(1000 * (time.perf_counter() - start))
    figures["count_ms"] = round(statistics.median(runs), 3)
    return figures


async def sweep_full_run(stage: Stage, store: SessionStore) -> dict[str, Any]:
    """SQLite's bound: one sweep run with more expired records than a run removes (it removes
    SWEEP_STEPS batches of SWEEP_BATCH, the rest go in the next run): time, records, pages."""
    bound = sqlite_sessions.SWEEP_STEPS * sqlite_sessions.SWEEP_BATCH
    now = time.time()
    numbers = range(2 * 10**9, 2 * 10**9 + bound + bound // 4)
    for start in range(0, len(numbers), 100):
        records = [stage.heavy.record(n, now, ago=TTL + 3600) for n in numbers[start : start + 100]]
        await asyncio.gather(*(store.create(record) for record in records))
    before, began = _io(), time.perf_counter()
    removed = await store.sweep(time.time())
    seconds = time.perf_counter() - began
    after = _io()
    rest = await store.sweep(time.time())
    return {
        "expired": len(numbers),
        "removed": removed,
        "rest_next_run": rest,
        "ms": round(1000 * seconds, 1),
        "pages_read": (after["read"] - before["read"]) // 4096,
        "pages_written": (after["written"] - before["written"]) // 4096,
    }


async def heavy_user(
    stage: Stage, services: Services, store: SessionStore, args: argparse.Namespace
) -> dict[str, Any]:
    """A user with HEAVY sessions: list-sessions, sign-in (the cap ends the oldest) and
    revoke-others for that user."""
    user, sessions, heavy = f"heavy-{stage.filled.made}", services.sessions, stage.heavy

    async def refill() -> None:
        now, start = time.time(), heavy.made
        numbers = range(start, start + HEAVY)
        heavy.made += HEAVY
        at_once = CONCURRENCY[stage.name]  # FerretDB cancels operations past a few at once
        for chunk in range(0, HEAVY, at_once):
            await asyncio.gather(
                *(
                    store.create(heavy.record(n, now, user_id=user, ago=3600))
                    for n in numbers[chunk : chunk + at_once]
                )
            )

    began = time.monotonic()
    await refill()
    figures: dict[str, Any] = {"made_s": round(time.monotonic() - began, 2)}

    async def list_sessions(i: int) -> None:
        assert len(await sessions.list_user(user)) == HEAVY

    figures["list_sessions"] = await timed(list_sessions, 20, OP_SECONDS)

    async def sign_in(i: int) -> None:
        stage.extra += 1
        await sessions.commit(sign_in_session(user, stage.extra))

    figures["signin"] = await timed(sign_in, 20, OP_SECONDS)
    runs = []
    rounds = 3 if 2 * figures["made_s"] < OP_SECONDS else 1  # each round makes them again
    for round_ in range(rounds):
        if round_:
            await sessions.revoke_user(user)
            await refill()
        kept = (await sessions.list_user(user))[0].key  # the newest (a sign-in ended some)
        start = time.perf_counter()
        revoked = await sessions.revoke_user(user, keep=kept)
        runs.append(1000 * (time.perf_counter() - start))
        assert revoked == HEAVY - 1, revoked
    figures["revoke_others"] = _figures(runs)
    await sessions.revoke_user(user)
    return figures


async def dashboard_wrk(stage: Stage, args: argparse.Namespace) -> dict[str, Any]:
    """``tornado-auth serve`` on the store: wrk rotating over distinct stored sessions."""
    rng = random.Random(stage.filled.made + 1)
    numbers = stage.filled.sample(args.cookies, rng)
    cookies = common.OUT / "scale" / f"cookies-{stage.name}.txt"
    cookies.parent.mkdir(parents=True, exist_ok=True)
    lines = (stage.cookie(stage.filled.token(number)) for number in numbers)
    cookies.write_text("\n".join(lines) + "\n")
    env = common.server_env(
        SERVER_SETTINGS
        | {
            "SESSIONS__URL": stage.url,
            "SESSIONS__KEY_PREFIX": stage.prefix,
            "USERS__URL": f"sqlite:///{stage.tmp}/server-users-{stage.name}.db",
            "SECRETS__COOKIE_SECRET": stage.secret,
        }
    )
    log_file = common.OUT / f"scale-{stage.name}.log"
    async with common.serve(env, log_file) as server:
        url = f"{server.url}/api/dashboard"
        await wrk(url, args.connections, 2, threads=1, cookies=str(cookies))  # warm up
        runs = []
        for _ in range(args.rounds):
            async with common.quiet(server.process.pid, args.settle) as load:
                figures = await wrk(
                    url, args.connections, args.seconds, threads=1, cookies=str(cookies)
                )
            if figures["non_2xx"]:
                raise RuntimeError(f"{stage.name}: {figures['non_2xx']} dashboard answers not 200")
            runs.append(figures | {"load": load})
    return {
        "cookies": len(numbers),
        "rps": round(statistics.median(run["rps"] for run in runs), 1),
        "p50_ms": statistics.median(run["latency_ms"]["p50"] for run in runs),
        "p99_ms": statistics.median(run["latency_ms"]["p99"] for run in runs),
        "cpu_us": round(
            statistics.median(1e6 * run["load"]["server_cores"] / run["rps"] for run in runs), 1
        ),
        "load_average": max(run["load"]["load_average"] for run in runs),
        "command": runs[0]["command"],
    }


@contextlib.asynccontextmanager
async def opened(stage: Stage) -> Any:
    services = await start_services(load_settings(environ={}, overrides=stage.settings()))
    try:
        yield services
    finally:
        await services.close()


async def session_store(
    stage: Stage,
    args: argparse.Namespace,
    out: dict[str, Any],
    save: Callable[[], None],
    kept: dict[str, Any] | None = None,
) -> None:
    """Fill one store size by size and measure it at each, within its fill budget; ``kept``:
    rows of sizes an earlier run measured and this one does not, kept among the new ones."""
    budget = args.budget[stage.name] * 60
    out.update(sizes=dict(kept or {}), notes=[])
    memory = stage.name == "memory"
    fill_started = time.monotonic()
    filled_for = 0.0  # seconds spent filling so far
    rate = None
    async with contextlib.AsyncExitStack() as stack:
        if memory:  # the records live in this process: one set of services throughout
            services = await stack.enter_async_context(opened(stage))
            store = services.backend.store
        else:
            backend = backend_for_url(stage.url, stage.prefix)
            await backend.start()
            stack.push_async_callback(backend.close)
            store = backend.store
        for size in args.sizes:
            left = budget - filled_for
            needed = size - stage.filled.live
            if rate and needed / rate > left:
                out["notes"].append(
                    f"{size:,} sessions not measured: filling {needed:,} more at {rate:,.0f}/s "
                    f"would take {needed / rate / 60:.0f} min, past the {args.budget[stage.name]} "
                    f"min budget"
                )
                log(f"{stage.name}: {out['notes'][-1]}")
                break
            began = time.monotonic()
            log(f"{stage.name}: filling to {size:,}")
            deadline = began + left
            made = await fill(
                store, stage.filled, stage.filled.made + needed, CONCURRENCY[stage.name], deadline
            )
            filled_for += time.monotonic() - began
            rate = made["per_s"] or rate
            if stage.filled.live < size:
                out["notes"].append(
                    f"filling stopped at {stage.filled.live:,} of {size:,} sessions when the "
                    f"{args.budget[stage.name]} min budget ran out ({made['per_s']}/s at the end); "
                    "that size is not measured"
                )
                log(f"{stage.name}: {out['notes'][-1]}")
                break
            row: dict[str, Any] = {"fill": made, "load_average_before": os.getloadavg()[0]}
            measured = time.monotonic()
            log(f"{stage.name} {size:,}: operations")
            if memory:
                row["ops"] = await operations(stage, services, store, args)
                row["store"] = await sweep_and_count(stage, services)
                row["heavy_user"] = await heavy_user(stage, services, store, args)
            else:
                async with opened(stage) as services:
                    row["ops"] = await operations(stage, services, store, args)
                    row["store"] = await sweep_and_count(stage, services)
                    row["heavy_user"] = await heavy_user(stage, services, store, args)
            # sessions signed out by the measurements are made again: the next size starts full
            await fill(
                store,
                stage.filled,
                stage.filled.made + size - stage.filled.live,
                CONCURRENCY[stage.name],
                time.monotonic() + 600,
            )
            if not memory:
                log(f"{stage.name} {size:,}: dashboard under wrk")
                row["wrk"] = await dashboard_wrk(stage, args)
            row["measure_s"] = round(time.monotonic() - measured, 1)
            row["load_average_after"] = os.getloadavg()[0]
            out["sizes"][str(size)] = row
            out["sizes"] = dict(sorted(out["sizes"].items(), key=lambda item: int(item[0])))
            shown = ", ".join(f"{op} {row['ops'][op]['p50_ms']:.2f}" for op in row["ops"])
            log(f"{stage.name} {size:,}: p50 ms {shown}; {row['store']}; {row.get('wrk', '')}")
            save()
    out["fill_minutes"] = round(filled_for / 60, 1)
    out["minutes"] = round((time.monotonic() - fill_started) / 60, 1)
    save()


# -- users and the audit trail -------------------------------------------------------------------


async def add_users(
    store: UserStore, start: int, upto: int, concurrency: int, deadline: float
) -> int:
    """Users ``start .. upto - 1`` (by number: id, email), ``concurrency`` at a time, until the
    deadline; how many there are then."""
    hashed = f"bcrypt-sha256${bcrypt.hashpw(b'bench', bcrypt.gensalt(4)).decode()}"  # the shape
    numbers = iter(range(start, upto))
    made = start

    async def worker() -> None:
        nonlocal made
        for number in numbers:
            if time.monotonic() > deadline:
                return
            await store.add(
                User(
                    id=f"{number:024x}",
                    email=f"user{number}@example.com",
                    name=f"User {number}",
                    role="user",
                    password_hash=hashed,
                    created_at=time.time(),
                )
            )
            made += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return made


async def add_entries(
    audit: Audit, start: int, upto: int, users: int, concurrency: int, deadline: float
) -> None:
    """Audit entries ``start .. upto - 1`` as sign-ins, sign-outs, failures and revocations of
    the users write them, half a second apart over the last days."""
    numbers = iter(range(start, upto))
    first_at = time.time() - upto * 0.5

    async def worker() -> None:
        for number in numbers:
            if time.monotonic() > deadline:
                return
            user = number % max(1, users)
            event = ("signin", "logout", "signin_failed", "sessions_revoked")[number % 4]
            entry = AuditEntry(
                event,
                at=first_at + number * 0.5,
                user_id=f"{user:024x}",
                email=f"user{user}@example.com",
                ip=f"100.64.{user >> 8 & 255}.{user & 255}",
                user_agent=USER_AGENTS[number % len(USER_AGENTS)],
                session=audit.session_hash(str(number)),
            )
            await audit.store.record(entry)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def user_operations(
    store: UserStore, audit: Audit, users: int, args: argparse.Namespace
) -> dict[str, Any]:
    """The users-store part of a sign-in (bcrypt apart) and the admin's user list by page."""
    rng = random.Random(users)
    picked = [rng.randrange(users) for _ in range(args.ops)]

    async def lookup(i: int) -> None:
        assert await store.by_email(f"user{picked[i]}@example.com") is not None

    async def sign_in(i: int) -> None:  # by email, the sign-in's time, the re-check, its entry
        user = await store.by_email(f"user{picked[i]}@example.com")
        assert user is not None
        signed = await store.set(
            user.id, expect_generation=user.generation, last_login_at=time.time()
        )
        assert signed is not None
        assert await store.get(user.id) is not None
        await audit.record(
            AuditEntry(
                "signin",
                user_id=user.id,
                email=user.email,
                ip="100.64.0.1",
                user_agent=common.USER_AGENT,
            )
        )

    row: dict[str, Any] = {
        "by_email": await timed(lookup, args.ops, OP_SECONDS),
        "signin": await timed(sign_in, args.ops, OP_SECONDS),
    }
    for where, offset in (("first", 0), ("middle", users // 2), ("last", users - PAGE)):
        row[f"page_{where}"] = await timed(repeat(store.page, offset, PAGE), 20, OP_SECONDS)
    return row


async def middle_cursor(store: UserStore, offset: int) -> str:
    """The cursor of the entry ``offset`` from the newest, found once (by position, untimed)
    to start a page by cursor in the middle of the trail."""
    if isinstance(store, SQLiteUserStore):
        sql = "SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?"
        row = await store.db.run(lambda connection: connection.execute(sql, (offset,)).fetchone())
        return str(row[0] + 1)
    assert isinstance(store, MongoUserStore)
    order = [("at", -1), ("_id", -1)]
    docs = await store.audit.find({}, {"at": 1}).sort(order).skip(offset).limit(1).to_list(None)
    return mongo_users._audit_cursor(docs[0])


async def audit_pages(store: UserStore, audit: Audit, entries: int) -> dict[str, Any]:
    """The admin's audit pages: first, middle and last by page number (with the total), and by
    cursor (the newest page, a page from the middle, the oldest page)."""
    pages = max(1, -(-entries // PAGE))
    row: dict[str, Any] = {}
    for where, page in (("first", 1), ("middle", pages // 2), ("last", pages)):
        offset = (page - 1) * PAGE
        row[f"page_{where}"] = await timed(repeat(audit.page, offset, PAGE), 20, OP_SECONDS)
    middle = await middle_cursor(store, entries // 2)
    for where, cursor in (
        ("first", {"before": ""}),
        ("middle", {"before": middle}),
        ("last", {"after": ""}),
    ):
        found = await audit.around(PAGE, **cursor)
        assert len(found.entries) == PAGE, (where, len(found.entries))
        row[f"cursor_{where}"] = await timed(repeat(audit.around, PAGE, **cursor), 20, OP_SECONDS)
    entry = AuditEntry("logout", ip="100.64.0.1", user_agent=common.USER_AGENT)
    row["record"] = await timed(repeat(audit.store.record, entry), 50, OP_SECONDS)
    return row


async def users_and_audit(
    name: str, url: str, args: argparse.Namespace, out: dict[str, Any], save: Callable[[], None]
) -> None:
    """The users-store part of a sign-in with many users; the admin's audit pages with a long
    trail; within the store's fill budget."""
    store: UserStore = store_for_url(url)
    await store.start()
    audit = Audit(store, b"s" * 32, Retention())  # no pruning: the trail keeps every entry
    out.update(users={}, audit={}, notes=[])
    deadline = time.monotonic() + args.budget[name] * 60
    made = [0]  # users stored

    async def users() -> None:
        for size in args.users:
            began = time.monotonic()
            made[0] = await add_users(store, made[0], size, CONCURRENCY[name], deadline)
            if made[0] < size:
                out["notes"].append(
                    f"users: filling stopped at {made[0]:,} of {size:,} when the "
                    f"{args.budget[name]} min budget ran out; that size is not measured"
                )
                log(f"users {name}: {out['notes'][-1]}")
                return
            fill_s = round(time.monotonic() - began, 1)
            log(f"users {name} {size:,}: made in {fill_s:.0f} s; measuring")
            out["users"][str(size)] = {"fill_s": fill_s} | await user_operations(
                store, audit, size, args
            )
            save()

    async def trail() -> None:
        for size in args.audit:
            began = time.monotonic()
            entries = (await store.audit_page(0, 1))[1]
            await add_entries(audit, entries, size, made[0], CONCURRENCY[name], deadline)
            entries = (await store.audit_page(0, 1))[1]
            if entries < size:
                out["notes"].append(
                    f"audit: filling stopped at {entries:,} of {size:,} entries when the "
                    f"{args.budget[name]} min budget ran out; that size is not measured"
                )
                log(f"audit {name}: {out['notes'][-1]}")
                return
            fill_s = round(time.monotonic() - began, 1)
            log(f"audit {name} {size:,}: made in {fill_s:.0f} s; measuring")
            out["audit"][str(size)] = {"fill_s": fill_s, "entries": entries} | await audit_pages(
                store, audit, entries
            )
            save()

    try:
        with failure_noted(out, f"{name} users", save, "users"):
            await users()
        with failure_noted(out, f"{name} audit", save, "audit"):
            await trail()
    finally:
        await store.close()


# -- the run -------------------------------------------------------------------------------------


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


@contextlib.contextmanager
def failure_noted(
    out: dict[str, Any], name: str, save: Callable[[], None], what: str = "sessions"
) -> Iterator[None]:
    """A part that fails keeps what it measured, says why it stopped, and the run goes on."""
    try:
        yield
    except Exception as error:
        traceback.print_exc()
        out.setdefault("notes", []).append(
            f"{what}: stopped by an error, the sizes after the last one shown not measured "
            f"({type(error).__name__}: {error})"
        )
        log(f"{name}: {out['notes'][-1]}")
        save()


def part(info: dict[str, Any], started: str) -> dict[str, Any]:
    """What a store's figures came from: the command and when it started, when the store's
    part started, the commit and the machine."""
    command = shlex.join([".venv/bin/python", "-m", "bench.scale", *sys.argv[1:]])
    if os.environ.get("MAKELEVEL"):
        given = shlex.join(sys.argv[1:])
        command = "make bench-scale" + (f" SCALE_ARGS={shlex.quote(given)}" if given else "")
    return {
        "command": command,
        "started": started,
        "date": now(),
        "commit": common.commit(),
        "environment": info,
    }


def earlier_rows(store: dict[str, Any] | None, sizes: list[int]) -> dict[str, Any]:
    """The rows of an earlier run of a store (``--merge``) at the sizes this run does not
    measure, each with the run it came from."""
    if not store:
        return {}
    return {
        size: {"run": store["run"]} | row
        for size, row in store.get("sizes", {}).items()
        if int(size) not in sizes
    }


async def run(
    args: argparse.Namespace,
    redis_port: int,
    mongo_port: int,
    target: Path,
    info: dict[str, Any],
    earlier: dict[str, Any] | None,
) -> dict[str, Any]:
    global OP_SECONDS
    OP_SECONDS = args.op_seconds
    await check_like_sign_in()
    run_id = secrets.token_hex(4)
    results = earlier or {"stores": {}, "users": {}}
    started = now()
    params = {name: value for name, value in vars(args).items() if name != "json"}
    results |= part(info, started) | {"params": params}
    began = time.monotonic()

    def save() -> None:
        results["minutes"] = round((time.monotonic() - began) / 60, 1)
        common.write_json(target, results)

    urls = {
        "memory": "memory://",
        "redis": f"redis://127.0.0.1:{redis_port}/0",
        "mongodb": f"mongodb://127.0.0.1:{mongo_port}/ta_scale_{run_id}",
    }
    with tempfile.TemporaryDirectory(prefix="ta-scale-") as tmp:
        urls["sqlite"] = f"sqlite:///{tmp}/sessions.db"
        secret = secrets.token_urlsafe(48)
        for name in args.stores:
            stage = Stage(name, urls[name], f"scale:{run_id}:", Path(tmp), secret)
            kept = earlier_rows(results["stores"].get(name), args.sizes)
            results["stores"][name] = {"run": part(info, started)}
            with failure_noted(results["stores"][name], name, save):
                await session_store(stage, args, results["stores"][name], save, kept)
        users = {
            "sqlite": f"sqlite:///{tmp}/users-scale.db",
            "mongodb": f"mongodb://127.0.0.1:{mongo_port}/ta_scale_users_{run_id}",
        }
        for name in args.user_stores:
            results["users"][name] = {"run": part(info, started)}
            with failure_noted(results["users"][name], name, save):
                await users_and_audit(name, users[name], args, results["users"][name], save)
    save()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^3 and 10^4, short runs")
    parser.add_argument("--stores", help="session stores, comma-separated (none: empty)")
    parser.add_argument("--user-stores", help="users stores, comma-separated (none: empty)")
    parser.add_argument("--sizes", help="session counts, comma-separated")
    parser.add_argument("--users", help="user counts, comma-separated")
    parser.add_argument("--audit", help="audit trail lengths, comma-separated")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the figures of the stores and sizes this run does not measure",
    )
    parser.add_argument("--json", type=Path, help="the figures' file")
    options = parser.parse_args()
    args = argparse.Namespace(**(QUICK if options.quick else FULL))
    for name in ("stores", "user_stores"):
        if getattr(options, name) is not None:
            setattr(args, name, [s for s in getattr(options, name).split(",") if s])
    for name in ("sizes", "users", "audit"):
        if getattr(options, name) is not None:
            setattr(args, name, [int(float(s)) for s in getattr(options, name).split(",") if s])
    default = (common.OUT / "quick" if options.quick else report.RESULTS) / "scale.json"
    target = options.json or default
    with contextlib.ExitStack() as stack:
        if common.REDIS_URL and common.MONGO_URL:  # servers given, to fill and leave behind
            redis_port = int(common.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
            mongo_port = int(common.MONGO_URL.rsplit(":", 1)[1].split("/")[0])
        else:
            redis_port, mongo_port = stack.enter_context(private_services())
        info = environment(redis_port, mongo_port)
        # with --merge, the figures of the stores and sizes this run does not measure stay
        earlier = json.loads(target.read_text()) if options.merge and target.exists() else None
        results = asyncio.run(run(args, redis_port, mongo_port, target, info, earlier))
    chart = target.with_suffix(".svg")
    chart.write_text(report.scale_chart(results))
    written = f"{report.write()} and " if target.parent == report.RESULTS else ""
    print(f"wrote {written}{target} and {chart}")


if __name__ == "__main__":
    main()
