"""Sessions in Redis are named by the raw 32 bytes of their SHA-256 key (any other key by a form
that is never 32 bytes long), and sessions under the names before (base64url) are still found,
moved as they are used or swept, until a pass finds none and writes the marker that stops the
look-ups; on one server, a Redis Cluster and a Sentinel group."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from tornado_auth.sessions import Backend, Session, SessionManager
from tornado_auth.sessions.redis import RedisSessionStore, _is_old, _key, _name

from .conftest import Clock
from .helpers import LIFETIME, signed_in_session
from .old_names import old_index_entry, old_name, old_session_key, put_under_old_name

SHA256_KEYS = st.binary(min_size=32, max_size=32).map(bytes.hex)
KEYS = st.one_of(
    SHA256_KEYS,
    st.text(),
    st.text(min_size=31, max_size=31),  # `~` and these would make 32 bytes
    st.text(alphabet="0123456789abcdefABCDEF ", min_size=62, max_size=66),  # hex-like
)


@given(KEYS)
def test_a_name_maps_back_to_its_key_and_only_a_sha256_is_32_bytes(key):
    name = _name(key)
    assert _key(name) == key
    assert (len(name) == 32) == bool(re.fullmatch("[0-9a-f]{64}", key))
    assert not _is_old(name)


@given(KEYS, KEYS)
def test_two_keys_never_share_a_name(first, second):
    assert (_name(first) == _name(second)) == (first == second)


@given(SHA256_KEYS)
def test_old_names_map_back_to_their_keys(key):
    assert _is_old(old_name(key)) and _key(old_name(key)) == key
    assert _name(key) == bytes.fromhex(key)


def test_the_forms_of_keys_that_are_not_a_sha256():
    assert _name("abc") == b"~abc"  # as before raw names
    assert _name("k" * 31) == b"!!" + b"k" * 31  # 33 bytes, not 32
    assert _name("k" * 32) == b"~" + b"k" * 32
    assert _name("AB" * 32) == b"~" + b"AB" * 32  # not lowercase: its raw bytes name "ab" * 32
    # 32 bytes are always a SHA-256 (what `~` and a key of 31 bytes once made reads as one)
    assert _key(b"~" + b"k" * 31) == (b"~" + b"k" * 31).hex()


async def restarted(backend: Backend) -> RedisSessionStore:
    """A new process's store on the same Redis (the caller closes it)."""
    store = RedisSessionStore(backend.store.url, backend.store.prefix)
    await store.start()
    return store


async def under_old_names(manager: SessionManager, *sessions: Session) -> None:
    for session in sessions:
        await manager.commit(session)
        await put_under_old_name(manager.store, session.key)


async def test_sessions_under_old_names_are_found_moved_listed_and_ended(redis_backend):
    backend: RedisSessionStore = redis_backend.store
    client, now = backend.client, time.time()
    writer = SessionManager(backend, redis_backend.events, LIFETIME, Clock(now))
    ann = [signed_in_session("ann") for _ in range(4)]
    bob = [signed_in_session("bob") for _ in range(2)]
    visitor = Session()
    visitor["theme"] = "dark"
    await under_old_names(writer, *ann, *bob, visitor)
    store = await restarted(redis_backend)
    manager = SessionManager(store, redis_backend.events, LIFETIME, Clock(now))
    try:
        assert store._old_names  # no marker: old names may remain
        assert await store.count(now) == 7  # the counts are the same in both layouts
        # read: moved to its raw name with its index entry, at the same expiry
        old = old_session_key(store, ann[0].key)
        expiry = await client.pexpiretime(old)
        loaded = await manager.load(ann[0].token)
        assert loaded is not None and loaded.user_id == "ann" and loaded["role"] == "user"
        assert await client.exists(old) == 0
        assert await client.pexpiretime(store.session_key(ann[0].key)) == expiry
        bucket, member = store.index_entry("ann", ann[0].key)
        old_bucket, old_member = old_index_entry(store, "ann", ann[0].key)
        assert bucket == old_bucket and await client.zscore(bucket, old_member) is None
        assert await client.zscore(bucket, member) == math.ceil(loaded.record.absolute_expires_at)
        # updated without a read first
        assert await store.update(ann[1].key, {"x": 1}, set(), now, now + 60)
        assert (await store.load(ann[1].key)).data["x"] == 1
        # listed: the rest moved too; ended by key and by user
        assert {r.key for r in await manager.list_user("ann")} == {s.key for s in ann}
        assert await client.zscore(bucket, old_index_entry(store, "ann", ann[3].key)[1]) is None
        assert await manager.revoke(bob[0].key)  # never moved: ended under its old name
        assert await client.exists(old_session_key(store, bob[0].key)) == 0
        assert await store.load(bob[0].key) is None
        assert await manager.revoke_user("ann", keep=ann[2].key) == 3
        assert [r.key for r in await manager.list_user("ann")] == [ann[2].key]
        assert await store.count(now) == 3  # ann[2], bob[1], visitor
        # the sweep moves the rest; a later pass finds none and writes the marker
        await store.sweep(now)
        assert store._old_names and not await client.exists(store.names_key)
        assert await client.exists(old_session_key(store, visitor.key)) == 0
        assert await client.exists(store.session_key(visitor.key)) == 1
        await store.sweep(now)
        assert not store._old_names and await client.exists(store.names_key)
        assert [r.key for r in await manager.list_user("bob")] == [bob[1].key]
        assert (await manager.load(visitor.token))["theme"] == "dark"
    finally:
        await store.close()


