"""Sessions in Redis: one MessagePack string per session, expired by Redis itself, a share of a
bucketed index per user, and counts by expiry.

The layout is made for memory (a million signed-in sessions in a few hundred megabytes) without
giving up a guarantee:

- ``<prefix>s:<name>``: the session, a MessagePack array ``[created, last seen, expires, absolute
  expiry, ttl, ip, agent id, data, user id]`` (the user id only when signed in; expires 0 when it
  is last seen + ttl, as it is but near the absolute expiry); the name is the store key (the
  SHA-256 of the token) as its raw 32 bytes: ``ta:s:`` and 32 bytes is 37 bytes, an sds of 41
  that jemalloc rounds to 48 (base64url, 43 characters, took 64). Any other store key (tests
  make some) is named ``~<key>``, or ``!!<key>`` if that would be 32 bytes: only a SHA-256 has a
  name of 32 bytes, so every name maps back to its key (``_name``, ``_key``). Times are IEEE
  doubles, exact; each data value is its own JSON text, opaque to the update script, so nothing
  is retyped or rounded. Redis expires it at its expiry.
- ``<prefix>a:<agent id>``: a User-Agent, stored once for all the sessions that share it (a 48-bit
  digest names it), and expired with the last of them. Processes keep the ones they read.
- ``<prefix>ui:<bucket>``: a sorted set per 1/65536 of the users (by a digest of the user id),
  with a member ``<user tag><name>`` (6 hex digits and 32 bytes) per signed-in session, scored
  by its absolute expiry in whole seconds: small enough for Redis's compact encoding. A user's
  sessions are the members with the user's tag (the records say whose they are, so a tag shared
  by two users is harmless).
- ``<prefix>n``: a hash of session counts by ten-minute slice of their expiry, for ``count``.

Updates run as a Lua script that changes only the fields it is given, so concurrent writers of
different data keys never lose each other's writes. Every command touches a single key, so the
layout works unchanged on Redis Cluster (a raw name may hold ``{...}``: a hash tag, which only
picks that one key's slot). Names are bytes: replies are never decoded, and the pattern that
lists a user's members, ``<user tag>*``, matches whatever bytes follow the tag.

Sessions under the names before raw ones (``<prefix>s:`` and the key in base64url; members
``<user tag>`` and the same) are still found, until ``<prefix>names`` says none remains. While it
is absent (checked at start and at each sweep), a session missing under its raw name is looked
for under its old name and moved: the raw name is written only if free, its index member moved,
then the old name deleted; if that was already gone (ended meanwhile by a process that knows only
the old name) the copy is deleted too, and a request that misses both names reads the raw one
again (a move writes it before it deletes the old one), so concurrent requests all find the
session and a revocation stays. Updates and deletions that miss, and a user's listing (members
of the old form), move the session first. Each sweep then scans the session names (SCAN, on
every master of a Cluster) and moves the old ones it finds; once a whole pass finds none it
writes the marker, and from then on a miss costs no second look-up. Deleting the marker makes
every process look again from its next sweep.

A rolling upgrade: processes of the version before raw names do not see sessions the new ones
create or moved (their users look signed out there, until a new process serves them), and end
only sessions under old names. New processes see both, until the marker: a session an old
process creates after a pass wrote it is not found. So replace every old process before the
first sweep of the new ones (``sessions.sweep_interval`` after their start), or delete the marker
once the last old process is gone.

Sessions written by versions before 0.4 (a JSON string at the store key in hex, a sorted set per
user and a global ``<prefix>live`` index) are read and moved to this layout when first seen, for
as long as the old global index exists.

URLs: ``redis://`` and ``rediss://`` name one server; ``redis+cluster://host:port,host:port`` a
Redis Cluster (any reachable nodes; the client discovers the rest); and
``redis+sentinel://host:port,host:port/<master-name>[/<db>]`` the master that Redis Sentinel
reports, followed through failovers. Both take ``user:password@`` before the nodes (for the Redis
servers, not the sentinels) and ``?socket_timeout=&socket_connect_timeout=`` in seconds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import msgpack  # type: ignore[import-untyped]
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

# The fields of a stored session, in order (a MessagePack array).
CREATED, SEEN, EXPIRES, ABSOLUTE, TTL, IP, AGENT, DATA, USER = range(9)

# Update only a live session: a session revoked meanwhile is never recreated. The expiry only
# moves forward: a late write of an older expiry (a request that loaded the record before
# another's touch) leaves it alone. Replies nil when there is no session, '' when the expiry
# stayed, else the expiry it had (for the counts by expiry).
UPDATE_SCRIPT = """
local stored = redis.pcall('GET', KEYS[1])
if type(stored) ~= 'string' then return false end
local session = cmsgpack.unpack(stored)
local moved = ''
local expires, was = tonumber(ARGV[2]), session[3]
if was == 0 then was = session[2] + session[5] end
if expires > was then
  moved = string.format('%.17g', was)
  local seen = tonumber(ARGV[1])
  session[2], session[3] = seen, expires
  if expires == seen + session[5] then session[3] = 0 end
