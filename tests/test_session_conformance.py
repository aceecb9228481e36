"""The session semantics, run against every backend: memory, SQLite, real Redis (one server,
Cluster, Sentinel) and a MongoDB wire-protocol server: mongod when present, else FerretDB (on
PostgreSQL by default, or SQLite), which the services script runs one command at a time. On
FerretDB, MongoDB's TTL indexes (not implemented there: the sweep removes expired sessions),
``w: majority`` writes (accepted by a server with no replica set) and truly concurrent commands
are not exercised. A cookie whose signature fails is refused before any store is asked: that test
runs on one store."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import MutableMapping

import pytest
from tornado.web import create_signed_value, decode_signed_value

from tornado_auth.sessions import (
    CookieChange,
    Lifetime,
    Session,
    SessionManager,
    StoreUnavailable,
    Write,
    backend_for_url,
    token_key,
)

from .conftest import PASSWORD, Clock, Store, body, serving, settings_for
from .counting import CountingStore, count_writes
from .helpers import HOUR, LIFETIME, committed_session


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(backend, clock) -> SessionManager:
    return SessionManager(backend.store, backend.events, LIFETIME, clock)


@pytest.fixture
def counted(manager) -> CountingStore:
    """The writes ``manager`` makes."""
    return count_writes(manager)


async def test_token_has_256_bits_and_store_keys_by_its_sha256(manager, store: Store, backend):
    session = await committed_session(manager)
    token = session.token
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 == 256
    assert token.rstrip("=") == token and "+" not in token and "/" not in token  # URL-safe
    assert (await committed_session(manager)).token != token
    assert session.key == hashlib.sha256(token.encode()).hexdigest()
    dump = await store.dump(backend)
    assert session.key in dump
    assert token not in dump


async def test_http_login_leaves_no_raw_token_in_the_store(server, store: Store):
    await server.add_user("ann@example.com", "password123")
    client = server.client()
    assert (await client.login("ann@example.com", "password123")).code == 200
    cookie = client.cookies["session"].strip('"')
    token = decode_signed_value(server.secret, "session", cookie).decode()
    dump = await store.dump(server.services.backend)
    assert token_key(token) in dump
    assert token not in dump


async def test_sliding_expiry_touches_at_most_once_per_interval(manager, counted, clock):
    session = await committed_session(manager)
    writes = counted.writes
    clock.now += 30  # inside touch_interval: nothing to write
    loaded = await manager.load(session.token)
    assert await manager.commit(loaded) is None
    assert counted.writes == writes
    clock.now += 60  # past touch_interval: one write, and the cookie moves with the expiry
    loaded = await manager.load(session.token)
    change = await manager.commit(loaded)
    assert counted.writes == writes + 1
    assert change is not None and change.max_age == int(LIFETIME.ttl)
    reloaded = await manager.load(session.token)
    assert reloaded.record.expires_at == clock.now + LIFETIME.ttl


async def test_requests_that_loaded_before_a_touch_do_not_touch_again(manager, counted, clock):
    session = await committed_session(manager)
    loaded = [await manager.load(session.token) for _ in range(6)]  # in flight together
    clock.now += 61
    writes = counted.writes
    first, *others = loaded
    changes = await asyncio.gather(*(manager.commit(request) for request in [first, *others]))
    assert counted.writes == writes + 1  # one touch for the six requests
    assert changes[0] is not None and changes[0].max_age == int(LIFETIME.ttl)
    assert changes[1:] == [None] * 5  # the cookie went out once; the others send none
    reloaded = await manager.load(session.token)
    assert reloaded.record.expires_at == clock.now + LIFETIME.ttl


async def test_a_touch_of_a_session_ended_while_its_request_ran_clears_the_cookie(manager, clock):
    session = await committed_session(manager)
    clock.now += LIFETIME.touch_interval + 1
    loaded = await manager.load(session.token)  # a request loads it; a touch is due...
    plan = manager.plan(loaded)
    assert plan is not None and plan.write is Write.TOUCH
    assert await manager.revoke(session.key)  # ...it is revoked meanwhile (another tab)...
    assert manager.touch(loaded, plan) == CookieChange(None)  # ...and its cookie is cleared
    await manager.touches_written()
    assert await manager.load(session.token) is None


async def test_a_late_write_of_an_older_expiry_never_moves_it_back(manager, backend, clock):
    session = await committed_session(manager)
    key, record = session.key, session.record
    later_seen, later = clock.now + 120, record.expires_at + 120
    assert await backend.store.update(key, {}, set(), later_seen, later)  # one request's touch...
    # ...then another request's change, written with the expiry it loaded before that touch
    assert await backend.store.update(
        key, {"theme": "dark"}, set(), record.last_seen_at, record.expires_at
    )
    stored = await backend.store.load(key)
    assert stored.data["theme"] == "dark"
    assert (stored.last_seen_at, stored.expires_at) == (later_seen, later)
    if hasattr(backend.store, "count_key"):  # Redis: the key's own expiry and its count agree
        assert await backend.store.client.pexpiretime(backend.store.session_key(key)) == int(
            later * 1000
        )
        assert await backend.store.count(later - 1) == 1


async def test_idle_session_expires_and_is_never_returned(manager, clock):
    session = await committed_session(manager)
    clock.now += LIFETIME.ttl + 1
    assert await manager.load(session.token) is None


async def test_remember_me_lives_long_but_absolute_ttl_caps_it(manager, clock):
    session = await committed_session(manager, remember=True)
    assert session.record.expires_at == clock.now + LIFETIME.absolute_ttl  # capped at 48h
    for _ in range(47):  # active every hour: sliding keeps it alive...
        clock.now += HOUR
        loaded = await manager.load(session.token)
        assert loaded is not None
        await manager.commit(loaded)
    clock.now += HOUR + 1  # ...until the absolute cap since login
    assert await manager.load(session.token) is None


async def test_redis_key_ttl_follows_expiry(tmp_path):
    """Redis expires a session by itself, exactly when the session layer would."""

    from .conftest import require_service

    require_service("redis")
    place = Store("redis", tmp_path)
    backend = backend_for_url(place.session_url(), place.prefix)
    await backend.start()
    clock = Clock(time.time())
    manager = SessionManager(backend.store, backend.events, LIFETIME, clock)
    try:
        session = await committed_session(manager)
        pttl = await backend.store.client.pttl(backend.store.session_key(session.key))
        assert abs(pttl / 1000 - LIFETIME.ttl) < 5
        clock.now += 12 * HOUR
        loaded = await manager.load(session.token)
        await manager.commit(loaded)
        pttl = await backend.store.client.pttl(backend.store.session_key(session.key))
        assert abs(pttl / 1000 - (LIFETIME.ttl + 12 * HOUR)) < 5
    finally:
        await backend.close()
        await place.cleanup()


async def test_visitor_who_stores_nothing_costs_no_write(manager, counted):
    assert await manager.commit(Session()) is None
    assert counted.writes == 0


async def test_unchanged_session_is_not_written(manager, counted):
    session = await committed_session(manager)
    writes = counted.writes
    loaded = await manager.load(session.token)
    loaded["role"] = "user"  # the same value: not a change
    assert await manager.commit(loaded) is None
    assert counted.writes == writes


async def test_regenerate_keeps_data_and_kills_old_token(manager):
    session = await committed_session(manager)
    old_token = session.token
    loaded = await manager.load(old_token)
    loaded["theme"] = "dark"
    loaded.regenerate()
    change = await manager.commit(loaded)
    assert change.token != old_token
    assert await manager.load(old_token) is None
    fresh = await manager.load(change.token)
    assert fresh["theme"] == "dark" and fresh["email"] == "u1@example.com"
    assert fresh.user_id == "u1"


async def test_destroy_removes_record(manager, backend):
    session = await committed_session(manager)
    loaded = await manager.load(session.token)
    loaded.destroy()
    change = await manager.commit(loaded)
    assert change is not None and change.token is None
    assert await backend.store.load(session.key) is None


async def test_user_index_lists_and_revokes_sessions(manager):
    first = await committed_session(manager, "alice")
    second = await committed_session(manager, "alice")
    other = await committed_session(manager, "bob")
    listed = {record.key for record in await manager.list_user("alice")}
    assert listed == {first.key, second.key}
    assert await manager.revoke_user("alice", keep=first.key) == 1
    assert await manager.load(second.token) is None
    assert await manager.load(first.token) is not None
    assert await manager.revoke_user("alice") == 1
    assert await manager.list_user("alice") == []
    assert await manager.load(other.token) is not None


async def test_concurrent_writers_of_different_keys_all_survive(manager):
    session = await committed_session(manager)
    writers = 12
    loaded = [await manager.load(session.token) for _ in range(writers)]  # all read first

    async def write(index: int) -> None:
        loaded[index][f"key{index}"] = index
        await manager.commit(loaded[index])

    await asyncio.gather(*(write(index) for index in range(writers)))
    final = await manager.load(session.token)
    assert {f"key{i}": i for i in range(writers)}.items() <= dict(
        (name, final[name]) for name in final
    ).items()


async def test_update_after_revocation_does_not_resurrect(manager, backend):
    session = await committed_session(manager)
    loaded = await manager.load(session.token)
    await manager.revoke(session.key)
    loaded["late"] = True
    change = await manager.commit(loaded)
    assert change is not None and change.token is None
    assert await backend.store.load(session.key) is None


async def test_expired_records_are_removed_by_the_sweep_or_the_store(
    manager, backend, store: Store, clock
):
    session = await committed_session(manager)
    assert await backend.store.sweep(clock.now) == 0
    if store.kind == "redis":  # Redis removes them itself: the key carries the expiry
        expires_at = await backend.store.client.pexpiretime(backend.store.session_key(session.key))
        assert expires_at == int(session.record.expires_at * 1000)
        return
    assert await backend.store.sweep(clock.now + LIFETIME.ttl + 1) == 1
    assert await backend.store.load(session.key) is None


async def test_counters_count_within_a_window_and_clear(backend, clock):
    assert await backend.counters.peek("login:x", clock.now) == (0, clock.now)
    assert await backend.counters.hit("login:x", 600, clock.now) == (
        1,
        pytest.approx(clock.now + 600, abs=1),
    )
    count, ends = await backend.counters.hit("login:x", 600, clock.now + 1)
    assert count == 2 and ends == pytest.approx(clock.now + 600, abs=1)
    assert (await backend.counters.peek("login:x", clock.now + 2))[0] == 2
    assert (await backend.counters.peek("login:y", clock.now))[0] == 0
    await backend.counters.clear("login:x")
    assert (await backend.counters.peek("login:x", clock.now + 3))[0] == 0


async def test_counter_window_ends(backend, store: Store):

    now = time.time()  # Redis expires counters by its own clock
    await backend.counters.hit("login:w", 0.2, now)
    assert (await backend.counters.peek("login:w", now))[0] == 1
    later = now + 0.3
    deadline = time.monotonic() + 10
    while (await backend.counters.peek("login:w", later))[0] != 0:
        assert store.kind == "redis", "the window ended by the caller's clock"
        assert time.monotonic() < deadline, "Redis never expired the counter"
        await asyncio.sleep(0.02)  # Redis expires the counter by its own clock
    assert (await backend.counters.hit("login:w", 0.2, later))[0] == 1


# -- through HTTP: the BaseHandler's resolution of the cookie -----------------------------------


async def test_anonymous_request_gets_no_cookie_and_no_write(server):
    counted = count_writes(server.services.sessions)
    response = await server.client().get("/api/dashboard")
    assert response.code == 401
    assert "Set-Cookie" not in response.headers
    assert counted.writes == 0


async def test_authenticated_request_within_touch_interval_writes_nothing(server):
    await server.add_user("ann@example.com")
    client = server.client()
    await client.login("ann@example.com", PASSWORD)
    counted = count_writes(server.services.sessions)
    for _ in range(3):
        response = await client.get("/api/dashboard")
        assert response.code == 200
        assert "Set-Cookie" not in response.headers
    assert counted.writes == 0


@pytest.mark.store_independent  # refused by the signature check, before any store is asked
@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "2|1:0|10:1700000000|7:session|8:dG9rZW4=|" + "0" * 64,  # bad signature
        "",
        "\u00e9t\u00e9",
    ],
)
async def test_invalid_cookie_is_anonymous_and_cleared(server, cookie):
    client = server.client()
    response = await client.get("/api/dashboard", headers={"Cookie": f"session={cookie}"})
    assert response.code == 401
    assert body(response) == {"error": "Not authenticated"}
    cleared = [h for h in response.headers.get_list("Set-Cookie") if h.startswith("session=")]
    assert cleared and "expires=" in cleared[0].lower()


async def test_unknown_token_with_valid_signature_is_anonymous(server):
    secret = server.secret
    forged = create_signed_value(secret, "session", "no-such-token").decode()
    response = await server.client().get("/api/dashboard", headers={"Cookie": f"session={forged}"})
    assert response.code == 401


async def test_cookie_signed_with_old_key_version_is_reissued(store: Store):
    from .conftest import settings_for, start_server, stop_server

    old = await start_server(
        settings_for(store, secrets__cookie_secret={1: "a" * 40}, secrets__key_version=1)
    )
    await old.add_user("ann@example.com")
    client = old.client()
    await client.login("ann@example.com", PASSWORD)
    rotated = {1: "a" * 40, 2: "b" * 40}
    new = await start_server(
        old.services.settings, old.services, cookie_secret=rotated, key_version=2
    )
    try:
        client.base_url = new.base_url
        response = await client.get("/api/dashboard")
        assert response.code == 200
        reissued = [h for h in response.headers.get_list("Set-Cookie") if h.startswith("session=")]
        assert reissued and "|1:2|" in reissued[0]  # now signed with key version 2
        assert (await client.get("/api/dashboard")).code == 200
    finally:
        new.http.stop()
        await stop_server(old)


# -- caps: sessions per user, index entries of expired sessions -----------------------------------


async def heard_events(backend) -> asyncio.Queue:
    """Every event the store delivers from now on."""
    events: asyncio.Queue = asyncio.Queue()
    backend.events.subscribe(events.put_nowait)
    await asyncio.wait_for(backend.events.connected(), 5)  # Redis: once subscribed
    return events


async def test_a_sign_in_past_the_per_user_cap_ends_the_oldest_sessions(backend, clock):
    manager = SessionManager(backend.store, backend.events, LIFETIME, clock, max_per_user=3)
    events = await heard_events(backend)
    sessions = []
    for _ in range(5):
        clock.now += 1
        sessions.append(await committed_session(manager, "alice"))
    other = await committed_session(manager, "bob")
    listed = {record.key for record in await manager.list_user("alice")}
    assert listed == {session.key for session in sessions[2:]}  # the three newest
    for session in sessions[:2]:
        assert await manager.load(session.token) is None
    assert await manager.load(other.token) is not None
    ended = []
    while len(ended) < 2:  # announced like any other end, so their sockets close
        event = await asyncio.wait_for(events.get(), 5)
        if event["type"] == "ended":
            assert (event["user"], event["reason"]) == ("alice", "limit")
            ended += event["keys"]
    assert ended == [sessions[0].key, sessions[1].key]


async def test_concurrent_sign_ins_of_one_user_leave_exactly_the_cap(backend, clock):
    """Each creation trims after it is stored, so the last trim sees every session: a burst may
    overshoot while it runs, never once it is done, and never ends one of the newest."""
    manager = SessionManager(backend.store, backend.events, LIFETIME, clock, max_per_user=5)
    sessions = []
    for _ in range(30):
        session = Session()
        session.login("alice", {"email": "alice@example.com"}, False, LIFETIME.ttl)
        sessions.append(session)
    await asyncio.gather(*(manager.commit(session) for session in sessions))
    assert len(await manager.list_user("alice")) == 5
    alive = [session for session in sessions if await manager.load(session.token) is not None]
    assert len(alive) == 5


async def test_no_store_keeps_entries_of_expired_sessions_without_anyone_watching(
    backend, store: Store
):
    """Sessions that expire by themselves leave nothing behind (records, the Redis live and user
    indexes) once the periodic sweep has run and the user signed in again; no dashboard open."""

    lifetime = Lifetime(ttl=HOUR, remember_me_ttl=HOUR, absolute_ttl=48 * HOUR, touch_interval=60)
    clock = Clock(time.time() - 2 * HOUR)  # idle-expired an hour ago, by Redis's clock too
    manager = SessionManager(backend.store, backend.events, lifetime, clock, max_per_user=2)

    expired = [await committed_session(manager, "alice") for _ in range(3)]
    visitor = Session()  # a session of nobody, in no user index
    visitor["theme"] = "dark"
    await manager.commit(visitor)
    expired.append(visitor)
    clock.now = time.time()
    await backend.sweep(clock.now)  # what the periodic sweeper does
    fresh = await committed_session(manager, "alice")
    if store.kind == "sqlite":  # the file keeps deleted rows' bytes in free pages: read rows
        rows = await backend.store.db.run(
            lambda db: db.execute("SELECT * FROM sessions").fetchall()
        )
        dump = repr(rows)
    else:
        dump = await store.dump(backend)
    assert fresh.key in dump
    for session in expired:
        assert session.key not in dump


async def test_the_session_is_a_mutable_mapping_whose_every_change_is_committed(manager):
    session = await committed_session(manager)
    loaded = await manager.load(session.token)
    assert isinstance(loaded, MutableMapping)
    assert loaded.pop("role") == "user"
    assert loaded.pop("missing", "fallback") == "fallback"
    assert loaded.setdefault("theme", "dark") == "dark"
    assert loaded.setdefault("theme", "light") == "dark"
    loaded.update({"lang": "fr"}, count=1)
    assert "lang" in loaded and "role" not in loaded
    assert set(loaded) == {"email", "remember_me", "theme", "lang", "count"} == set(loaded.keys())
    assert len(loaded) == 5 and dict(loaded.items())["count"] == 1
    await manager.commit(loaded)
    stored = await manager.load(session.token)
    assert dict(stored) == {
        "email": "u1@example.com",
        "remember_me": False,
        "theme": "dark",
        "lang": "fr",
        "count": 1,
    }
    stored.clear()
    assert manager.plan(stored) is not None  # every removal is a change to write
    await manager.commit(stored)
    assert dict(await manager.load(session.token)) == {}


async def test_the_periodic_sweep_runs_for_every_store(store: Store):
    from .conftest import serving, settings_for

    async with serving(settings_for(store, sessions__sweep_interval="0.05s")) as server:
        backend = server.services.backend
        sweep, swept = backend.sweep, asyncio.Event()

        async def watched(now: float) -> int:
            swept.set()
            return await sweep(now)

        backend.sweep = watched  # type: ignore[method-assign]
        await asyncio.wait_for(swept.wait(), 2)


async def test_concurrent_first_hits_of_a_mongodb_counter_all_count(tmp_path, monkeypatch):
    """Every hit that finds no open window at once must not start its own window of 1."""

    from tornado_auth.sessions.mongo import MongoCounters

    from .conftest import require_service

    require_service("mongodb")
    hits = 20
    arrived, everyone = [0], asyncio.Event()

    class Gated:
        """The counters collection, holding each first look until every hit has looked."""

        def __init__(self, collection) -> None:
            self.collection = collection

        def __getattr__(self, name: str):
            return getattr(self.collection, name)

        async def find_one_and_update(self, *args, **kwargs):
            found = await self.collection.find_one_and_update(*args, **kwargs)
            if not everyone.is_set():
                arrived[0] += 1
                if arrived[0] == hits:
                    everyone.set()
                await everyone.wait()
            return found

    real = MongoCounters.counters
    monkeypatch.setattr(MongoCounters, "counters", property(lambda self: Gated(real.fget(self))))
    place = Store("mongodb", tmp_path)
    backend = backend_for_url(place.session_url())
    await backend.start()
    try:
        now = time.time()
        counts = await asyncio.gather(*(backend.counters.hit("x", 600, now) for _ in range(hits)))
        assert sorted(count for count, _ in counts) == list(range(1, hits + 1))
        assert (await backend.counters.peek("x", now))[0] == hits
    finally:
        await backend.close()
        await place.cleanup()


async def touching_server(store: Store):
    """A server whose every signed-in request is a touch (a touch interval of zero)."""
    return serving(settings_for(store, sessions__touch_interval="0s"))


def stored_key(server, client) -> str:
    cookie = client.cookies["session"].strip('"')
    return token_key(decode_signed_value(server.secret, "session", cookie).decode())


async def test_a_touch_goes_out_with_the_response_and_reaches_the_store_after_it(store: Store):
    async with await touching_server(store) as server:
        await server.add_user("ann@example.com")
        client = server.client()
        assert (await client.login("ann@example.com", PASSWORD)).code == 200
        key, sessions = stored_key(server, client), server.services.sessions
        before = await sessions.store.load(key)
        response = await client.get("/api/dashboard")
        assert response.code == 200
        cookie = response.headers["Set-Cookie"]
        value, *attributes = cookie.split("; ")
        assert value.startswith('session="2|') and "HttpOnly" in attributes
        max_age = next(int(a.split("=")[1]) for a in attributes if a.startswith("Max-Age="))
        assert 86399 <= max_age <= 86400  # the idle lifetime, from now
        await sessions.touches_written()
        after = await sessions.store.load(key)
        assert after.last_seen_at > before.last_seen_at
        assert after.expires_at > before.expires_at
        assert (await client.get("/api/dashboard")).code == 200  # the cookie it sent works


async def test_a_touch_of_a_session_revoked_before_it_is_written_does_not_bring_it_back(
    store: Store, monkeypatch
):
    async with await touching_server(store) as server:
        await server.add_user("ann@example.com")
        client = server.client()
        assert (await client.login("ann@example.com", PASSWORD)).code == 200
        key, sessions = stored_key(server, client), server.services.sessions
        store_ = sessions.store
        real_touch = store_.touch

        async def revoked_first(touches):
            await sessions.revoke(key)  # the session ends after its response went out...
            return await real_touch(touches)  # ...then its touch is written

        monkeypatch.setattr(store_, "touch", revoked_first)
        assert (await client.get("/api/dashboard")).code == 200
        await sessions.touches_written()
        monkeypatch.setattr(store_, "touch", real_touch)
        assert await store_.load(key) is None
        assert (await client.get("/api/dashboard")).code == 401


@pytest.mark.store_independent
async def test_a_touch_the_store_refuses_is_logged_and_tried_again_by_the_next_request(
    store: Store, monkeypatch, caplog
):
    async with serving(settings_for(store)) as server:
        sessions = server.services.sessions
        clock = Clock(time.time())
        monkeypatch.setattr(sessions, "clock", clock)
        await server.add_user("ann@example.com")
        client = server.client()
        assert (await client.login("ann@example.com", PASSWORD)).code == 200
        store_, real_touch, calls = sessions.store, sessions.store.touch, []

        async def down_once(touches):
            calls.extend(touches)
            if len(calls) == 1:
                raise StoreUnavailable("redis: connection lost")
            return await real_touch(touches)

        monkeypatch.setattr(store_, "touch", down_once)
        caplog.clear()
        clock.now += sessions.lifetime.touch_interval + 1  # a touch is due
        assert (await client.get("/api/dashboard")).code == 200  # the response did not wait
        await sessions.touches_written()
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("1 of 1 session touches not stored" in w for w in warnings), warnings
        assert not [r for r in caplog.records if r.exc_info or r.exc_text]  # no traceback
        assert (await client.get("/api/dashboard")).code == 200  # at the same moment
        await sessions.touches_written()
        assert calls == [stored_key(server, client)] * 2  # the next request touched again
        assert (await client.get("/api/dashboard")).code == 200
        await sessions.touches_written()
        assert len(calls) == 2  # and once stored, not again within the interval
