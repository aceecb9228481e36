"""Every Redis command the session store sends would run on Redis Cluster: no command, and no
MULTI/EXEC block, touches keys of more than one hash slot."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from pathlib import Path

import redis.asyncio as aioredis
from redis.crc import key_slot

from tornado_auth.sessions import Counters, Session, SessionManager, backend_for_url

from .conftest import REDIS_URL, Store, require_service
from .helpers import LIFETIME, signed_in_session
from .old_names import put_under_old_name

TOUCHING = replace(LIFETIME, touch_interval=0)  # every load touches: those commands too
SINGLE_KEY = {
    "HGETALL", "HSET", "HDEL", "HGET", "PEXPIREAT", "PEXPIRE", "ZADD", "ZREM", "ZRANGE",
    "ZREMRANGEBYSCORE", "ZCARD", "INCR", "PTTL", "GET", "SET", "EXPIRE", "EXISTS", "INCRBY",
    "ZSCAN", "ZSCORE", "ZCOUNT", "HKEYS", "HINCRBY", "PEXPIRETIME",
}  # fmt: skip
NO_KEYS = {
    "PING", "PUBLISH", "SUBSCRIBE", "MULTI", "EXEC", "SCRIPT", "CLIENT", "HELLO", "SELECT", "SCAN",
}  # fmt: skip
MONITOR_LINE = re.compile(r"^\S+ \[\d+ (\S+)\] (.*)$", re.S)
QUOTED_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)", re.S)
UNESCAPED = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b"}


def monitor_entry(line: str) -> tuple[str, list[str]]:
    """(client, arguments) of one MONITOR line; each argument is quoted there, with C escapes, so
    one holding a quote or a space stays one argument."""
    match = MONITOR_LINE.match(line)
    assert match, line
    client, rest = match.groups()

    def unescape(m: re.Match[str]) -> str:
        code = m.group(1)
        return (
            chr(int(code[1:], 16))
            if code[0] == "x" and len(code) == 3
            else UNESCAPED.get(code, code)
        )

    return client, [ESCAPE.sub(unescape, arg) for arg in QUOTED_ARG.findall(rest)]


def as_bytes(key: str) -> bytes:
    """A key from ``monitor_entry`` as the bytes it was: MONITOR escapes every byte that is not
    printable ASCII, so each character stands for one byte."""
    return key.encode("latin-1")


def keys_of(command: list[str]) -> list[str]:
    name = command[0].upper()
    if name in SINGLE_KEY:
        return [command[1]]
    if name == "DEL":
        return command[1:]
    if name in ("EVALSHA", "EVAL"):
        return command[3 : 3 + int(command[2])]
    assert name in NO_KEYS, f"unexpected command {name}: classify its keys"
    return []


async def exercise(manager: SessionManager, counters: Counters) -> None:
    """Everything the app does with Redis: sign-ins, touches, changes, lists, revocations, and
    sessions under their old names moved when loaded, updated, listed, ended or swept."""
    redis_store = counters.store
    old = [signed_in_session(user) for user in ("bob", "carol", "dave", "bob")] + [Session()]
    old[4]["theme"] = "light"  # an anonymous session: in no user index
    for session in old:
        await manager.commit(session)
        await put_under_old_name(redis_store, session.key)
    assert await manager.load(old[0].token) is not None  # moved as it is read
    assert await redis_store.update(old[1].key, {"x": 1}, set(), time.time(), time.time() + 60)
    assert await manager.revoke(old[2].key)
    assert len(await manager.list_user("bob")) == 2  # moves old[3]
    sessions = []
    for _ in range(4):  # one past the cap: the oldest is trimmed
        session = Session()
        session.login("alice", {"email": "a@example.com", "role": "user"}, False, LIFETIME.ttl)
        await manager.commit(session)
        sessions.append(session)
    loaded = await manager.load(sessions[-1].token)
    loaded["theme"] = "dark"
    del loaded["role"]
    await manager.commit(loaded)
    loaded.regenerate()
    await manager.commit(loaded)
    await manager.list_user("alice")
    await manager.store.count(time.time())
    await manager.store.sweep(time.time())  # moves old[4]
    assert not await redis_store.client.exists(redis_store.names_key)
    await manager.store.sweep(time.time())  # finds no old name: the marker
    assert await redis_store.client.exists(redis_store.names_key)
    assert await manager.load(old[4].token) is not None
    await counters.hit("login:x", 60, time.time())
    await counters.peek("login:x", time.time())
    await counters.clear("login:x")
    await manager.revoke(sessions[1].key)
    await manager.revoke_user("alice", keep=loaded.key)
    loaded.destroy()
    await manager.commit(loaded)


async def test_no_command_spans_hash_slots(tmp_path: Path):
    require_service("redis")
    place = Store("redis", tmp_path)
    backend = backend_for_url(REDIS_URL, place.prefix, cache_size=100, cache_ttl=60)
    await backend.start()
    manager = SessionManager(backend.store, backend.events, TOUCHING, max_per_user=3)
    seen: list[tuple[str, list[str]]] = []  # (client address, arguments)
    monitor_client = aioredis.from_url(REDIS_URL)  # raw bytes: decoded below
    started, finished = asyncio.Event(), asyncio.Event()

    async def record() -> None:
        async with monitor_client.monitor() as monitor:
            started.set()
            while True:  # raw lines: redis-py's parsed entry joins the arguments with spaces
                raw = await monitor.connection.read_response()
                client, args = monitor_entry(raw.decode("utf-8", "surrogateescape"))
                text = " ".join(args)
                if args[0].upper() == "ECHO" and place.prefix in text:
                    finished.set()  # MONITOR lists commands in order: this was the last
                elif place.prefix in text or args[0].upper() in ("MULTI", "EXEC"):
                    seen.append((client, args))

    watcher = asyncio.create_task(record())
    await started.wait()
    try:
        await exercise(manager, backend.counters)
        await backend.counters.store.client.echo(f"{place.prefix}done")
        await asyncio.wait_for(finished.wait(), 10)
    finally:
        watcher.cancel()
        await monitor_client.aclose()
        await backend.close()
        await place.cleanup()
    # this store's connections only: other clients of the server run transactions too
    ours = {client for client, args in seen if any(place.prefix in a for a in args)}
    commands = [args for client, args in seen if client in ours]

    assert any(c[0].upper() == "EVALSHA" for c in commands), "the scripts were exercised"
    block: list[str] | None = None
    for command in commands:
        name = command[0].upper()
        if name == "MULTI":
            block = []
        elif name == "EXEC":
            assert block is not None and len({key_slot(as_bytes(k)) for k in block}) <= 1, block
            block = None
        else:
            keys = keys_of(command)
            assert len({key_slot(as_bytes(k)) for k in keys}) <= 1, command
            if block is not None:
                block.extend(keys)


def test_monitor_lines_keep_each_argument_whole():
    """The parser above: a value holding quotes, spaces or escapes stays one argument."""
    line = '1700000000.1 [0 127.0.0.1:5000] "HSET" "s:{a}" "d" "it\'s \\"x\\" y\\x00\\n"'
    assert monitor_entry(line) == ("127.0.0.1:5000", ["HSET", "s:{a}", "d", 'it\'s "x" y\x00\n'])
    assert monitor_entry('1.0 [0 lua] "ZCARD" "u:{b}"') == ("lua", ["ZCARD", "u:{b}"])