end
local data = session[8]
local removed = tonumber(ARGV[4])
for i = 5, 4 + removed do data[ARGV[i]] = nil end
for i = 5 + removed, #ARGV, 2 do data[ARGV[i]] = ARGV[i + 1] end
redis.call('SET', KEYS[1], cmsgpack.pack(session), 'KEEPTTL')
if moved ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return moved
"""
UPDATE = Script.of(UPDATE_SCRIPT)
# Delete a session; its user id ('' if none) and expiry, so its index entry and count can go.
DELETE_SCRIPT = """
local stored = redis.pcall('GET', KEYS[1])
if type(stored) ~= 'string' then return false end
redis.call('DEL', KEYS[1])
local session = cmsgpack.unpack(stored)
local expires = session[3]
if expires == 0 then expires = session[2] + session[5] end
return {session[9] or '', string.format('%.17g', expires)}
"""
# Move one session's count from one slice of expiry to another (or add or take one).
COUNT_SCRIPT = """
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""
COUNT = Script.of(COUNT_SCRIPT)
COUNT_SLICE = 600  # seconds of expiry per count: ``count`` may include sessions ended that long
# Take back one counted event, never creating a counter (nor one without its expiry).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) and tonumber(redis.call('GET', KEYS[1])) > 0 then
    return redis.call('DECR', KEYS[1])
end
return 0
"""
# The layout before 0.4: a session's JSON, and the user id it had (to move it, or end it).
LEGACY_TIMES = {
    "c": "created_at",
    "l": "last_seen_at",
    "e": "expires_at",
    "a": "absolute_expires_at",
    "t": "ttl",
}
LEGACY_DELETE_SCRIPT = """
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
INDEX_BUCKETS = 65536  # buckets of the user index: a few sessions each up to millions
INDEX_SWEEP = 1024  # buckets trimmed by each periodic sweep
AGENTS_KEPT = 4096  # User-Agents each process keeps, by id

MAX_CONNECTIONS = 256
POOL_WAIT = 5.0  # seconds a request waits for a pooled connection before a 503
CLUSTER_SCHEME = "redis+cluster://"
# The event stream's proof of life: a PING down the subscription this often, and the bus is live
# while one sent less than STALE_AFTER seconds ago has come back (revocations within a second).
BEAT_INTERVAL = 0.2
STALE_AFTER = 0.8
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
    """Session data values as JSON text: opaque strings to the update script."""
    return {name: json.dumps(value, separators=(",", ":")) for name, value in data.items()}


