"""Session stores through ``start_services``: each operation's latency; Redis bytes per session.

    .venv/bin/python -m bench.sessions [--ops 2000] [--sessions 10000] [--json F]

Per store (cache off, every touch writes), one call at a time: ``load``, ``touch`` (load and
commit), ``save`` (load, one change, commit), ``create`` (a sign-in), then ``load`` and ``touch``
again on the filled store (``*_full``). Then Redis memory of ``--sessions`` sign-ins.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import _common as common

STORES = ("memory", "sqlite", "redis", "mongodb")
OPS = ("load", "touch", "save", "create", "load_full", "touch_full")
NO_CACHE = {"sessions.cache_size": 0, "sessions.touch_interval": 0}  # every touch writes
CONNECT_REDIS_BYTES = 280  # the reference: express-session + connect-redis, per login session


async def timed(op: Callable[[int], Awaitable[Any]], count: int) -> dict[str, float]:
    """Latencies of ``count`` calls of ``op``, one at a time, after ``count // 10`` untimed."""
    for number in range(count // 10):
        await op(number)
    durations = []
    for number in range(count):
        start = time.perf_counter()
        await op(number)
        durations.append(time.perf_counter() - start)
    return common.summarize(durations)


async def store_ops(url: str, prefix: str, tmp: str, count: int) -> dict[str, Any]:
    services = await common.app_services(url, prefix, tmp, NO_CACHE)
    sessions = services.sessions
    try:
        change = await sessions.commit(common.login_session(0))
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
            await sessions.commit(common.login_session(number))

        ops = (load, touch, save, create, load, touch)
        return {name: await timed(op, count) for name, op in zip(OPS, ops, strict=True)}
    finally:
        await services.close()


async def redis_memory(count: int, prefix: str, tmp: str) -> dict[str, Any]:
    """Memory of ``count`` sign-ins of distinct users, created one at a time."""
    services = await common.app_services(common.REDIS_URL, prefix, tmp, NO_CACHE)
    client = aioredis.from_url(common.REDIS_URL, decode_responses=True)
    try:
        await services.sessions.commit(common.login_session(-1))  # connections, scripts, live index
        before = int((await client.info("memory"))["used_memory"])
        for number in range(count):
            await services.sessions.commit(common.login_session(number))
        after = int((await client.info("memory"))["used_memory"])
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
                pipe.memory_usage(key, samples=0)
            found = await pipe.execute()
        by_type: Counter[str] = Counter()
        for kind, size in zip(found[0::2], found[1::2], strict=True):
            by_type[kind] += size / (count + 1)
        return {
            "sessions": count,
            "info_bytes_per_session": (after - before) / count,
            "memory_usage_bytes_per_session": sum(by_type.values()),
            "memory_usage_by_type": dict(by_type),  # string: the session; zset: the indexes
            "reference_bytes": CONNECT_REDIS_BYTES,
        }
    finally:
        await services.close()
        await client.aclose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    run = common.tag()
    prefix, database = f"bench:{run}:", f"ta_bench_{run}"
    results: dict[str, Any] = {"command": common.command_line(), "stores": {}, "cpu": {}}
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as tmp:
        urls = {
            "memory": "memory://",
            "sqlite": f"sqlite:///{tmp}/sessions.db",
            "redis": common.REDIS_URL,
            "mongodb": f"{common.MONGO_URL}/{database}",
        }
        try:
            for name in args.stores.split(","):
                print(f"sessions: {name}", flush=True)
                results["cpu"][name] = {"settled_s": await common.settle()}
                cpu = common.Cpu(common.tested_pids())
                results["stores"][name] = await store_ops(urls[name], prefix, tmp, args.ops)
                results["cpu"][name] |= cpu.cores()
            if args.sessions:
                print(f"sessions: Redis memory of {args.sessions} sign-ins", flush=True)
                results["redis_memory"] = await redis_memory(args.sessions, f"{prefix}mem:", tmp)
        finally:
            await common.clean_up(prefix, [database])
    for name, ops in results["stores"].items():
        print(f"  {name:8} " + "  ".join(f"{op} {row['p50_ms']:.3f}" for op, row in ops.items()))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="timed calls per operation")
    parser.add_argument("--sessions", type=int, default=10_000, help="for Redis memory; 0 skips")
    parser.add_argument("--stores", default=",".join(STORES), help="a comma-separated subset")
    parser.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    arguments = parser.parse_args()
    common.write_json(arguments.json, asyncio.run(main(arguments)))
