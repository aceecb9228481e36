"""How sessions sit in Redis: one MessagePack string each, updated by a script that keeps every
value exactly as written; User-Agents stored once; a bucketed index per user; counts by expiry;
and sessions of the layouts before 0.4 moved when seen (the hash layout before 0.2: signed out)."""

from __future__ import annotations

import json
import math
import time

import msgpack  # type: ignore[import-untyped]

from tornado_auth.sessions import Session, SessionManager
from tornado_auth.sessions.redis import COUNT_SLICE, RedisSessionStore

from .conftest import Clock
from .helpers import LIFETIME, signed_in_session

AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
VALUES = {
    "count": 2**60 + 1,  # past a double's 53 bits
    "huge": -(2**70) - 1,  # past 64 bits: an int, as the standard library reads it
    "edge": 2**64 - 1,  # the largest 64-bit one
    "not_a_number": float("inf"),  # Python writes Infinity, which orjson refuses
    "ratio": 0.1 + 0.2,  # 0.30000000000000004: all 17 digits
    "nothing": None,
    "flag": False,
    "empty_list": [],
    "empty_map": {},
    "nested": {"a": [1, 2.5, {"b": None}], "path": "/x/y"},
    "text": 'é ü 字 🎉 "quoted" back\\slash \t tab',
}


def from_a_browser(user: str = "u1", agent: str = AGENT) -> Session:
    """A session signed in as ``user``, not yet committed, with a browser's User-Agent and an
    address: what a sign-in over HTTP stores beside the data."""
    session = signed_in_session(user)
    session.user_agent = agent
    session.ip = "203.0.113.7"
    return session


