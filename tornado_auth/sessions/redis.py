"""Sessions in Redis: one hash per session, expired by Redis itself, and a sorted set per user.

Every command touches a single key (or the keys of one hash slot), so the layout works unchanged
on Redis Cluster: the session hash and the user index are written by separate commands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreUnavailable
from .base import SessionBackend, SessionRecord

log = logging.getLogger("tornado_auth.sessions")
# Hash fields: short names, because they are repeated in every session of a large store.
FIELDS = {
    "c": "created_at",
    "l": "last_seen_at",
    "e": "expires_at",
    "a": "absolute_expires_at",
    "t": "ttl",
}
DATA_PREFIX = "d:"

# Update only a live session: a session revoked meanwhile is never recreated.
UPDATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local removed = tonumber(ARGV[4])
local fields = {'l', ARGV[1], 'e', ARGV[2]}
for i = 5 + removed, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if removed > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 5, 4 + removed)) end
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
"""
# Delete a session and return its user id, so its index entry can be removed.
DELETE_SCRIPT = """
local user = redis.call('HGET', KEYS[1], 'u')
if redis.call('DEL', KEYS[1]) == 0 then return false end
return user or ''
"""


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@asynccontextmanager
async def _available() -> AsyncIterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise StoreUnavailable("session", f"redis: {error}") from error


class RedisSessionBackend(SessionBackend):
    name = "redis"
    shared_events = True  # through pub/sub, to every process
    cacheable = True

    def __init__(self, url: str, prefix: str = "ta:") -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.client: aioredis.Redis | None = None
        self.live_key = f"{prefix}live"  # every live session, scored by its expiry
        self.channel = f"{prefix}events"
        self._listener: asyncio.Task[None] | None = None
        self.events_connected = asyncio.Event()  # set while the pub/sub subscription is up

    @property
    def events_live(self) -> bool:
        return self.events_connected.is_set()

    async def start(self) -> None:
        self.client = aioredis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        self._update = self.client.register_script(UPDATE_SCRIPT)
        self._delete = self.client.register_script(DELETE_SCRIPT)

    def session_key(self, key: str) -> str:
        return f"{self.prefix}s:{key}"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    async def load(self, key: str) -> SessionRecord | None:
        async with _available():
            fields = await self.client.hgetall(self.session_key(key))
        return self._record(key, fields) if fields else None

    def _record(self, key: str, fields: dict[str, str]) -> SessionRecord:
        data = {
            name[len(DATA_PREFIX) :]: json.loads(value)
            for name, value in fields.items()
            if name.startswith(DATA_PREFIX)
        }
        times = {attr: float(fields[name]) for name, attr in FIELDS.items()}
        return SessionRecord(
            key=key,
            user_id=fields.get("u") or None,
            ip=fields.get("ip", ""),
            user_agent=fields.get("ua", ""),
            data=data,
            **times,
        )

    async def create(self, record: SessionRecord) -> None:
        self.writes += 1
        mapping: dict[str, Any] = {name: getattr(record, attr) for name, attr in FIELDS.items()}
        mapping.update(ip=record.ip, ua=record.user_agent)
        if record.user_id is not None:
            mapping["u"] = record.user_id
        for name, value in record.data.items():
            mapping[DATA_PREFIX + name] = json.dumps(value, separators=(",", ":"))
        key = self.session_key(record.key)
        async with _available():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=mapping)
                pipe.pexpireat(key, _ms(record.expires_at))
                await pipe.execute()
            await self.client.zadd(self.live_key, {record.key: record.expires_at})
            if record.user_id is not None:
                await self._index(record.user_id, record.key, record.absolute_expires_at)

    async def _index(self, user_id: str, key: str, until: float) -> None:
        index = self.user_key(user_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(index, {key: until})
            pipe.pexpireat(index, _ms(until), nx=True)
            pipe.pexpireat(index, _ms(until), gt=True)
            await pipe.execute()

    async def update(
        self,
        key: str,
        changed: dict[str, Any],
        removed: set[str],
        last_seen_at: float,
        expires_at: float,
    ) -> bool:
        self.writes += 1
        args: list[Any] = [last_seen_at, expires_at, _ms(expires_at), len(removed)]
        args += [DATA_PREFIX + name for name in removed]
        for name, value in changed.items():
            args += [DATA_PREFIX + name, json.dumps(value, separators=(",", ":"))]
        async with _available():
            if not await self._update(keys=[self.session_key(key)], args=args):
                return False
            await self.client.zadd(self.live_key, {key: expires_at}, xx=True)
        return True

    async def delete(self, key: str) -> bool:
        self.writes += 1
        async with _available():
            user_id = await self._delete(keys=[self.session_key(key)])
            await self.client.zrem(self.live_key, key)
            if user_id:
                await self.client.zrem(self.user_key(user_id), key)
        return user_id is not None

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        index = self.user_key(user_id)
        async with _available():
            await self.client.zremrangebyscore(index, "-inf", f"({time.time()}")
            keys = await self.client.zrange(index, 0, -1)
            if not keys:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(self.session_key(key))
                rows = await pipe.execute()
            gone = [key for key, fields in zip(keys, rows, strict=True) if not fields]
            if gone:
                await self.client.zrem(index, *gone)
        return [self._record(key, fields) for key, fields in zip(keys, rows, strict=True) if fields]

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        self.writes += 1
        index = self.user_key(user_id)
        async with _available():
            keys = [key for key in await self.client.zrange(index, 0, -1) if key != keep]
            if not keys:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.delete(self.session_key(key))
                deleted = await pipe.execute()
            await self.client.zrem(index, *keys)
            await self.client.zrem(self.live_key, *keys)
        return [key for key, count in zip(keys, deleted, strict=True) if count]

    async def sweep(self, now: float) -> int:
        return 0  # Redis expires session hashes by their TTL

    async def count(self, now: float) -> int:
        async with _available():
            await self.client.zremrangebyscore(self.live_key, "-inf", now)
            return await self.client.zcard(self.live_key)

    def counter_key(self, name: str) -> str:
        return f"{self.prefix}c:{name}"

    async def hit(self, name: str, window: float, now: float) -> tuple[int, float]:
        key = self.counter_key(name)
        async with _available(), self.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, _ms(window), nx=True)
            pipe.pttl(key)
            count, _, ttl = await pipe.execute()
        return count, now + max(ttl, 0) / 1000

    async def peek(self, name: str, now: float) -> tuple[int, float]:
        key = self.counter_key(name)
        async with _available(), self.client.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            count, ttl = await pipe.execute()
        return (int(count), now + ttl / 1000) if count and ttl > 0 else (0, now)

    async def clear(self, name: str) -> None:
        async with _available():
            await self.client.delete(self.counter_key(name))

    async def publish(self, event: dict[str, Any]) -> None:
        async with _available():
            await self.client.publish(self.channel, json.dumps(event))

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        super().subscribe(callback)
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        """Deliver the channel's events; after a lost connection, resubscribe and say so."""
        connected_before = False
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if connected_before:
                    self._deliver({"type": "resync"})  # events may have been missed
                connected_before = True
                self.events_connected.set()
                async for message in pubsub.listen():
                    self._deliver(json.loads(message["data"]))
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                self.events_connected.clear()
                log.warning("session events: redis unavailable (%s); retrying", error)
                await asyncio.sleep(1)
            finally:
                await pubsub.aclose()

    async def ping(self) -> None:
        async with _available():
            await self.client.ping()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
        if self.client is not None:
            await self.client.aclose()
