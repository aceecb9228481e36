"""Redis memory per signed-in session, its indexes included, as the store grows to a million:
used_memory growth and MEMORY USAGE by kind of key (see bench/README.md).

    .venv/bin/python -m bench.redis_memory [--quick] --json F

Sessions are made through the public API as sign-ins make them (a distinct user each, the
sign-in's data, an IP address and a browser's User-Agent), on a private Redis the run empties
first: every key there is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

import redis.asyncio as aioredis

from bench import _common as common
from tornado_auth import load_settings, start_services

FULL = {"sizes": [1_000, 10_000, 100_000, 1_000_000]}
QUICK = {"sizes": [1_000, 10_000]}
AT_ONCE = 500  # sign-ins in flight
CONNECT_REDIS_BYTES = 280  # the reference: express-session + connect-redis, per login session


async def by_kind(client: aioredis.Redis, prefix: str) -> dict[str, dict[str, int]]:
    """Keys and MEMORY USAGE bytes by kind (what follows the prefix, up to the next colon)."""
    kinds: dict[str, dict[str, int]] = {}
    batch: list[bytes] = []

    async def measure() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            usages = await pipe.execute()
        for key, usage in zip(batch, usages, strict=True):
            kind = key[len(prefix) :].split(b":")[0].decode()  # session names are binary
            entry = kinds.setdefault(kind, {"keys": 0, "bytes": 0})
            entry["keys"] += 1
            entry["bytes"] += usage or 0
        batch.clear()

    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            await measure()
    await measure()
    return kinds


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as tmp:
        return await fill_and_measure(tmp, args.sizes)


async def fill_and_measure(tmp: str, sizes: list[int]) -> dict[str, Any]:
    """Sign-ins up to each size, and the memory they take."""
    prefix = "ta:"
    async with aioredis.from_url(common.REDIS_URL) as client:
        await client.flushdb()
        settings = {"sessions.url": common.REDIS_URL, "sessions.key_prefix": prefix,
                    "sessions.cache_size": 0, "users.url": f"sqlite:///{tmp}/users.db",
                    "users.demo_users": False, "secrets.secret_file": f"{tmp}/cookie_secret",
                    "logging.access_log": False}  # fmt: skip
        services = await start_services(load_settings(environ={}, overrides=settings))
        manager = services.sessions
        try:
            await manager.commit(common.login_session(-1))  # connections, scripts, User-Agent
            base = int((await client.info("memory"))["used_memory"])
            made, rows, began = 0, [], time.monotonic()
            for size in sizes:
                while made < size:
                    batch = range(made, min(size, made + AT_ONCE))
                    await asyncio.gather(*(manager.commit(common.login_session(n)) for n in batch))
                    made += len(batch)
                memory = await client.info("memory")
                used = int(memory["used_memory"])
                kinds = await by_kind(client, prefix)
                total = sum(kind["bytes"] for kind in kinds.values())
                row = {
                    "sessions": size,
                    "used_memory_bytes_per_session": round((used - base) / size, 1),
                    "memory_usage_bytes_per_session": round(total / size, 1),
                    # what the filler's own connections hold in Redis then (in used_memory)
                    "clients_bytes": int(memory.get("mem_clients_normal", 0)),
                    "by_kind": {
                        name: kind | {"bytes_per_session": round(kind["bytes"] / size, 1)}
                        for name, kind in sorted(kinds.items())
                    },
                    "fill_s": round(time.monotonic() - began, 1),
                }
                print(f"redis_memory: {row}", flush=True)
                rows.append(row)
        finally:
            await services.close()
        await client.flushdb()
    return {
        "command": common.command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": common.commit(),
        "reference_bytes": CONNECT_REDIS_BYTES,
        "sizes": rows,
    }


if __name__ == "__main__":
    common.cli(__doc__, main, FULL, QUICK)
