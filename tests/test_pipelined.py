"""Session loads over one pipelined connection (``sessions/pipelined.py``), on a real Redis: each
caller gets its own reply however many are in flight, a lost connection is made again, a silent
server times out, and the store turns each failure into StoreUnavailable."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tornado_auth.errors import StoreUnavailable
from tornado_auth.sessions import LocalEventBus, SessionManager, SessionRecord
from tornado_auth.sessions.pipelined import (
    PipelinedConnection,
    RedisTimeout,
    RedisUnavailable,
    ReplyError,
)
from tornado_auth.sessions.redis import RedisSessionStore

from .conftest import REDIS_URL, Store, free_port, require_service
from .helpers import LIFETIME, committed_session


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    require_service("redis")
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def reader() -> AsyncIterator[PipelinedConnection]:
    require_service("redis")
    reader = PipelinedConnection(REDIS_URL)
    yield reader
    reader.close()


async def test_each_of_many_concurrent_reads_gets_its_own_reply(redis, reader) -> None:
    prefix = f"pipelined:{secrets.token_hex(4)}:"
    values = {f"{prefix}{n}": f"value {n} é" * (n % 7 + 1) for n in range(2000)}
    await redis.mset(values)
    keys = [*values, f"{prefix}missing"] * 2
    replies = await asyncio.gather(*(reader.command("GET", key) for key in keys))
    assert replies == [values[key].encode() if key in values else None for key in keys]
    await redis.delete(*values)


async def test_a_caller_that_goes_away_leaves_the_others_their_replies(redis, reader) -> None:
    key = f"pipelined:{secrets.token_hex(4)}"
    await redis.set(key, "kept")
    assert await reader.command("PING") == b"PONG"  # connected
    abandoned = asyncio.ensure_future(reader.command("GET", "no such key"))
    await asyncio.sleep(0)  # now waiting for its reply
    abandoned.cancel()
    assert await reader.command("GET", key) == b"kept"
    assert await reader.command("ECHO", "after") == b"after"
    await redis.delete(key)


async def test_a_read_lost_with_its_connection_is_sent_again_on_a_new_one() -> None:
    connections: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(await reader.read(65536))
        if len(connections) > 1:
            writer.write(b"$6\r\nanswer\r\n")
            await writer.drain()
        writer.close()  # the first connection closes with the command unanswered

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    reader = PipelinedConnection(f"redis://127.0.0.1:{port}/0", timeout=5)
    try:
        assert await reader.command("GET", "k") == b"answer"
    finally:
        reader.close()
        server.close()
    assert connections == [b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"] * 2


async def test_a_connection_the_server_closed_is_made_again_for_the_next_read(
    redis, reader
) -> None:
    key = f"pipelined:{secrets.token_hex(4)}"
    await redis.set(key, "still here")
    first = await reader.command("CLIENT", "ID")
    assert await redis.client_kill_filter(_id=first) == 1
    # the next read finds the connection dead, and is sent again on a new one
    assert await reader.command("GET", key) == b"still here"
    assert await reader.command("CLIENT", "ID") != first
    await redis.delete(key)


async def test_the_url_selects_the_database(redis) -> None:
    base = REDIS_URL.rsplit("/", 1)[0]
    key = f"pipelined:{secrets.token_hex(4)}"
    other = aioredis.Redis.from_url(f"{base}/9", decode_responses=True)
    try:
        await other.set(key, "in db 9")
        reader = PipelinedConnection(f"{base}/9")
        try:
            assert await reader.command("GET", key) == b"in db 9"
        finally:
            reader.close()
        assert await redis.get(key) is None  # not in the default database
    finally:
        await other.delete(key)
        await other.aclose()


async def test_error_replies_are_raised_and_the_connection_goes_on(redis, reader) -> None:
    key = f"pipelined:{secrets.token_hex(4)}"
    await redis.hset(key, "u", "someone")
    with pytest.raises(ReplyError, match=r"^WRONGTYPE"):
        await reader.command("GET", key)
    assert await reader.command("ECHO", "fine") == b"fine"
    await redis.delete(key)


class SilentServer:
    """Accepts connections, records what it is sent, and answers the AUTH/SELECT steps only."""

    def __init__(self) -> None:
        self.received = b""
        self.connected = asyncio.Event()
        self.port = free_port()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        while data := await reader.read(65536):
            self.received += data
            for step in (b"AUTH", b"SELECT"):
                if step in data:
                    writer.write(b"+OK\r\n")
        writer.close()


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    listening = await asyncio.start_server(server.handle, "127.0.0.1", server.port)
    yield server
    listening.close()


async def test_a_server_that_does_not_answer_times_out(silent) -> None:
    reader = PipelinedConnection(f"redis://127.0.0.1:{silent.port}/0", timeout=0.3)
    try:
        with pytest.raises(RedisTimeout, match=r"no answer within 0\.3 s"):
            await reader.command("GET", "k")
    finally:
        reader.close()


async def test_credentials_and_database_are_sent_before_the_first_command(silent) -> None:
    url = f"redis://app:s%40cret@127.0.0.1:{silent.port}/3"
    reader = PipelinedConnection(url, timeout=0.3)
    try:
        with pytest.raises(RedisTimeout):
            await reader.command("GET", "k")
    finally:
        reader.close()
    assert silent.received == (
        b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$6\r\ns@cret\r\n"
        b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    )


async def test_nothing_listening_is_unavailable_at_once() -> None:
    reader = PipelinedConnection(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await reader.command("GET", "k")


async def test_a_closed_reader_never_connects_again(reader) -> None:
    assert await reader.command("PING") == b"PONG"
    reader.close()
    with pytest.raises(RedisUnavailable, match="closed"):
        await reader.command("PING")


async def test_the_store_answers_503_material_when_its_server_is_silent(silent) -> None:
    store = RedisSessionStore(f"redis://127.0.0.1:{silent.port}/0?socket_timeout=0.3")
    await store.start()
    try:
        with pytest.raises(StoreUnavailable, match=r"no answer within 0\.3 s"):
            await store.load("a" * 64)
    finally:
        await store.close()
    with pytest.raises(StoreUnavailable):
        await store.load("a" * 64)  # closed: never reconnects


@pytest.fixture
async def store_with_a_session(tmp_path) -> AsyncIterator[tuple[RedisSessionStore, SessionRecord]]:
    """A Redis session store of its own, holding one signed-in session, and that session."""
    require_service("redis")
    place = Store("redis", tmp_path)
    store = RedisSessionStore(REDIS_URL, place.prefix)
    await store.start()
    try:
        manager = SessionManager(store, LocalEventBus(shared=False), LIFETIME)
        session = await committed_session(manager)
        assert session.record is not None
        yield store, session.record
    finally:
        await store.close()
        await place.cleanup()


async def test_a_touch_works_after_the_server_forgot_its_scripts(
    redis, store_with_a_session
) -> None:
    store, record = store_with_a_session
    await redis.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    later = record.expires_at + 10
    assert await store.update(record.key, {"n": 1}, set(), later - 1, later)
    stored = await store.load(record.key)
    assert stored is not None and stored.data["n"] == 1 and stored.expires_at == later


async def test_values_come_back_as_the_exact_bytes_stored(reader) -> None:
    key = f"pipelined:{secrets.token_hex(4)}"
    raw = aioredis.Redis.from_url(REDIS_URL)  # bytes in, bytes out
    try:
        await raw.set(key, b"ok \xff\xfe")
        connection = await reader.command("CLIENT", "ID")
        assert await reader.command("GET", key) == b"ok \xff\xfe"
        assert await reader.command("CLIENT", "ID") == connection  # the same connection
    finally:
        await raw.delete(key)
        await raw.aclose()


async def test_a_lost_batch_leaves_no_unretrieved_future_exception() -> None:
    """Several commands lost with their connection are sent again, and no failure of the lost
    attempt is left for asyncio to log as never retrieved."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        data = b""
        while data.count(b"*") < 2:
            data += await reader.read(65536)
        if connections > 1:
            writer.write(b"$1\r\na\r\n$1\r\nb\r\n")
            await writer.drain()
        writer.close()  # the first connection closes with both commands unanswered

    unretrieved: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    reader = PipelinedConnection(f"redis://127.0.0.1:{port}/0", timeout=5)
    try:
        assert await reader.commands(["GET", "a"], ["GET", "b"]) == [b"a", b"b"]
    finally:
        reader.close()
        server.close()
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert [c["message"] for c in unretrieved] == []


