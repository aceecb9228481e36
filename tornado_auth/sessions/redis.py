"""Sessions in Redis: one JSON string per session, expired by Redis itself, and a sorted set per
user.

A session is one compact string rather than a hash: a hash holding a browser's User-Agent (longer
than ``hash-max-listpack-value``, 64 bytes) takes Redis's hashtable encoding, about twice the
memory. Updates run as a Lua script that changes only the fields it is given, so concurrent
writers of different data keys never lose each other's writes. Times are kept as the strings
Python wrote and data values as their own JSON, so the script's cjson never rounds or retypes
them.

Every command touches a single key (or the keys of one hash slot), so the layout works unchanged
on Redis Cluster: the session and the user index are written by separate commands.

URLs: ``redis://`` and ``rediss://`` name one server; ``redis+cluster://host:port,host:port`` a
Redis Cluster (any reachable nodes; the client discovers the rest); and
``redis+sentinel://host:port,host:port/<master-name>[/<db>]`` the master that Redis Sentinel
reports, followed through failovers. Both take ``user:password@`` before the nodes (for the Redis
servers, not the sentinels) and ``?socket_timeout=&socket_connect_timeout=`` in seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterError,
    CrossSlotTransactionError,
    InvalidPipelineStack,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreUnavailable
from .pipelined import PipelinedConnection, RedisUnavailable, ReplyError, Script
from .store import Backend, EventType, LocalEventBus, SessionRecord, SessionStore

log = logging.getLogger("tornado_auth.sessions")
# Field names: short, because they are repeated in every session of a large store.
TIMES = {
    "c": "created_at",
    "l": "last_seen_at",
    "e": "expires_at",
    "a": "absolute_expires_at",
    "t": "ttl",
}

# Update only a live session: a session revoked meanwhile is never recreated. The expiry only
# moves forward: a late write of an older expiry (a request that loaded the record before
# another's touch) leaves it alone.
UPDATE_SCRIPT = """
local stored = redis.pcall('GET', KEYS[1])
if type(stored) ~= 'string' then return 0 end
local session = cjson.decode(stored)
local later = tonumber(ARGV[2]) > tonumber(session.e)
if later then session.l, session.e = ARGV[1], ARGV[2] end
local removed = tonumber(ARGV[4])
for i = 5, 4 + removed do session.d[ARGV[i]] = nil end
for i = 5 + removed, #ARGV, 2 do session.d[ARGV[i]] = ARGV[i + 1] end
redis.call('SET', KEYS[1], cjson.encode(session), 'KEEPTTL')
if later then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return 1
"""
UPDATE = Script.of(UPDATE_SCRIPT)
# Take back one counted event, never creating a counter (nor one without its expiry).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) and tonumber(redis.call('GET', KEYS[1])) > 0 then
    return redis.call('DECR', KEYS[1])
end
return 0
"""
# Delete a session and return its user id, so its index entry can be removed.
DELETE_SCRIPT = """
local stored = redis.pcall('GET', KEYS[1])
local user
if type(stored) == 'string' then
  user = cjson.decode(stored).u
elseif type(stored) == 'table' then
  user = redis.call('HGET', KEYS[1], 'u')
end
if redis.call('DEL', KEYS[1]) == 0 then return false end
if type(user) ~= 'string' then return '' end
return user
"""

# Remove at most ARGV[2] members scored at or before ARGV[1]: bounded work however many expired.
TRIM_SCRIPT = """
local gone = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
return #gone
"""
TRIM_ON_WRITE = 100  # live index entries of expired sessions removed by each new session
TRIM_BATCH = 1000  # ...and by each step of the periodic sweep
SWEEP_STEPS = 10  # steps of one sweep at most


MAX_CONNECTIONS = 256
POOL_WAIT = 5.0  # seconds a request waits for a pooled connection before a 503
CLUSTER_SCHEME = "redis+cluster://"
SENTINEL_SCHEME = "redis+sentinel://"
URL_OPTIONS = {"socket_timeout": float, "socket_connect_timeout": float}
# The store cannot serve now: a server, a sentinel's master or a cluster node is down or switching.
UNAVAILABLE = (
    RedisConnectionError,  # also Sentinel's MasterNotFoundError
    RedisTimeoutError,
    OSError,
    ReadOnlyError,  # a master demoted to replica, still answering
    ClusterError,  # CLUSTERDOWN, MASTERDOWN
    TryAgainError,  # a slot is migrating
    RedisClusterException,  # no node reachable, slots not covered
)
# ...but these mean a key layout spanning hash slots: a bug, not an outage
LAYOUT_ERRORS = (CrossSlotTransactionError, InvalidPipelineStack)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _legacy(error: Exception) -> bool:
    """A session key holding a hash, as versions before 0.2 stored sessions: signed out."""
    return isinstance(error, ResponseError) and str(error).startswith("WRONGTYPE")


