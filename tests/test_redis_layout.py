"""How sessions sit in Redis: one JSON string each, updated by a script that keeps every value
exactly as written, and sessions left by the earlier hash layout read as signed out."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth.sessions import Backend, Session, SessionManager, backend_for_url

from .conftest import REDIS_URLS, Clock, Store, require_service
from .helpers import LIFETIME

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


@pytest.fixture(params=list(REDIS_URLS))
async def redis_backend(request, tmp_path: Path) -> AsyncIterator[Backend]:
    require_service(request.param)
    store = Store(request.param, tmp_path)
    backend = backend_for_url(store.session_url(), store.prefix)
    await backend.start()
    yield backend
    await backend.close()
    await store.cleanup()


async def test_a_session_is_one_string_with_no_raw_token(redis_backend):
    backend = redis_backend.store
    manager = SessionManager(backend, redis_backend.events, LIFETIME, Clock(time.time()))
    session = Session()
    session.login("u1", {"email": "a@example.com", "role": "user"}, False, LIFETIME.ttl)
    session.user_agent = AGENT
    await manager.commit(session)
    stored = await backend.client.get(backend.session_key(session.key))
    assert session.token not in stored
    document = json.loads(stored)
    assert document["u"] == "u1" and document["ua"] == AGENT
    assert json.loads(document["d"]["email"]) == "a@example.com"


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


async def test_a_session_in_the_old_hash_layout_reads_as_signed_out(redis_backend):
    backend = redis_backend.store
    manager = SessionManager(backend, redis_backend.events, LIFETIME, Clock(time.time()))
    session = Session()
    session.login("u1", {"email": "a@example.com"}, False, LIFETIME.ttl)
    await manager.commit(session)
    key = backend.session_key(session.key)
    await backend.client.delete(key)
    now = time.time()
    legacy = {"c": now, "l": now, "e": now + 3600, "a": now + 86400, "t": 3600, "u": "u1"}
    await backend.client.hset(key, mapping=legacy | {"ip": "", "ua": "", "d:email": '"a"'})
    assert await manager.load(session.token) is None  # anonymous, not a 500
    assert await backend.update(session.key, {"x": 1}, set(), now, now + 7200) is False
    assert [r.key for r in await manager.list_user("u1")] == []
    assert await manager.revoke(session.key) is True  # and it can still be ended
    assert await backend.client.exists(key) == 0