def _text(value: Any) -> str:
    """A reply of the client (bytes) as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


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
    counts: AsyncScript
    legacy_delete: AsyncScript


SHA256_BYTES = 32  # a session's name: the SHA-256 of its token, raw
# Before raw names, a SHA-256 key was named in base64url (43 characters), any other ``~<key>``
OLD_NAME_LENGTH = 43
MOVES_AT_ONCE = 64  # sessions under old names moved concurrently by a sweep


def _name(key: str) -> bytes:
    """A store key as it appears in Redis: a SHA-256 in (lowercase) hex as its raw 32 bytes; any
    other key as ``~`` and its UTF-8, unless that makes 32 bytes (a key of 31 bytes): then as
    ``!!`` and its UTF-8, 33 bytes. So only a SHA-256 is named by exactly 32 bytes, and the other
    forms tell themselves apart by their first byte."""
    if len(key) == 2 * SHA256_BYTES:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            pass
        else:
            if len(raw) == SHA256_BYTES and raw.hex() == key:
                return raw
    text = key.encode()
    return b"!!" + text if len(text) == SHA256_BYTES - 1 else b"~" + text


def _old_name(key: str) -> bytes:
    """The name a store key had before raw names: a SHA-256 in base64url (43 characters); any
    other key ``~<key>`` (the same as now, unless the key has 31 bytes)."""
    if len(key) == 2 * SHA256_BYTES:
        try:
            return base64.urlsafe_b64encode(bytes.fromhex(key)).rstrip(b"=")
        except ValueError:
            pass
    return b"~" + key.encode()


def _key(name: bytes) -> str:
    """The store key of a name from ``_name``, or of an old base64url name from ``_old_name``
    (43 bytes, never ``~`` or ``!`` first: no name of now is both)."""
    if len(name) == SHA256_BYTES:
        return name.hex()
    if name[:1] == b"~":
        return name[1:].decode()
    if name[:2] == b"!!" and len(name) == SHA256_BYTES + 1:
        return name[2:].decode()
    if len(name) == OLD_NAME_LENGTH:
        return base64.urlsafe_b64decode(name + b"=").hex()
    raise ValueError(f"not a session name: {name!r}")


def _is_old(name: bytes) -> bool:
    """Whether a name is an old base64url one (which ``_name`` never makes)."""
    return len(name) == OLD_NAME_LENGTH and name[:1] not in (b"~", b"!")


def _glob(text: str) -> str:
    """Text matched literally by a SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _agent_id(user_agent: str) -> int:
    """The 48-bit id of a User-Agent (exact in the update script's doubles); 0 for none."""
    if not user_agent:
        return 0
    return int.from_bytes(hashlib.sha256(user_agent.encode()).digest()[:6], "big") or 1