def slice_of(at: float) -> bytes:
    return str(int(at // COUNT_SLICE)).encode()


async def test_a_session_is_one_compact_string_with_no_raw_token(redis_backend):
    backend = redis_backend.store
    manager = SessionManager(backend, redis_backend.events, LIFETIME, Clock(time.time()))
    session = from_a_browser()
    await manager.commit(session)
    name = backend.session_key(session.key)
    assert name == f"{backend.prefix}s:".encode() + bytes.fromhex(session.key)  # the raw SHA-256
    stored = await backend.client.get(name)
    assert session.token.encode() not in stored and AGENT.encode() not in stored
    created, seen, expires, absolute, ttl, ip, agent, data, user = msgpack.unpackb(stored)
    assert (user, ip, ttl) == ("u1", "203.0.113.7", LIFETIME.ttl)
    assert json.loads(data["email"]) == "u1@example.com"
    assert seen == created and expires == 0  # 0: a ttl after last seen, not stored
    assert await backend.client.get(backend.agent_key(agent)) == AGENT.encode()  # stored once
    bucket, member = backend.index_entry("u1", session.key)
    assert len(member) == 6 + 32  # the user's tag, then the raw SHA-256
    assert member.endswith(bytes.fromhex(session.key))
    assert await backend.client.zscore(bucket, member) == math.ceil(absolute)
    assert await backend.client.pexpiretime(name) == int((seen + ttl) * 1000)


async def test_sessions_sharing_a_user_agent_store_it_once_until_the_last_ends(redis_backend):
    backend = redis_backend.store
    clock = Clock(time.time())
    manager = SessionManager(backend, redis_backend.events, LIFETIME, clock)
    first = from_a_browser("u1")
    await manager.commit(first)
    clock.now += 3600
    second = from_a_browser("u2")
    await manager.commit(second)
    agent = msgpack.unpackb(await backend.client.get(backend.session_key(first.key)))[6]
    assert agent == msgpack.unpackb(await backend.client.get(backend.session_key(second.key)))[6]
    names = [n async for n in backend.client.scan_iter(match=f"{backend.prefix}a:*")]
    assert names == [backend.agent_key(agent).encode()]
    # kept until the later session's absolute expiry
    expected = int(second.record.absolute_expires_at * 1000)
    assert await backend.client.pexpiretime(backend.agent_key(agent)) == expected
    # a process that never saw it reads it from Redis
    other = RedisSessionStore(backend.url, backend.prefix)
    await other.start()
    try:
        assert (await other.load(first.key)).user_agent == AGENT
    finally:
        await other.close()


async def test_values_survive_updates_by_the_script_exactly(redis_backend):
    backend = redis_backend.store
    clock = Clock(time.time())
    manager = SessionManager(backend, redis_backend.events, LIFETIME, clock)
    session = Session()
    session.login("u1", {"email": "a@example.com"}, False, LIFETIME.ttl)
    session.user_agent = AGENT + " é"
    await manager.commit(session)
    loaded = await manager.load(session.token)
    for name, value in VALUES.items():
        loaded[name] = value
    await manager.commit(loaded)  # the script decodes and re-encodes the whole session...
    clock.now += 61
    again = await manager.load(session.token)
    again["extra"] = 1
    del again["email"]
    await manager.commit(again)  # ...and again, with a touch and a removal
    final = await backend.load(session.key)
    assert final.data == VALUES | {"extra": 1, "remember_me": False}
    assert all(type(final.data[name]) is type(value) for name, value in VALUES.items())
    assert final.user_agent == AGENT + " é"
    assert final.last_seen_at == clock.now  # times round-trip to the last bit
    assert final.expires_at == clock.now + LIFETIME.ttl


async def test_removing_every_data_key_leaves_an_empty_mapping(redis_backend):
    backend = redis_backend.store
    manager = SessionManager(backend, redis_backend.events, LIFETIME, Clock(time.time()))
    session = Session()
    session["theme"] = "dark"
    await manager.commit(session)
    loaded = await manager.load(session.token)
    del loaded["theme"]
    await manager.commit(loaded)
    assert (await backend.load(session.key)).data == {}


async def test_counts_follow_sign_ins_touches_and_ends(redis_backend):
    backend = redis_backend.store
    clock = Clock(time.time())
    manager = SessionManager(backend, redis_backend.events, LIFETIME, clock)
    sessions = [from_a_browser(f"u{n}") for n in range(3)]
    for session in sessions:
        await manager.commit(session)
    assert await backend.count(clock.now) == 3
    first = sessions[0].record.expires_at
    clock.now += 2 * COUNT_SLICE  # a touch moves its count to a later slice of expiry
    touched = await manager.load(sessions[0].token)
    await manager.commit(touched)
    later = touched.record.expires_at
    counts = await backend.client.hgetall(backend.count_key)
    assert counts == {slice_of(first): b"2", slice_of(later): b"1"}
    await manager.revoke(sessions[1].key)
    await manager.revoke_user("u2")
    assert await backend.client.hgetall(backend.count_key) == {slice_of(later): b"1"}
    assert await backend.count(clock.now) == 1
    await backend.sweep(later + COUNT_SLICE)  # past slices go
    assert await backend.client.hgetall(backend.count_key) == {}


async def test_a_user_index_entry_with_another_users_tag_is_theirs(redis_backend):
    """Two users whose digests begin alike share a bucket and a tag: neither sees, nor ends, nor
    drops the other's sessions."""
    backend = redis_backend.store
    manager = SessionManager(backend, redis_backend.events, LIFETIME, Clock(time.time()))
    mine, theirs = from_a_browser("me"), from_a_browser("them")
    await manager.commit(mine)
    await manager.commit(theirs)
    bucket, member = backend.index_entry("me", theirs.key)  # as if "them" had my digest
    await backend.client.zadd(bucket, {member: theirs.record.absolute_expires_at})
    assert [r.key for r in await manager.list_user("me")] == [mine.key]
    assert await manager.revoke_user("me") == 1
    assert await backend.load(theirs.key) is not None
    assert await backend.client.zscore(bucket, member) is not None  # left alone


async def test_index_entries_of_expired_sessions_go_when_the_user_is_listed(redis_backend):
    backend = redis_backend.store
    manager = SessionManager(backend, redis_backend.events, LIFETIME, Clock(time.time()))
    session = from_a_browser()
    await manager.commit(session)
    await backend.client.delete(backend.session_key(session.key))  # as Redis expires it
    assert await manager.list_user("u1") == []
    bucket, member = backend.index_entry("u1", session.key)
    assert await backend.client.zscore(bucket, member) is None


async def legacy_session(client, prefix: str, key: str, user: str, now: float) -> None:
    """A session as versions before 0.4 stored it."""
    times = {"c": repr(now), "l": repr(now), "e": repr(now + 3600), "a": repr(now + 86400)}
    document = times | {"t": "3600.0", "ip": "198.51.100.1", "ua": AGENT, "u": user}
    document["d"] = {"email": json.dumps(f"{user}@example.com"), "big": json.dumps(2**70)}
    await client.set(f"{prefix}s:{key}", json.dumps(document), pxat=int((now + 3600) * 1000))
    await client.zadd(f"{prefix}live", {key: now + 3600})
    await client.zadd(f"{prefix}u:{user}", {key: now + 86400})


async def test_sessions_of_the_layout_before_0_4_are_moved_when_seen(redis_backend):
    backend = redis_backend.store
    client, prefix, now = backend.client, backend.prefix, time.time()
    keys = [f"{n:064x}" for n in range(1, 5)]
    for key in keys[:3]:
        await legacy_session(client, prefix, key, "old", now)
    await legacy_session(client, prefix, keys[3], "other", now)
    store = RedisSessionStore(backend.url, prefix)  # started on a store holding them
    await store.start()
    manager = SessionManager(store, redis_backend.events, LIFETIME, Clock(now))
    try:
        assert await store.count(now) == 4
        loaded = await store.load(keys[0])  # moved as it is read
        assert loaded.user_id == "old" and loaded.user_agent == AGENT
        assert loaded.data == {"email": "old@example.com", "big": 2**70}
        assert loaded.expires_at == now + 3600 and loaded.absolute_expires_at == now + 86400
        assert await client.exists(f"{prefix}s:{keys[0]}") == 0
        assert await store.load(keys[0]) == loaded
        listed = {record.key for record in await manager.list_user("old")}  # moves the rest
        assert listed == set(keys[:3])
        assert await manager.revoke_user("old", keep=keys[2]) == 2
        assert {r.key for r in await manager.list_user("old")} == {keys[2]}
        assert await manager.revoke(keys[3])  # never moved: ended where it is
        assert await client.exists(f"{prefix}s:{keys[3]}") == 0
        assert await store.count(now) == 1
        await store.sweep(now)
        assert await client.exists(f"{prefix}live") == 0  # every old session moved or ended
        assert not store._legacy
    finally:
        await store.close()


async def test_a_session_in_the_old_hash_layout_reads_as_signed_out(redis_backend):
    backend = redis_backend.store
    key, now = "ab" * 32, time.time()
    legacy = {"c": now, "l": now, "e": now + 3600, "a": now + 86400, "t": 3600, "u": "u1"}
    await backend.client.hset(f"{backend.prefix}s:{key}", mapping=legacy | {"ip": "", "ua": ""})
    await backend.client.zadd(f"{backend.prefix}live", {key: now + 3600})
    store = RedisSessionStore(backend.url, backend.prefix)
    await store.start()
    try:
        assert await store.load(key) is None  # anonymous, not a 500
        assert await store.update(key, {"x": 1}, set(), now, now + 7200) is False
        assert await store.list_user("u1") == []
        assert await store.delete(key) is True  # and it can still be ended
        assert await backend.client.exists(f"{backend.prefix}s:{key}") == 0
    finally:
        await store.close()