async def test_once_the_marker_is_written_old_names_are_not_read(redis_backend):
    """A miss costs no look-up of the old name: a session put there is not found, until the
    marker is deleted and a sweep sees it is gone."""
    backend: RedisSessionStore = redis_backend.store
    manager = SessionManager(backend, redis_backend.events, LIFETIME, Clock(time.time()))
    await backend.sweep(time.time())  # nothing under an old name: the marker
    assert not backend._old_names
    late = signed_in_session("ann")
    await under_old_names(manager, late)  # as a process before raw names would
    store = await restarted(redis_backend)
    try:
        assert not store._old_names
        assert await store.load(late.key) is None
        assert await store.list_user("ann") == []
        assert await store.delete(late.key) is False
        await backend.client.delete(backend.names_key)
        await store.sweep(time.time())  # looks again, and moves it
        assert (await store.load(late.key)).user_id == "ann"
    finally:
        await store.close()


async def test_concurrent_requests_of_a_session_under_its_old_name_all_find_it(redis_backend):
    session = signed_in_session("ann")
    await under_old_names(
        SessionManager(redis_backend.store, redis_backend.events, LIFETIME), session
    )
    stores = [await restarted(redis_backend) for _ in range(3)]  # three processes
    try:
        loads = [store.load(session.key) for store in stores for _ in range(5)]
        records = await asyncio.gather(*loads)
        assert all(record is not None and record.user_id == "ann" for record in records)
        client = redis_backend.store.client
        assert await client.exists(old_session_key(stores[0], session.key)) == 0
        bucket, member = stores[0].index_entry("ann", session.key)
        members = [m async for m, _ in client.zscan_iter(bucket)]
        assert members == [member]
    finally:
        for store in stores:
            await store.close()


async def test_a_request_that_misses_both_names_while_another_moves_it_still_finds_it(
    redis_backend, monkeypatch
):
    """The other process moves it after this one missed the raw name and before it reads the
    old one: a move writes the raw name before it deletes the old one, so reading the raw name
    again finds it."""
    session = signed_in_session("ann")
    await under_old_names(
        SessionManager(redis_backend.store, redis_backend.events, LIFETIME), session
    )
    mover, store = await restarted(redis_backend), await restarted(redis_backend)
    old = old_session_key(store, session.key)
    get = store.client.get

    async def moved_first(name):
        if name == old:
            assert await mover.load(session.key) is not None
        return await get(name)

    monkeypatch.setattr(store.client, "get", moved_first)
    try:
        assert (await store.load(session.key)).user_id == "ann"
    finally:
        await mover.close()
        await store.close()


async def test_a_session_ended_under_its_old_name_while_it_is_moved_stays_ended(
    redis_backend, monkeypatch
):
    """A process that only knows the old name ends the session between the copy and the
    deletion of the old name: the copy goes too."""
    session = signed_in_session("ann")
    await under_old_names(
        SessionManager(redis_backend.store, redis_backend.events, LIFETIME), session
    )
    store = await restarted(redis_backend)
    old = old_session_key(store, session.key)
    set_ = store.client.set

    async def ended_meanwhile(name, *args, **kwargs):
        written = await set_(name, *args, **kwargs)
        if name == store.session_key(session.key):
            await redis_backend.store.client.delete(old)  # what that process's revoke does
        return written

    monkeypatch.setattr(store.client, "set", ended_meanwhile)
    try:
        assert await store.load(session.key) is None
        assert await store.client.exists(store.session_key(session.key)) == 0
        assert await store.list_user("ann") == []
        bucket, member = store.index_entry("ann", session.key)
        assert await store.client.zscore(bucket, member) is None
    finally:
        await store.close()


async def test_raw_names_holding_glob_and_hash_tag_bytes_are_listed_and_ended(redis_backend):
    """Raw bytes after the user's tag may be `*`, `?`, `[`, `\\`, a NUL, or make a Cluster hash
    tag `{...}`: the tag's pattern still matches them, and every command touches one slot."""
    backend: RedisSessionStore = redis_backend.store
    manager = SessionManager(backend, redis_backend.events, LIFETIME, Clock(time.time()))
    keys = []
    for n, raw in enumerate([b"*?[\\]{x}\x00", b"{", b"}{ab}", b"\xff" * 8, b"\n\r ~!"]):
        session = signed_in_session("ann")
        await manager.commit(session)
        key = (raw + hashlib.sha256(bytes([n])).digest())[:32].hex()
        await backend.delete(session.key)
        await backend.create(replace(session.record, key=key))
        keys.append(key)
    assert {r.key for r in await manager.list_user("ann")} == set(keys)
    assert [(await backend.load(key)).user_id for key in keys] == ["ann"] * len(keys)
    assert await manager.revoke_user("ann") == len(keys)
    assert [await backend.load(key) for key in keys] == [None] * len(keys)