def _slice(expires_at: float) -> str:
    return str(int(expires_at // COUNT_SLICE))


class _Stored(NamedTuple):
    """A session read from Redis, before its User-Agent is looked up."""

    key: str
    fields: list[Any]

    @property
    def expires_at(self) -> float:
        fields = self.fields
        return float(fields[EXPIRES]) or float(fields[SEEN]) + float(fields[TTL])

    def record(self, user_agent: str) -> SessionRecord:
        fields = self.fields
        return SessionRecord(
            key=self.key,
            created_at=float(fields[CREATED]),
            last_seen_at=float(fields[SEEN]),
            expires_at=self.expires_at,
            absolute_expires_at=float(fields[ABSOLUTE]),
            ttl=float(fields[TTL]),
            user_id=fields[USER] if len(fields) > USER else None,
            ip=fields[IP],
            user_agent=user_agent,
            data={name: _decoded(value) for name, value in (fields[DATA] or {}).items()},
        )


def _packed(record: SessionRecord) -> bytes:
    seen, expires = float(record.last_seen_at), float(record.expires_at)
    fields: list[Any] = [
        float(record.created_at),
        seen,
        0 if expires == seen + float(record.ttl) else expires,  # 0: a ttl after last seen
        float(record.absolute_expires_at),
        int(record.ttl) if float(record.ttl).is_integer() else float(record.ttl),
        record.ip,
        _agent_id(record.user_agent),
        _encoded(record.data),
    ]
    if record.user_id is not None:
        fields.append(record.user_id)
    return msgpack.packb(fields)


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
        self.count_key = f"{prefix}n"  # session counts by slice of expiry
        self.legacy_live_key = f"{prefix}live"  # before 0.4: every session, by its expiry
        self._legacy = False  # whether sessions of the layout before 0.4 may remain
        # written once no session is under an old (base64url) name: then none is looked for
        self.names_key = f"{prefix}names"
        self._old_names = True  # whether sessions under old names may remain
        self._agents: OrderedDict[int, str] = OrderedDict()  # User-Agents by id, recent last
        self._next_bucket = secrets.randbelow(INDEX_BUCKETS)  # where the next sweep starts
        self._follower: asyncio.Task[None] | None = None  # Sentinel: follows master switches
        # a plain server's session loads and touches, pipelined
        self._pipelined: PipelinedConnection | None = None

    async def start(self) -> None:
        client = redis_client(
            self.url,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        self._connection = _Connection(
            client,
            client.register_script(UPDATE_SCRIPT),
            client.register_script(DELETE_SCRIPT),
            client.register_script(COUNT_SCRIPT),
            client.register_script(LEGACY_DELETE_SCRIPT),
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
        try:
            await self._check_legacy()
            await self._check_names()
        except StoreUnavailable:  # checked again at the next sweep; until then, assume some
            self._legacy = self._old_names = True

    async def _check_legacy(self) -> None:
        async with _available():
            self._legacy = bool(await self.client.exists(self.legacy_live_key))

    async def _check_names(self) -> None:
        async with _available():
            self._old_names = not await self.client.exists(self.names_key)

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

    def session_key(self, key: str) -> bytes:
        return f"{self.prefix}s:".encode() + _name(key)

    def old_session_key(self, key: str) -> bytes:
        """Where a session was before raw names (see ``_old_name``)."""
        return f"{self.prefix}s:".encode() + _old_name(key)

    def agent_key(self, agent: int) -> str:
        return f"{self.prefix}a:{agent:x}"

    def index_entry(self, user_id: str, key: str) -> tuple[str, bytes]:
        """The user index bucket of a user's session, and its member there."""
        digest = hashlib.sha256(user_id.encode()).hexdigest()
        bucket = int(digest[:4], 16) % INDEX_BUCKETS
        return f"{self.prefix}ui:{bucket:04x}", self._tag(digest).encode() + _name(key)

    def old_member(self, user_id: str, key: str) -> bytes:
        """A session's member in its user's index bucket before raw names."""
        tag = self._tag(hashlib.sha256(user_id.encode()).hexdigest())
        return tag.encode() + _old_name(key)

    @staticmethod
    def _tag(digest: str) -> str:
        return digest[4:10]

    def legacy_session_key(self, key: str) -> str:
        return f"{self.prefix}s:{key}"

    def legacy_user_key(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    # -- reading ---------------------------------------------------------------------------------

    async def load(self, key: str) -> SessionRecord | None:
        name = self.session_key(key)
        if self._pipelined is not None and self._connection is not None:
            try:
                stored = await self._pipelined.command("GET", name)
            except (RedisUnavailable, ReplyError) as error:
                raise _pipelined_error(error) from error
        else:
            async with _available():
                stored = await self.client.get(name)
        if stored:
            return await self._record(key, stored)
        if self._old_names:
            moved = await self._move_old(key)
            if moved is not None:
                return moved
        return await self._move_legacy(key) if self._legacy else None

    async def _record(self, key: str, stored: bytes) -> SessionRecord:
        found = _Stored(key, msgpack.unpackb(stored))
        return found.record(await self._agent(found.fields[AGENT]))

    async def _agent(self, agent: int) -> str:
        """The User-Agent of an id: kept by this process, or read once."""
        if not agent:
            return ""
        user_agent = self._agents.get(agent)
        if user_agent is not None:
            return user_agent
        async with _available():
            stored = await self.client.get(self.agent_key(agent))
        # gone only if every session with it ended; a late reader shows none
        user_agent = _text(stored) if stored else ""
        if user_agent:
            self._agents[agent] = user_agent
            if len(self._agents) > AGENTS_KEPT:
                self._agents.popitem(last=False)
        return user_agent

    # -- writing ---------------------------------------------------------------------------------

    async def create(self, record: SessionRecord) -> None:
        await self._create(record, only_new=False)

    async def _create(self, record: SessionRecord, only_new: bool) -> bool:
        """Store a new session with its index entry, User-Agent and count; with ``only_new``,
        nothing if its key exists (False)."""
        expires, until = _ms(record.expires_at), _ms(record.absolute_expires_at)
        agent = _agent_id(record.user_agent)
        async with _available():
            if not await self.client.set(
                self.session_key(record.key), _packed(record), pxat=expires, nx=only_new
            ):
                return False
            async with self.client.pipeline(transaction=False) as pipe:
                if agent:  # kept as long as the last session that has it can live
                    agent_key = self.agent_key(agent)
                    pipe.set(agent_key, record.user_agent, pxat=until, nx=True)
                    pipe.pexpireat(agent_key, until, gt=True)
                if record.user_id is not None:
                    bucket, member = self.index_entry(record.user_id, record.key)
                    # whole seconds, rounded up: a compact integer, never before the expiry
                    pipe.zadd(bucket, {member: math.ceil(record.absolute_expires_at)})
                    # entries of sessions past their absolute expiry, of any user of the bucket
                    pipe.zremrangebyscore(bucket, "-inf", f"({record.created_at}")
                await pipe.execute()
            await self.connection.counts(keys=[self.count_key], args=[_slice(record.expires_at), 1])
        if agent:
            self._agents[agent] = record.user_agent
        return True

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
        moved = await self._update(key, args)
        if moved is None and self._old_names and await self._move_old(key) is not None:
            moved = await self._update(key, args)  # it was under its old name
        if moved is None:
            return False
        if moved and _slice(float(moved)) != _slice(expires_at):
            await self._count(_slice(float(moved)), -1, _slice(expires_at), 1)
        return True

    async def touch(self, touches: dict[str, tuple[float, float]]) -> list[bool | BaseException]:
        """The touches in one write over the pipelined connection, their counts in one more."""
        if self._pipelined is None or self._connection is None:
            return await super().touch(touches)
        commands: list[list[str | bytes]] = [
            ["EVALSHA", UPDATE.sha, "1", self.session_key(key), repr(float(seen)),
             repr(float(expires)), str(_ms(expires)), "0"]
            for key, (seen, expires) in touches.items()
        ]  # fmt: skip
        try:
            replies = await self._pipelined.commands(*commands)
        except RedisUnavailable as error:
            return [_pipelined_error(error)] * len(touches)
        results: list[bool | BaseException] = []
        counts: dict[str, int] = {}
        again: dict[int, str] = {}  # touches to make one at a time, as ``update`` does: an
        # error reply (NOSCRIPT: the server forgot its scripts), or none under a raw name while
        # sessions may still be under their old names
        for index, ((key, (_, expires)), reply) in enumerate(
            zip(touches.items(), replies, strict=True)
        ):
            results.append(reply is not None)
            if isinstance(reply, ReplyError) or (reply is None and self._old_names):
                again[index] = key
            elif reply and (was := _slice(float(reply))) != (to := _slice(expires)):
                counts[was] = counts.get(was, 0) - 1
                counts[to] = counts.get(to, 0) + 1
        if again:
            one_by_one = await asyncio.gather(
                *(self.update(key, {}, set(), *touches[key]) for key in again.values()),
                return_exceptions=True,
            )
            for index, result in zip(again, one_by_one, strict=True):
                results[index] = result
        changes = [part for slice_, n in counts.items() if n for part in (slice_, n)]
        if changes:
            try:
                await self._count(*changes)
            except StoreUnavailable as error:
                return [error if result is True else result for result in results]
        return results

    async def _update(self, key: str, args: list[str]) -> Any:
        """The update script's reply for a session (None if there is none by its name)."""
        session_key = self.session_key(key)
        if self._pipelined is not None and self._connection is not None:
            try:
                return await self._pipelined.script(UPDATE, [session_key], args)
            except (RedisUnavailable, ReplyError) as error:
                raise _pipelined_error(error) from error
        async with _available():
            return await self.connection.update(keys=[session_key], args=args)

    async def _count(self, *changes: str | int) -> None:
        """Add to (or take from) the session counts of slices of expiry."""
        args = [str(change) for change in changes]
        if self._pipelined is not None and self._connection is not None:
            try:
                await self._pipelined.script(COUNT, [self.count_key], args)
            except (RedisUnavailable, ReplyError) as error:
                raise _pipelined_error(error) from error
            return
        async with _available():
            await self.connection.counts(keys=[self.count_key], args=args)

    async def delete(self, key: str) -> bool:
        async with _available():
            found = await self.connection.delete(keys=[self.session_key(key)])
        if found is None and self._old_names and await self._move_old(key) is not None:
            async with _available():  # it was under its old name
                found = await self.connection.delete(keys=[self.session_key(key)])
        if found is None:
            return await self._delete_legacy(key) if self._legacy else False
        user_id, expires = (_text(part) for part in found)
        await self._forget([(key, user_id, float(expires))])
        return True

    async def _forget(self, ended: list[tuple[str, str, float]]) -> None:
        """Remove the index entries and counts of deleted sessions: (key, user id, expiry)."""
        counts: dict[str, int] = {}
        async with _available(), self.client.pipeline(transaction=False) as pipe:
            for key, user_id, expires in ended:
                if user_id:
                    pipe.zrem(*self.index_entry(user_id, key))
                counts[_slice(expires)] = counts.get(_slice(expires), 0) - 1
            if len(pipe):
                await pipe.execute()
        await self._count(*[part for change in counts.items() for part in change])

    # -- a user's sessions -----------------------------------------------------------------------

    async def _entries(self, user_id: str) -> list[tuple[str, bytes]]:
        """The keys in a user's index and their members there. Sessions under old names are
        moved first, with their entries."""
        if self._legacy:
            await self._move_legacy_user(user_id)
        bucket, _ = self.index_entry(user_id, "")
        tag = self._tag(hashlib.sha256(user_id.encode()).hexdigest())
        entries = []
        async with _available():
            # the tag is hex: the pattern matches whatever bytes follow it
            async for member, _ in self.client.zscan_iter(bucket, match=f"{tag}*", count=1000):
                entries.append((_key(member[len(tag) :]), member))
        if self._old_names:
            for n, (key, member) in enumerate(entries):
                if _is_old(member[len(tag) :]) and await self._move_old(key) is not None:
                    entries[n] = (key, self.index_entry(user_id, key)[1])
        return entries

    async def _read(self, keys: list[str]) -> list[_Stored | None]:
        """The stored sessions of several keys (None where there is none)."""
        async with _available(), self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(self.session_key(key))
            rows = await pipe.execute()
        return [
            _Stored(key, msgpack.unpackb(row)) if row else None
            for key, row in zip(keys, rows, strict=True)
        ]

    async def _owned(self, user_id: str) -> tuple[list[_Stored], list[bytes]]:
        """A user's stored sessions, oldest first, and the members of their index entries that
        name no session (Redis expired it). An entry of another user whose digest begins the
        same is theirs: left out, and left alone."""
        entries = await self._entries(user_id)
        if not entries:
            return [], []
        found = await self._read([key for key, _ in entries])
        owned = [
            row
            for row in found
            if row is not None and len(row.fields) > USER and row.fields[USER] == user_id
        ]
        owned.sort(key=lambda row: float(row.fields[ABSOLUTE]))
        return owned, [member for (_, member), row in zip(entries, found, strict=True) if not row]

    async def _drop_entries(self, user_id: str, members: list[bytes]) -> None:
        """Index entries of sessions the user no longer has (Redis expired them)."""
        if members:
            bucket, _ = self.index_entry(user_id, "")
            async with _available():
                await self.client.zrem(bucket, *members)

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        owned, gone = await self._owned(user_id)
        await self._drop_entries(user_id, gone)
        return [row.record(await self._agent(row.fields[AGENT])) for row in owned]

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        owned, gone = await self._owned(user_id)
        await self._drop_entries(user_id, gone)
        return await self._delete_all([row.key for row in owned if row.key != keep], user_id)

    async def _delete_all(self, keys: list[str], user_id: str) -> list[str]:
        """Delete sessions of a user; the keys of those that were still there."""
        if not keys:
            return []
        async with _available():
            found = [await self.connection.delete(keys=[self.session_key(key)]) for key in keys]
        ended = [
            (key, user_id, float(row[1]))
            for key, row in zip(keys, found, strict=True)
            if row is not None
        ]
        gone = [key for key, row in zip(keys, found, strict=True) if row is None]
        await self._forget(ended)
        await self._drop_entries(user_id, [self.index_entry(user_id, key)[1] for key in gone])
        return [key for key, _, _ in ended]

    async def trim_user(self, user_id: str, keep: int, now: float) -> list[str]:
        # oldest first: scored by absolute expiry, a fixed time after sign-in
        owned, gone = await self._owned(user_id)
        await self._drop_entries(user_id, gone)
        if len(owned) <= keep:
            return []
        return await self._delete_all([row.key for row in owned[: len(owned) - keep]], user_id)

    # -- upkeep ----------------------------------------------------------------------------------

    async def sweep(self, now: float) -> int:
        """Redis expires sessions by their TTL. Here: index entries past their absolute expiry,
        in a slice of the buckets at each run, and the counts of past slices of expiry."""
        removed = 0
        first = self._next_bucket
        self._next_bucket = (first + INDEX_SWEEP) % INDEX_BUCKETS
        async with _available():
            async with self.client.pipeline(transaction=False) as pipe:
                for number in range(first, first + INDEX_SWEEP):
                    bucket = f"{self.prefix}ui:{number % INDEX_BUCKETS:04x}"
                    pipe.zremrangebyscore(bucket, "-inf", f"({now}")
                removed = sum(await pipe.execute())
            past = [
                name
                for name in await self.client.hkeys(self.count_key)
                if int(name) < int(_slice(now))
            ]
            if past:
                await self.client.hdel(self.count_key, *past)
        if self._legacy:
            async with _available():
                await self.client.zremrangebyscore(self.legacy_live_key, "-inf", now)
            await self._check_legacy()
        await self._check_names()  # also after the marker: deleting it makes processes look again
        if self._old_names:
            await self._move_old_names()
        return removed

    async def count(self, now: float) -> int:
        """Sessions that expire in the current slice of expiry or later."""
        async with _available():
            counts = await self.client.hgetall(self.count_key)
        current = int(_slice(now))
        live = sum(int(n) for name, n in counts.items() if int(name) >= current)
        if self._legacy:
            async with _available():
                live += await self.client.zcount(self.legacy_live_key, f"({now}", "+inf")
        return live

    # -- names before raw names -----------------------------------------------------------------

    async def _move_old(self, key: str) -> SessionRecord | None:
        """A session under its old name (see ``_old_name``), moved to its name now with its index
        entry; None if there is none under either name.

        Concurrent moves write the new name only if it is free: the one that did deletes the old
        name, and if that was gone (the session was ended meanwhile by a process that only knows
        the old name), ends the copy too. A request that misses both names reads the new one
        again: a move writes it before it deletes the old one.
        """
        old, new = self.old_session_key(key), self.session_key(key)
        if old == new:
            return None
        async with _available():
            stored: Any = await self.client.get(old)  # bytes: replies are not decoded
            found = _Stored(key, msgpack.unpackb(stored)) if stored else None
            if found is None or not await self.client.set(
                new, stored, pxat=_ms(found.expires_at), nx=True
            ):
                moved: Any = await self.client.get(new)  # by a concurrent request, or none
                return await self._record(key, moved) if moved else None
            user_id = found.fields[USER] if len(found.fields) > USER else None
            if user_id is not None:
                bucket, member = self.index_entry(user_id, key)
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.zadd(bucket, {member: math.ceil(float(found.fields[ABSOLUTE]))})
                    pipe.zrem(bucket, self.old_member(user_id, key))
                    await pipe.execute()
            if not await self.client.delete(old):  # ended meanwhile: so is the copy
                await self.client.delete(new)
                if user_id is not None:
                    await self.client.zrem(bucket, member)
                return None
        return found.record(await self._agent(found.fields[AGENT]))

    async def _move_old_names(self) -> None:
        """Move every session still under an old name; once a whole pass finds none, write the
        marker that stops every process looking for them."""
        pattern = f"{_glob(self.prefix)}s:[^~!]" + "?" * (OLD_NAME_LENGTH - 1)
        offset = len(f"{self.prefix}s:".encode())
        found = 0
        names: list[bytes] = []

        async def move() -> None:
            await asyncio.gather(*(self._move_old(_key(name[offset:])) for name in names))
            names.clear()

        async with _available():
            async for name in self.client.scan_iter(match=pattern, count=1000):
                found += 1
                names.append(name)
                if len(names) == MOVES_AT_ONCE:
                    await move()
        await move()
        if found:
            log.info("moved %d sessions from their old names", found)
            return
        async with _available():
            await self.client.set(self.names_key, "raw")
        self._old_names = False

    # -- the layout before 0.4 -------------------------------------------------------------------

    async def _move_legacy(self, key: str) -> SessionRecord | None:
        """A session of the layout before 0.4, moved to this one; None if there is none."""
        async with _available():
            try:
                stored = await self.client.get(self.legacy_session_key(key))
            except ResponseError as error:
                if not _legacy(error):
                    raise
                return None  # a hash, as before 0.2: signed out
        if not stored:
            return None
        session = _decoded(_text(stored))
        record = SessionRecord(
            key=key,
            user_id=session.get("u"),
            ip=session["ip"],
            user_agent=session["ua"],
            data={name: _decoded(value) for name, value in (session["d"] or {}).items()},
            **{attr: float(session[name]) for name, attr in LEGACY_TIMES.items()},
        )
        if not await self._create(record, only_new=True):
            return await self.load(key)  # moved by a concurrent request
        async with _available():
            await self.client.delete(self.legacy_session_key(key))
            await self.client.zrem(self.legacy_live_key, key)
        return record

    async def _move_legacy_user(self, user_id: str) -> None:
        """Move a user's sessions of the layout before 0.4, so that they can be listed and ended."""
        old = self.legacy_user_key(user_id)
        async with _available():
            keys = await self.client.zrange(old, 0, -1)
        for key in keys:
            await self.load(_text(key))
        if keys:
            async with _available():
                await self.client.zrem(old, *keys)

    async def _delete_legacy(self, key: str) -> bool:
        async with _available():
            user_id = await self.connection.legacy_delete(keys=[self.legacy_session_key(key)])
            await self.client.zrem(self.legacy_live_key, key)
            if user_id:
                await self.client.zrem(self.legacy_user_key(_text(user_id)), key)
        return user_id is not None

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
        # PTTL is 0 in a window's last millisecond: the counter still counts until it is gone
        return (int(count), now + ttl / 1000) if count and ttl >= 0 else (0, now)

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
    """Events through one pub/sub channel, to every process.

    ``live`` is proven, not assumed: every ``BEAT_INTERVAL`` the listener sends a PING down its
    own subscribed connection, and Redis answers it in order with the messages it pushes there,
    so a PONG for a PING sent at time t means every event Redis took before t has arrived. The
    bus is live while such a PONG came for a PING sent less than ``stale_after`` seconds ago: a
    connection that stalls without closing stops being live within that time, and a cache over
    this bus stops serving its copies. On one server or a Sentinel's master every publisher
    writes to the server that answers the PING (``proven``); on a Cluster an event may come from
    another node over the cluster bus, which the PING does not cover."""

    def __init__(self, store: RedisSessionStore) -> None:
        super().__init__(shared=True)
        self.store = store
        self.channel = f"{store.prefix}events"
        self.proven = not store.url.startswith(CLUSTER_SCHEME)
        self.stale_after = STALE_AFTER
        self._listener: asyncio.Task[None] | None = None
        self.connected_event = asyncio.Event()  # set while the pub/sub subscription is up
        self._confirmed = -math.inf  # when the newest PING answered was sent (monotonic)
        self._answered = asyncio.Event()  # pulsed at each PONG

    @property
    def live(self) -> bool:
        return (
            self.connected_event.is_set() and time.monotonic() - self._confirmed < self.stale_after
        )

    async def connected(self) -> None:
        """Return once subscribed and a first PING came back through the subscription."""
        await self.connected_event.wait()
        while not self.live:  # the first PONG is one round trip after the subscription
            await self._answered.wait()

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
            beats = None
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
                beats = asyncio.create_task(self._beat(pubsub))
                async for message in pubsub.listen():
                    if message["type"] == "pong":
                        self._pong(message["data"])
                    else:
                        self.deliver(json.loads(message["data"]))
            except UNAVAILABLE as error:
                self.connected_event.clear()
                log.warning("session events: redis unavailable (%s); retrying", error)
                await asyncio.sleep(1)
            finally:
                if beats is not None:
                    beats.cancel()
                if pubsub is not None:
                    if pubsub.connection is not None:  # it goes back to the pool
                        pubsub.connection.deregister_connect_callback(self._resubscribed)
                    await pubsub.aclose()

    async def _beat(self, pubsub: Any) -> None:
        """PING down the subscription every BEAT_INTERVAL, each naming when it was sent."""
        try:
            while True:
                await pubsub.ping(message=repr(time.monotonic()))
                await asyncio.sleep(BEAT_INTERVAL)
        except UNAVAILABLE:
            return  # the listener sees the lost connection too, and starts again

    def _pong(self, data: bytes | str) -> None:
        try:
            sent = float(data)
        except ValueError:
            return  # not one of ours
        if sent > self._confirmed:
            self._confirmed = sent
            self._answered.set()
            self._answered.clear()

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