async def test_a_touch_of_a_session_gone_from_the_store_leaves_the_counts_alone(
    redis, store_with_a_session
) -> None:
    """A touch that finds no record (Redis expired it) moves no count to a later slice of
    expiry, so the count never holds a dead session for a whole ttl."""
    store, record = store_with_a_session
    await redis.delete(store.session_key(record.key))  # as Redis expiring it does
    before = await redis.hgetall(store.count_key)
    later = record.expires_at + 86400
    assert not await store.update(record.key, {}, set(), later - 1, later)
    assert await redis.hgetall(store.count_key) == before


async def test_touches_in_one_batch_move_expiries_and_counts_and_skip_sessions_gone(
    redis, store_with_a_session
) -> None:
    """A batch of touches (one write): each live session's expiry and its count move, a session
    gone from the store stays gone and moves no count, and after the server forgot its scripts
    each touch is still made."""
    store, record = store_with_a_session
    manager = SessionManager(store, LocalEventBus(shared=False), LIFETIME)
    other = (await committed_session(manager)).record
    gone = (await committed_session(manager)).record
    assert other is not None and gone is not None
    await redis.delete(store.session_key(gone.key))  # as Redis expiring it does
    later = record.expires_at + 86400  # a later slice of expiry: the counts move
    assert await store.count(later - 1) == 0
    touches = {key: (later - 1, later) for key in (record.key, gone.key, other.key)}
    assert await store.touch(touches) == [True, False, True]
    for key in (record.key, other.key):
        stored = await store.load(key)
        assert stored is not None and stored.expires_at == later
        assert await redis.pexpiretime(store.session_key(key)) == int(later * 1000)
    assert await store.load(gone.key) is None
    assert await store.count(later - 1) == 2  # the two live ones, and not the one gone
    await redis.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    latest = later + 10
    assert await store.touch({record.key: (latest - 1, latest)}) == [True]
    stored = await store.load(record.key)
    assert stored is not None and stored.expires_at == latest