# 19 digits in a row may be an integer past 64 bits, which orjson would read as a float
LONG_NUMBER = re.compile(r"\d{19}")


def _decoded(text: str) -> Any:
    """JSON text as Python values, exactly as the standard library reads them: by orjson (several
    times faster) unless the text may hold an integer past 64 bits, NaN or infinities."""
    if LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _encoded(data: dict[str, Any]) -> dict[str, str]:
    """Session data values as JSON text: opaque strings to the update script's cjson."""
    return {name: json.dumps(value, separators=(",", ":")) for name, value in data.items()}


def _pipelined_error(error: RedisUnavailable | ReplyError) -> Exception:
    """What a failed pipelined command means: an outage, or (an error reply) a bug."""
    if isinstance(error, RedisUnavailable):
        return StoreUnavailable("session", str(error))
    if str(error).startswith(("LOADING", "BUSY", "MASTERDOWN", "READONLY")):
        return StoreUnavailable("session", f"redis: {error}")
    return error


@asynccontextmanager
async def _available() -> AsyncIterator[None]:
    try:
        yield
    except LAYOUT_ERRORS:
        raise
    except UNAVAILABLE as error:
        raise StoreUnavailable("session", f"redis: {error}") from error


def parse_url(url: str) -> tuple[list[tuple[str, int]], str | None, int, dict[str, Any]]:
    """Nodes, Sentinel master name, db and client options of a cluster or sentinel URL."""
    sentinel = url.startswith(SENTINEL_SCHEME)
    if not sentinel and not url.startswith(CLUSTER_SCHEME):
        raise ValueError(f"not a {CLUSTER_SCHEME} or {SENTINEL_SCHEME} URL")
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    credentials, _, hosts = parts.netloc.rpartition("@")
    if credentials:
        username, has_password, password = credentials.partition(":")
        options.update(username=unquote(username) or None)
        if has_password:
            options["password"] = unquote(password)
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port for each node, got {node!r}")
        nodes.append((host.strip("[]"), int(port)))
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in URL_OPTIONS:
            raise ValueError(f"unknown option {name!r}: use {', '.join(URL_OPTIONS)}")
        try:
            options[name] = URL_OPTIONS[name](value)
        except ValueError:
            raise ValueError(f"option {name}: not a number: {value!r}") from None
    path = [unquote(part) for part in parts.path.split("/") if part]
    if not sentinel:
        if path:
            raise ValueError(f"expected {CLUSTER_SCHEME}host:port,... (no path: always db 0)")
        return nodes, None, 0, options
    if len(path) not in (1, 2) or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"expected {SENTINEL_SCHEME}host:port,.../<master-name>[/<db>]")
    return nodes, path[0], int(path[1]) if len(path) == 2 else 0, options


def redis_client(url: str, **options: Any) -> aioredis.Redis | RedisCluster:
    """The client a redis://, rediss://, redis+cluster:// or redis+sentinel:// URL names.

    ``options`` are defaults for every connection; options in the URL override them.
    """
    if not url.startswith((CLUSTER_SCHEME, SENTINEL_SCHEME)):
        # Past the pool's size a request waits for a free connection rather than failing: a
        # burst of concurrent requests is not an outage.
        # A pooled connection to a Redis that restarted fails its next command once: that
        # command is sent again at once on a new connection rather than answered with 503.
        options.setdefault("retry", Retry(NoBackoff(), 1))
        options.setdefault("retry_on_error", [RedisConnectionError])
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT, **options
        )
        return aioredis.Redis(connection_pool=pool)
    nodes, master, db, url_options = parse_url(url)
    options.update(url_options)
    if master is None:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **options)
    # the sentinels are asked with the same socket timeouts, once each: no retries and
    # backoff on one that is down when the next one may answer at once
    asking = {name: value for name, value in options.items() if name.startswith("socket_")}
    asking["retry"] = Retry(NoBackoff(), 0)
    return Sentinel(nodes, sentinel_kwargs=asking, **options).master_for(master, db=db)


class _Connection(NamedTuple):
    """A started store's client and its scripts (registered without I/O: EVALSHA at the call)."""

    client: aioredis.Redis | RedisCluster
    update: AsyncScript
    delete: AsyncScript
    trim: AsyncScript


