"""Session stores through the public API: each operation's latency, and Redis memory per session.

    .venv/bin/python -m bench.sessions [--ops 2000] [--warmup 200] [--sessions 10000] [--json F]

Each store (memory; sqlite in a temp dir; redis under a unique key prefix; mongodb in a unique
database) is opened with ``start_services``, as an app does, with the per-process cache off and a
touch interval of 0 (every touch writes), and driven through ``services.sessions``: ``load`` (a
session by its token), ``touch`` (a load, then a commit that moves the expiry), ``save`` (a load,
one changed key, a commit) and ``create`` (a sign-in: a new logged-in ``Session`` committed),
each timed one at a time after a warm-up, on a new empty store; then ``load`` and ``touch`` again
on the store the creates filled (``load_full``, ``touch_full``). Each store's run waits for a
quiet machine and is repeated, on another new store, when other processes took CPU meanwhile.

Then Redis memory per session: N sign-ins of distinct users, measured as the growth of ``INFO
memory`` used_memory and as the sum of ``MEMORY USAGE`` over the keys they added, told apart by
their type: the session (a string), the user's index and the live index (sorted sets).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench._common import (
    MONGO_URL,
    REDIS_URL,
    USER_AGENT,
    CpuMeter,
    drop_database,
    login_session,
    measured,
    remove_prefix,
    summarize,
    tag,
    write_json,
)
from tornado_auth import Services, load_settings, start_services

# "*_full": again, with the 1 + warmup + count sessions the creates left in the store.
OPS = ("load", "touch", "save", "create", "load_full", "touch_full")
REFERENCE_CONNECT_REDIS = 280  # bytes per login session: express-session + connect-redis


async def opened(url: str, prefix: str, tmp: Path) -> Services:
    """The services of an app whose sessions are at ``url``, under ``prefix``."""
    settings = load_settings(
        environ={},
        overrides={
            "sessions.url": url,
            "sessions.key_prefix": prefix,
            "sessions.cache_size": 0,
            "sessions.touch_interval": 0,
            "users.url": f"sqlite:///{tmp}/users.db",
            "users.demo_users": False,
            "secrets.secret_file": f"{tmp}/cookie_secret",
            "logging.access_log": False,
        },
    )
    return await start_services(settings)


async def timed(op: Callable[[int], Awaitable[Any]], count: int, warmup: int) -> dict[str, float]:
    """Latency statistics of ``count`` calls of ``op``, one at a time, after ``warmup`` calls."""
    for number in range(warmup):
        await op(number)
    durations = []
    for number in range(count):
        start = time.perf_counter()
        await op(number)
        durations.append(time.perf_counter() - start)
    return summarize(durations)


async def bench_backend(url: str, prefix: str, tmp: Path, count: int, warmup: int) -> dict:
    """Every operation on a new, empty store, then ``load`` and touch again once the creates
    filled it."""
    services = await opened(url, prefix, tmp)
    sessions = services.sessions
    try:
        change = await sessions.commit(login_session(0))
        assert change is not None and change.token is not None
        token = change.token

        async def load(number: int) -> None:
            assert await sessions.load(token) is not None

        async def touch(number: int) -> None:
            session = await sessions.load(token)
            assert session is not None
            await sessions.commit(session)

        async def save(number: int) -> None:
            session = await sessions.load(token)
            assert session is not None
            session["counter"] = number
            await sessions.commit(session)

        async def create(number: int) -> None:
            await sessions.commit(login_session(number))

        ops = {}
        for name, op in zip(OPS, (load, touch, save, create, load, touch), strict=True):
            ops[name] = await timed(op, count, warmup)
        return ops
    finally:
        await services.close()


async def redis_info_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def redis_memory(count: int, prefix: str, tmp: Path) -> dict[str, Any]:
    """Memory of ``count`` sign-ins of distinct users, one connection, created one at a time."""
    services = await opened(REDIS_URL, prefix, tmp)
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        # connections, scripts and the live index exist before the measurement
        await services.sessions.commit(login_session(-1))
        keys_before = await client.dbsize()
        used_before = await redis_info_memory(client)
        for number in range(count):
            await services.sessions.commit(login_session(number))
        used_after = await redis_info_memory(client)
        keys_after = await client.dbsize()
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
                pipe.memory_usage(key, samples=0)
                pipe.object("encoding", key)
            found = await pipe.execute()
        kinds = dict(zip(keys, found[0::3], strict=True))
        sizes = dict(zip(keys, found[1::3], strict=True))
        encodings = dict(zip(keys, found[2::3], strict=True))
        strings = [key for key in keys if kinds[key] == "string"]
        indexes = [key for key in keys if kinds[key] == "zset"]
        async with client.pipeline(transaction=False) as pipe:
            for key in indexes:
                pipe.zcard(key)
            cards = await pipe.execute()
        live = indexes[cards.index(max(cards))]  # every session's entry: the largest sorted set
        users = [key for key in indexes if key != live]
        groups = {"session": strings, "user_index": users, "live": [live]}
        per = {
            name: sum(sizes[key] for key in group) / (count + 1) for name, group in groups.items()
        }
        return {
            "sessions": count,
            "user_agent_chars": len(USER_AGENT),
            "info_used_memory_before": used_before,
            "info_used_memory_after": used_after,
            "info_bytes_per_session": (used_after - used_before) / count,
            "dbsize_delta": keys_after - keys_before,
            "dbsize_expected": 2 * count,
            "memory_usage_session_per_session": per["session"],
            "session_value_bytes": len((await client.get(strings[0])).encode()),
            "memory_usage_user_index_per_session": per["user_index"],
            "memory_usage_live_index_per_session": per["live"],
            "memory_usage_bytes_per_session": sum(per.values()),
            "session_encoding": encodings[strings[0]],
            "user_index_encoding": encodings[users[0]],
            "live_index_encoding": encodings[live],
            "other_keys": len(keys) - len(strings) - len(indexes),
            "reference_connect_redis_bytes": REFERENCE_CONNECT_REDIS,
        }
    finally:
        await services.close()
        await client.aclose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    run = tag()
    prefix, databases = f"bench:{run}:", []
    results: dict[str, Any] = {
        "params": {"ops": args.ops, "warmup": args.warmup, "sessions": args.sessions},
        "backends": {},
        "cpu": {},
    }
    meter = CpuMeter()
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as tmp:
        stores = itertools.count()

        def fresh(kind: str) -> tuple[str, str]:
            """The URL and key prefix of a new, empty store: every attempt gets its own."""
            number = next(stores)
            if kind == "mongodb":
                databases.append(f"ta_bench_{run}_{number}")
            url = {
                "memory": "memory://",
                "sqlite": f"sqlite:///{Path(tmp) / f'sessions{number}.db'}",
                "redis": REDIS_URL,
                "mongodb": f"{MONGO_URL}/{databases[-1] if databases else ''}",
            }[kind]
            return url, f"{prefix}{number}:"

        async def attempt(kind: str) -> dict[str, Any]:
            return await bench_backend(*fresh(kind), Path(tmp), args.ops, args.warmup)

        try:
            for name in args.backends:
                print(f"sessions: {name} ...", flush=True)
                work = functools.partial(attempt, name)
                results["backends"][name], results["cpu"][name] = await measured(work, meter)
            if args.sessions:
                print(f"sessions: redis memory of {args.sessions} sign-ins ...", flush=True)
                memory_prefix = f"{prefix}mem:"
                results["redis_memory"] = await redis_memory(
                    args.sessions, memory_prefix, Path(tmp)
                )
        finally:
            results["cleanup"] = {"redis_keys_removed": await remove_prefix(prefix)}
            for database in databases:
                await drop_database(database)
    return results


def report(results: dict[str, Any]) -> None:
    print(f"{'backend':8} {'op':10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'ops/s':>8}")
    for name, ops in results["backends"].items():
        for op, row in ops.items():
            print(
                f"{name:8} {op:10} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
                f"{row['mean_ms']:8.3f} {row['ops_per_s']:8.0f}"
            )
    memory = results.get("redis_memory")
    if memory:
        print(
            f"redis bytes per session: INFO {memory['info_bytes_per_session']:.0f}, "
            f"MEMORY USAGE {memory['memory_usage_bytes_per_session']:.0f} "
            f"(reference connect-redis: {REFERENCE_CONNECT_REDIS})"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="timed operations per verb")
    parser.add_argument("--warmup", type=int, default=200, help="untimed operations first")
    parser.add_argument("--sessions", type=int, default=10_000, help="for Redis memory; 0 skips")
    parser.add_argument(
        "--backends",
        type=lambda text: text.split(","),
        default=["memory", "sqlite", "redis", "mongodb"],
        help="comma-separated subset of memory,sqlite,redis,mongodb",
    )
    parser.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    outcome = asyncio.run(main(arguments))
    report(outcome)
    write_json(arguments.json, outcome)
