"""Session backends: latency of each storage verb, and Redis memory per login session.

    .venv/bin/python -m bench.sessions [--ops 2000] [--warmup 200] [--sessions 10000] [--json F]

For memory, sqlite (a temp dir), redis (a unique key prefix, removed afterwards) and mongodb (a
unique database, dropped afterwards): ``load``, a touch (no data change, expiry moved), a save
(one changed data key) and a create (a sign-in: SessionManager.commit of a new logged-in
Session), each timed one at a time, sequentially, after a warm-up, on a new empty store; then
``load`` and the touch again on the store the creates filled (``load_full``, ``touch_full``).
Each backend's run waits for a quiet machine and is repeated, on another new store, when other
processes took CPU meanwhile.

Then Redis memory per session: N sign-ins of distinct users, measured as the growth of
``INFO memory`` used_memory and as the sum of ``MEMORY USAGE`` over the session string, the user's
index and the session's share of the live index.
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
    LIFETIME,
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
from tornado_auth.sessions import SessionManager, backend_for_url
from tornado_auth.sessions.redis import RedisSessionBackend

# "*_full": again, with the 1 + warmup + count sessions the creates left in the store.
OPS = ("load", "touch", "save", "create", "load_full", "touch_full")
REFERENCE_CONNECT_REDIS = 280  # bytes per login session: express-session + connect-redis


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


async def bench_backend(url: str, prefix: str, count: int, warmup: int) -> dict[str, Any]:
    """Every operation on a new, empty store, then ``load`` and touch again once the creates
    filled it."""
    backend = backend_for_url(url, prefix)
    await backend.start()
    manager = SessionManager(backend, LIFETIME)
    try:
        first = login_session(0)
        await manager.commit(first)
        key = first.key
        assert key is not None

        async def load(number: int) -> None:
            assert await backend.load(key) is not None

        async def touch(number: int) -> None:
            now = time.time()
            assert await backend.update(key, {}, set(), now, now + LIFETIME.ttl)

        async def save(number: int) -> None:
            now = time.time()
            assert await backend.update(key, {"counter": number}, set(), now, now + LIFETIME.ttl)

        async def create(number: int) -> None:
            await manager.commit(login_session(number))

        ops = {}
        for name, op in zip(OPS, (load, touch, save, create, load, touch), strict=True):
            ops[name] = await timed(op, count, warmup)
        return ops
    finally:
        await backend.close()


async def redis_info_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def redis_memory(count: int, prefix: str) -> dict[str, Any]:
    """Memory of ``count`` sign-ins of distinct users, one connection, created one at a time."""
    backend = RedisSessionBackend(REDIS_URL, prefix)
    await backend.start()
    manager = SessionManager(backend, LIFETIME)
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        await manager.commit(login_session(-1))  # connections, scripts and the live index exist
        keys_before = await client.dbsize()
        used_before = await redis_info_memory(client)
        created = []
        for number in range(count):
            session = login_session(number)
            await manager.commit(session)
            created.append((session.key, session.user_id))
        used_after = await redis_info_memory(client)
        keys_after = await client.dbsize()

        async with client.pipeline(transaction=False) as pipe:
            for key, user_id in created:
                pipe.memory_usage(backend.session_key(key), samples=0)
                pipe.memory_usage(backend.user_key(user_id), samples=0)
            sizes = await pipe.execute()
        live_total = await client.memory_usage(backend.live_key, samples=0)
        strings, indexes = sum(sizes[0::2]), sum(sizes[1::2])
        sample_key, sample_user = created[0]
        stored = await client.get(backend.session_key(sample_key))
        return {
            "sessions": count,
            "user_agent_chars": len(USER_AGENT),
            "info_used_memory_before": used_before,
            "info_used_memory_after": used_after,
            "info_bytes_per_session": (used_after - used_before) / count,
            "dbsize_delta": keys_after - keys_before,
            "dbsize_expected": 2 * count,
            "memory_usage_session_per_session": strings / count,
            "session_value_bytes": len(stored.encode()),
            "memory_usage_user_index_per_session": indexes / count,
            "memory_usage_live_index_per_session": live_total / (count + 1),
            "memory_usage_bytes_per_session": (strings + indexes) / count
            + live_total / (count + 1),
            "session_encoding": await client.object("encoding", backend.session_key(sample_key)),
            "user_index_encoding": await client.object("encoding", backend.user_key(sample_user)),
            "live_index_encoding": await client.object("encoding", backend.live_key),
            "reference_connect_redis_bytes": REFERENCE_CONNECT_REDIS,
        }
    finally:
        await backend.close()
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
            return await bench_backend(*fresh(kind), args.ops, args.warmup)

        try:
            for name in args.backends:
                print(f"sessions: {name} ...", flush=True)
                work = functools.partial(attempt, name)
                results["backends"][name], results["cpu"][name] = await measured(work, meter)
            if args.sessions:
                print(f"sessions: redis memory of {args.sessions} sign-ins ...", flush=True)
                results["redis_memory"] = await redis_memory(args.sessions, f"{prefix}mem:")
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