class RedisSessionStore(SessionStore):
    """Records, and the client the counters and the event bus share."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "ta:") -> None:
        if url.startswith((CLUSTER_SCHEME, SENTINEL_SCHEME)):
            parse_url(url)  # a malformed URL fails now, as a setting, not at the first request
        self.url = url
        self.prefix = prefix
        self._connection: _Connection | None = None
        self._unavailable = "redis: not started"  # why there is no connection
        self.live_key = f"{prefix}live"  # every live session, scored by its expiry
        self._follower: asyncio.Task[None] | None = None  # Sentinel: follows master switches
        # a plain server's session loads and touches, pipelined
        self._pipelined: PipelinedConnection | None = None

    async def start(self) -> None:
        client = redis_client(
            self.url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        self._connection = _Connection(
            client,
            client.register_script(UPDATE_SCRIPT),
            client.register_script(DELETE_SCRIPT),
            client.register_script(TRIM_SCRIPT),
        )
        self._pipelined = PipelinedConnection.for_url(self.url, timeout=5, connect_timeout=2)
        if isinstance(client, RedisCluster):
            # redis-py initialises a cluster client at its first command, and concurrent first
            # commands race in it (a connection used before it is open): initialise it now.
            try:
                await client.initialize()
            except UNAVAILABLE as error:  # down at start: requests get 503 until it answers
                log.warning("redis cluster unavailable at start (%s)", error)
        elif isinstance(client.connection_pool, SentinelConnectionPool):
            self._follower = asyncio.create_task(self._follow_master(client.connection_pool))

    @property
    def connection(self) -> _Connection:
        """The started client and scripts; before start or after close, the store is unavailable
        (a late call, such as a request cut at shutdown, must not reconnect)."""
        if self._connection is None:
            raise StoreUnavailable("session", self._unavailable)
        return self._connection

    @property
    def client(self) -> aioredis.Redis | RedisCluster:
        """The started client (see ``connection``)."""
        return self.connection.client

    def session_key(self, key: str) -> str:
        return f"{self.prefix}s:{key}"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    async def load(self, key: str) -> SessionRecord | None:
        if self._pipelined is not None and self._connection is not None:
            try:
                stored = await self._pipelined.command("GET", self.session_key(key))
            except (RedisUnavailable, ReplyError) as error:
                if str(error).startswith("WRONGTYPE"):  # a hash, as before 0.2: signed out
                    return None
                raise _pipelined_error(error) from error
            return self._record(key, stored) if stored else None
        async with _available():
            try:
                stored = cast(str | None, await self.client.get(self.session_key(key)))
            except ResponseError as error:
                if not _legacy(error):
                    raise
                return None
        return self._record(key, stored) if stored else None

    async def _members(self, index: str) -> list[str]:
        """Every member of a sorted set, lowest score first."""
        # the client decodes responses, which redis-py's types cannot express
        return cast(list[str], await self.client.zrange(index, 0, -1))

    def _record(self, key: str, stored: str) -> SessionRecord:
        session = _decoded(stored)
        return SessionRecord(
            key=key,
            user_id=session.get("u"),
            ip=session["ip"],
            user_agent=session["ua"],
            data={name: _decoded(value) for name, value in (session["d"] or {}).items()},
            **{attr: float(session[name]) for name, attr in TIMES.items()},
        )

    async def create(self, record: SessionRecord) -> None:
        session: dict[str, Any] = {
            name: repr(float(getattr(record, attr))) for name, attr in TIMES.items()
        }
        session.update(ip=record.ip, ua=record.user_agent, d=_encoded(record.data))
        if record.user_id is not None:
            session["u"] = record.user_id
        async with _available():
            await self.client.set(
                self.session_key(record.key),
                json.dumps(session, separators=(",", ":")),
                pxat=_ms(record.expires_at),
            )
            await self.client.zadd(self.live_key, {record.key: record.expires_at})
            await self.connection.trim(
                keys=[self.live_key], args=[record.created_at, TRIM_ON_WRITE]
            )
            if record.user_id is not None:
                await self._index(record.user_id, record.key, record.absolute_expires_at)

    async def _index(self, user_id: str, key: str, until: float) -> None:
        index = self.user_key(user_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(index, "-inf", f"({time.time()}")  # past their absolute expiry
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
        times = [repr(float(last_seen_at)), repr(float(expires_at))]
        args = [*times, str(_ms(expires_at)), str(len(removed)), *removed]
        for name, value in _encoded(changed).items():
            args += [name, value]
        session_key = self.session_key(key)
        if self._pipelined is not None and self._connection is not None:
            try:
                updated = await self._pipelined.script(UPDATE, [session_key], args)
                if updated:  # XX: never re-adds a revoked session; GT: only forward
                    await self._pipelined.command(
                        "ZADD", self.live_key, "XX", "GT", repr(float(expires_at)), key
                    )
            except (RedisUnavailable, ReplyError) as error:
                raise _pipelined_error(error) from error
            return bool(updated)
        async with _available():
            if not await self.connection.update(keys=[session_key], args=args):
                return False
            await self.client.zadd(self.live_key, {key: expires_at}, xx=True, gt=True)
        return True

    async def delete(self, key: str) -> bool:
        async with _available():
            user_id = await self.connection.delete(keys=[self.session_key(key)])
            await self.client.zrem(self.live_key, key)
            if user_id:
                await self.client.zrem(self.user_key(user_id), key)
        return user_id is not None

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        index = self.user_key(user_id)
        async with _available():
            await self.client.zremrangebyscore(index, "-inf", f"({time.time()}")
            keys = await self._members(index)
            if not keys:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(self.session_key(key))
                rows = await pipe.execute(raise_on_error=False)
            for row in rows:
                if isinstance(row, Exception) and not _legacy(row):
                    raise row
            rows = [row if isinstance(row, str) else None for row in rows]
            gone = [key for key, stored in zip(keys, rows, strict=True) if not stored]
            if gone:
                await self.client.zrem(index, *gone)
        return [self._record(key, stored) for key, stored in zip(keys, rows, strict=True) if stored]

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        index = self.user_key(user_id)
        async with _available():
            keys = [key for key in await self._members(index) if key != keep]
            if not keys:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.delete(self.session_key(key))
                deleted = await pipe.execute()
            await self.client.zrem(index, *keys)
            await self.client.zrem(self.live_key, *keys)
        return [key for key, count in zip(keys, deleted, strict=True) if count]

    async def trim_user(self, user_id: str, keep: int, now: float) -> list[str]:
        index = self.user_key(user_id)
        async with _available():
            # oldest first: scored by absolute expiry, a fixed time after sign-in
            keys = await self._members(index)
            if len(keys) <= keep:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(self.session_key(key))
                found = await pipe.execute()
            live = [key for key, exists in zip(keys, found, strict=True) if exists]
            gone = [key for key, exists in zip(keys, found, strict=True) if not exists]
            if gone:  # sessions Redis expired by itself: their entries go without counting
                await self.client.zrem(index, *gone)
            oldest = live[: max(0, len(live) - keep)]
            if not oldest:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for key in oldest:
                    pipe.delete(self.session_key(key))
                deleted = await pipe.execute()
            await self.client.zrem(index, *oldest)
            await self.client.zrem(self.live_key, *oldest)
        return [key for key, count in zip(oldest, deleted, strict=True) if count]

    async def sweep(self, now: float) -> int:
        """Redis expires sessions by their TTL; their live index entries go here, in batches."""
        removed = 0
        async with _available():
            for _ in range(SWEEP_STEPS):
                batch = await self.connection.trim(keys=[self.live_key], args=[now, TRIM_BATCH])
                removed += batch
                if batch < TRIM_BATCH:
                    break
        return removed

    async def count(self, now: float) -> int:
        async with _available():
            await self.client.zremrangebyscore(self.live_key, "-inf", now)
            return await self.client.zcard(self.live_key)

    async def _follow_master(self, pool: SentinelConnectionPool) -> None:
        """Leave the old master as soon as a sentinel announces the new one.

        redis-py asks the sentinels for the master only when it opens a connection, and a forced
        failover leaves the old master writable (until Sentinel converts it, ~10 s later, and it
        drops what it was written meanwhile): pooled connections must not write there.
        """
        sentinels = pool.sentinel_manager.sentinels
        while True:
            for sentinel in list(sentinels):
                pubsub = sentinel.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe("+switch-master")
                    await pool.get_master_address()  # a switch missed while not subscribed
                    async for message in pubsub.listen():
                        data = message["data"]  # "<name> <old ip> <old port> <new ip> <new port>"
                        name = (data.decode() if isinstance(data, bytes) else data).split(" ")[0]
                        if name == pool.service_name:
                            # this sentinel knows the new master: ask it first
                            sentinels.remove(sentinel)
                            sentinels.insert(0, sentinel)
                            await pool.disconnect()  # in use too: they reconnect to the new one
                except UNAVAILABLE as error:
                    log.debug("sentinel %s unavailable (%s); trying the next", sentinel, error)
                finally:
                    await pubsub.aclose()
            await asyncio.sleep(1)

    async def ping(self) -> None:
        async with _available():
            await self.client.ping()

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            self._follower = None
        self._unavailable = "redis: closed"
        if self._pipelined is not None:
            self._pipelined.close()
            self._pipelined = None
        if self._connection is not None:
            client, self._connection = self._connection.client, None
            if isinstance(client, RedisCluster):
                await client.aclose()  # closes every node's connections
                return
            # a client built on its own pool leaves the pool open unless told otherwise
            await client.aclose(close_connection_pool=True)
            if isinstance(client.connection_pool, SentinelConnectionPool):
                await client.connection_pool.sentinel_manager.aclose()  # the sentinels' too


class RedisCounters:
    """Counters as plain keys that Redis expires when their window ends."""

    def __init__(self, store: RedisSessionStore) -> None:
        self.store = store

    def counter_key(self, name: str) -> str:
        return f"{self.store.prefix}c:{name}"

    async def hit(self, name: str, window: float, now: float) -> tuple[int, float]:
        key = self.counter_key(name)
        async with _available(), self.store.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, _ms(window), nx=True)
            pipe.pttl(key)
            count, _, ttl = await pipe.execute()
        return count, now + max(ttl, 0) / 1000

    async def peek(self, name: str, now: float) -> tuple[int, float]:
        key = self.counter_key(name)
        async with _available(), self.store.client.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            count, ttl = await pipe.execute()
        return (int(count), now + ttl / 1000) if count and ttl > 0 else (0, now)

    async def release(self, name: str, now: float) -> None:
        script = self.store.client.register_script(RELEASE_SCRIPT)  # no I/O: EVALSHA at the call
        async with _available():
            await script(keys=[self.counter_key(name)])

    async def clear(self, name: str) -> None:
        async with _available():
            await self.store.client.delete(self.counter_key(name))

    async def sweep(self, now: float) -> int:
        return 0  # Redis expires them by their TTL


class RedisEventBus(LocalEventBus):
    """Events through one pub/sub channel, to every process."""

    def __init__(self, store: RedisSessionStore) -> None:
        super().__init__(shared=True)
        self.store = store
        self.channel = f"{store.prefix}events"
        self._listener: asyncio.Task[None] | None = None
        self.connected_event = asyncio.Event()  # set while the pub/sub subscription is up

    @property
    def live(self) -> bool:
        return self.connected_event.is_set()

    async def connected(self) -> None:
        await self.connected_event.wait()

    async def publish(self, event: dict[str, Any]) -> None:
        async with _available():
            await self.store.client.publish(self.channel, json.dumps(event))

    async def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        """Deliver the channel's events; after a lost connection, resubscribe and say so."""
        connected_before = False
        while True:
            pubsub = None
            try:
                if isinstance(self.store.client, RedisCluster):
                    # the pub/sub node is chosen from the slots
                    await self.store.client.initialize()
                pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                if connected_before:
                    self.deliver({"type": EventType.RESYNC})  # events may have been missed
                connected_before = True
                # redis-py reconnects a dropped pub/sub connection to one server and resubscribes
                # by itself, silently: events published meanwhile are lost, so a resync too
                # (a Cluster's or Sentinel's pub/sub raises instead, caught below)
                if pubsub.connection is not None and self._single_server:
                    pubsub.connection.register_connect_callback(self._resubscribed)
                self.connected_event.set()
                async for message in pubsub.listen():
                    self.deliver(json.loads(message["data"]))
            except UNAVAILABLE as error:
                self.connected_event.clear()
                log.warning("session events: redis unavailable (%s); retrying", error)
                await asyncio.sleep(1)
            finally:
                if pubsub is not None:
                    if pubsub.connection is not None:  # it goes back to the pool
                        pubsub.connection.deregister_connect_callback(self._resubscribed)
                    await pubsub.aclose()

    @property
    def _single_server(self) -> bool:
        client = self.store.client
        return not isinstance(client, RedisCluster) and not isinstance(
            client.connection_pool, SentinelConnectionPool
        )

    def _resubscribed(self, connection: Any) -> None:
        """The pub/sub connection was dropped and made again (after redis-py resubscribed)."""
        log.warning("session events: the redis connection was dropped and made again")
        self.deliver({"type": EventType.RESYNC})

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None


def redis_backend(url: str, prefix: str) -> Backend:
    store = RedisSessionStore(url, prefix)
    return Backend(store, RedisCounters(store), RedisEventBus(store))
