"""The in-process session cache over Redis: fast reads that never outlive a change or an end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tornado_auth import StoreUnavailable
from tornado_auth.sessions import CachedStore, SessionManager, backend_for_url

from .conftest import REDIS_URL, Clock, Store, require_service
from .helpers import LIFETIME, Outage, committed_session


class Process:
    """One server process's view: its own Redis client, pub/sub listener and cache."""

    def __init__(
        self, prefix: str, url: str = REDIS_URL, clock: Clock | None = None, ttl: float = 60
    ) -> None:
        self.clock = clock or time.time
        self.backend = backend_for_url(url, prefix, cache_size=100, cache_ttl=ttl, clock=self.clock)
        self.cache = self.backend.store
        assert isinstance(self.cache, CachedStore)
        self.redis = self.cache.store  # the store behind the cache
        self.events: asyncio.Queue[dict] = asyncio.Queue()

    async def start(self) -> SessionManager:
        await self.backend.start()
        self.manager = SessionManager(
            self.backend.store, self.backend.events, LIFETIME, clock=self.clock
        )
        self.backend.events.subscribe(self.events.put_nowait)
        await asyncio.wait_for(self.backend.events.connected(), 10)
        return self.manager

    async def next_event(self, kind: str, seconds: float = 10) -> dict:
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            event = await asyncio.wait_for(self.events.get(), remaining)
            if event["type"] == kind:
                return event


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[tuple[Process, Process]]:
    require_service("redis")
    place = Store("redis", tmp_path)
    pair = Process(place.prefix), Process(place.prefix)
    for process in pair:
        await process.start()
    yield pair
    for process in pair:
        await process.backend.close()
    await place.cleanup()


class Unreachable:
    """Replaces a store's load: every call is counted and fails as an outage would."""

    def __init__(self, store) -> None:
        self.calls = 0
        store.load = self

    async def __call__(self, key: str):
        self.calls += 1
        raise StoreUnavailable("session", "redis: unreachable in this test")


@pytest.fixture
async def behind_a_proxy(tmp_path: Path) -> AsyncIterator[tuple[Process, Outage]]:
    """One process whose every connection to Redis (data, pub/sub) goes through an Outage."""
    require_service("redis")
    place, proxy = Store("redis", tmp_path), Outage.to(REDIS_URL)
    await proxy.start()
    process = Process(place.prefix, proxy.url(REDIS_URL))
    await process.start()
    yield process, proxy
    proxy.end()
    await process.backend.close()
    await proxy.close()
    await place.cleanup()


async def test_cache_serves_repeat_reads_while_the_store_does_not_answer(behind_a_proxy):
    a, proxy = behind_a_proxy
    a.backend.events.stale_after = 60  # the frozen event connection counts as live here
    session = await committed_session(a.manager)
    assert (await a.manager.load(session.token)) is not None
    proxy.freeze()  # Redis no longer answers (the connections stay open)...
    cached = await asyncio.wait_for(a.manager.load(session.token), 10)  # ...yet the cache does
    assert cached is not None and cached["email"] == "u1@example.com"
    assert proxy.asked == 0  # not a byte was sent to Redis


async def test_a_stalled_event_connection_stops_the_cache_before_a_held_end_is_missed(
    behind_a_proxy,
):
    a, proxy = behind_a_proxy
    b = Process(a.redis.prefix)  # another process, straight to Redis
    await b.start()
    try:
        session = await committed_session(a.manager)
        assert await a.manager.load(session.token) is not None  # cached in A
        proxy.freeze()  # A's connections stay open, but nothing passes: its events are held
        await b.manager.revoke(session.key)  # the end A cannot hear yet
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while a.backend.events.live:  # no PING comes back: A stops counting on its events
            assert loop.time() < deadline, "the stalled event connection still counts as live"
            await asyncio.sleep(0.05)
        assert a.manager.cached(session.token, session.key) is None  # so the copy is not served
        proxy.end()
        event = await a.next_event("ended")  # the held end arrives once bytes flow again
        assert event["keys"] == [session.key]
        assert await a.manager.load(session.token) is None
    finally:
        await b.backend.close()


async def test_a_session_seen_now_and_then_stays_cached_and_a_touch_moves_the_copy(
    tmp_path: Path,
):
    require_service("redis")
    place, clock = Store("redis", tmp_path), Clock(time.time())  # Redis expires by real time
    a = Process(place.prefix, clock=clock, ttl=300)
    await a.start()
    try:
        session = await committed_session(a.manager)
        assert await a.manager.load(session.token) is not None  # cached
        outage = Unreachable(a.redis)  # from now on every read of the store fails
        clock.now += LIFETIME.touch_interval + 1  # a minute later: a touch is due
        seen = await a.manager.load(session.token)
        assert seen is not None  # still served from memory
        touched_at = clock.now
        await a.manager.commit(seen)  # the touch, written to Redis
        clock.now += LIFETIME.touch_interval - 1
        again = await a.manager.load(session.token)
        assert outage.calls == 0  # not read again: the cached copy moved with the touch
        assert again.record.last_seen_at == touched_at
        assert again.record.expires_at == touched_at + LIFETIME.ttl
        expiry_ms = await a.redis.client.pexpiretime(a.redis.session_key(session.key))
        assert abs(expiry_ms - (touched_at + LIFETIME.ttl) * 1000) <= 1  # Redis moved it too
        clock.now += 300  # past sessions.cache_ttl: the store is asked
        with pytest.raises(StoreUnavailable):
            await a.manager.load(session.token)
        assert outage.calls == 1
    finally:
        await a.backend.close()
        await place.cleanup()


@pytest.mark.parametrize("store", ["redis", "redis-sentinel"], indirect=True)
async def test_closing_the_redis_store_closes_its_connections(store: Store, backend):
    redis_store = backend.store
    connection_id = await redis_store.client.client_id()  # a pooled connection, now idle
    [master] = await store.redis_masters()
    try:
        assert await master.client_list(client_id=[connection_id])
        await backend.close()
        deadline = asyncio.get_running_loop().time() + 10
        while await master.client_list(client_id=[connection_id]):  # the server sees the close
            assert asyncio.get_running_loop().time() < deadline, "the connection stayed open"
            await asyncio.sleep(0.05)
    finally:
        await master.aclose()
    with pytest.raises(StoreUnavailable):
        await redis_store.ping()  # closed: no new connection either


async def test_requests_sharing_a_cached_record_never_see_each_others_changes(processes):
    a, _ = processes
    session = await committed_session(a.manager)
    first = await a.manager.load(session.token)
    second = await a.manager.load(session.token)
    assert first.record is second.record  # both served from the one cached record
    first["theme"] = "dark"
    del first["role"]
    second.destroy()
    assert "theme" not in second and "role" not in first
    third = await a.manager.load(session.token)
    assert third.record.data == {"email": "u1@example.com", "role": "user", "remember_me": False}
    assert "theme" not in third and third["role"] == "user"


class GatedLoads:
    """Wraps a store's load: counts the calls and holds each answer until released."""

    def __init__(self, store) -> None:
        self.real, self.calls = store.load, 0
        self.answered, self.release = asyncio.Event(), asyncio.Event()
        store.load = self

    async def __call__(self, key: str):
        self.calls += 1
        record = await self.real(key)
        self.answered.set()  # the store has answered; the caller gets it on release
        await self.release.wait()
        return record


async def test_requests_missing_the_cache_at_once_share_one_store_read(processes):
    a, _ = processes
    session = await committed_session(a.manager)
    loads = GatedLoads(a.redis)
    readers = [asyncio.ensure_future(a.manager.load(session.token)) for _ in range(20)]
    await loads.answered.wait()  # a store round trip later, every reader is waiting
    loads.release.set()
    sessions = await asyncio.gather(*readers)
    assert loads.calls == 1
    assert all(s is not None and s["email"] == "u1@example.com" for s in sessions)
    assert len({id(s) for s in sessions}) == 20  # one Session per request, one shared record


async def test_waiters_load_for_themselves_when_the_request_loading_goes_away(processes):
    a, _ = processes
    session = await committed_session(a.manager)
    loads = GatedLoads(a.redis)
    first = asyncio.ensure_future(a.manager.load(session.token))
    await loads.answered.wait()  # the first request is loading...
    waiters = [asyncio.ensure_future(a.manager.load(session.token)) for _ in range(5)]
    await asyncio.sleep(0)  # ...the others wait for its answer...
    first.cancel()  # ...and its client goes away
    loads.release.set()
    sessions = await asyncio.gather(*waiters)
    assert all(s is not None and s["email"] == "u1@example.com" for s in sessions)
    assert first.cancelled()
    assert loads.calls == 2  # the first waiter loaded again; the others joined it


async def test_an_outage_during_a_shared_read_reaches_every_waiter(processes):
    a, _ = processes
    session = await committed_session(a.manager)
    a.cache.drop([session.key])
    gate, outage = asyncio.Event(), Unreachable(a.redis)

    async def late_failure(key: str):
        await gate.wait()
        return await Unreachable.__call__(outage, key)

    a.redis.load = late_failure
    readers = [asyncio.ensure_future(a.manager.load(session.token)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert [type(r) for r in results] == [StoreUnavailable] * 5
    assert outage.calls == 1


async def test_a_read_in_flight_when_its_session_ends_is_not_cached(processes):
    a, b = processes
    session = await committed_session(a.manager)
    loads = GatedLoads(a.redis)
    reader = asyncio.ensure_future(a.manager.load(session.token))
    await loads.answered.wait()  # the store has answered with the live record...
    await b.manager.revoke(session.key)  # ...another process ends the session...
    await a.next_event("ended")  # ...and this process hears of it before the answer arrives
    loads.release.set()
    await reader  # the answer may be the record from before the revocation...
    assert len(a.cache) == 0  # ...but it is not kept
    assert await a.manager.load(session.token) is None
    assert loads.calls == 2  # the later request asked the store again


async def test_a_touch_is_not_announced_but_a_change_of_data_is(processes):
    a, b = processes
    touched, changed = (
        await committed_session(a.manager, "u1"),
        await committed_session(a.manager, "u2"),
    )
    later = LIFETIME.touch_interval + 1
    record = touched.record
    assert record is not None
    # a touch alone: the expiry moves forward, nothing else
    assert await a.cache.update(touched.key, {}, set(), record.created_at + later,
                                record.expires_at + later)  # fmt: skip
    assert await a.cache.update(changed.key, {"theme": "dark"}, set(), record.created_at,
                                record.expires_at)  # fmt: skip
    event = await b.next_event("changed")  # events arrive in order: the touch sent none
    assert event["keys"] == [changed.key]
    reloaded = await b.manager.load(touched.token)
    assert reloaded is not None and reloaded.record.expires_at == record.expires_at + later


async def test_revocation_in_this_process_is_never_served_from_cache(processes):
    a, _ = processes
    session = await committed_session(a.manager)
    assert await a.manager.load(session.token) is not None  # cached
    await a.manager.revoke(session.key)
    assert await a.manager.load(session.token) is None


async def test_revocation_in_another_process_drops_the_cached_record(processes):
    a, b = processes
    session = await committed_session(a.manager)
    assert await a.manager.load(session.token) is not None  # cached in A
    await b.manager.revoke_user("u1")
    event = await a.next_event("ended")
    assert event["keys"] == [session.key]
    assert await a.manager.load(session.token) is None


async def test_a_change_in_another_process_is_seen_after_its_event(processes):
    a, b = processes
    session = await committed_session(a.manager)
    assert "theme" not in await a.manager.load(session.token)
    in_b = await b.manager.load(session.token)
    in_b["theme"] = "dark"
    await b.manager.commit(in_b)
    await a.next_event("changed")
    assert (await a.manager.load(session.token))["theme"] == "dark"


async def test_cache_is_bypassed_while_events_may_be_missed(processes):
    a, b = processes
    session = await committed_session(a.manager)
    assert await a.manager.load(session.token) is not None  # cached in A
    a.backend.events.connected_event.clear()  # as while A's pub/sub connection is down
    await b.redis.delete(session.key)  # an end whose event A would not hear
    assert await a.manager.load(session.token) is None


def event_connection(process: Process) -> Any:
    """This process's pub/sub connection (redis-py's, while its listener is subscribed)."""
    pool = process.redis.client.connection_pool
    [subscriber] = pool._in_use_connections  # idle otherwise: the listener holds the only one
    return subscriber


async def kill_event_connection(process: Process) -> None:
    """Have Redis drop this process's pub/sub connection (and no other client's)."""
    host, port = event_connection(process)._writer.get_extra_info("sockname")[:2]
    admin = aioredis.from_url(REDIS_URL)
    try:
        killed = await admin.execute_command(
            "CLIENT", "KILL", "ADDR", f"{host}:{port}", "TYPE", "pubsub"
        )
        assert killed == 1
    finally:
        await admin.aclose()


async def test_a_lost_event_connection_resyncs_then_events_arrive_again(processes):
    a, b = processes
    session = await committed_session(a.manager)
    await a.manager.load(session.token)
    assert len(a.cache) == 1
    await kill_event_connection(a)
    await a.next_event("resync", 30)  # resubscribed, and says events may have been missed...
    assert len(a.cache) == 0  # ...so nothing cached before is trusted
    await asyncio.wait_for(a.backend.events.connected(), 10)  # a PING came back through it
    await a.manager.load(session.token)  # cached again
    await b.manager.revoke(session.key)
    event = await a.next_event("ended", 30)  # delivery resumed
    assert event["keys"] == [session.key]
    assert await a.manager.load(session.token) is None


async def test_a_change_while_the_event_connection_is_down_is_not_served_stale(processes):
    a, b = processes
    session = await committed_session(a.manager)
    assert "theme" not in await a.manager.load(session.token)  # cached in A
    subscriber = event_connection(a)
    reconnecting, resume, reconnected = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def held_reconnect() -> None:  # redis-py reconnects the listener's connection here
        reconnecting.set()
        await resume.wait()
        del subscriber.connect  # back to redis-py's own
        await subscriber.connect()
        reconnected.set()

    subscriber.connect = held_reconnect
    await kill_event_connection(a)
    await asyncio.wait_for(reconnecting.wait(), 10)  # A lost its subscription...
    in_b = await b.manager.load(session.token)
    in_b["theme"] = "dark"
    await b.manager.commit(in_b)  # ...so the event of this change never reaches it
    resume.set()
    await asyncio.wait_for(reconnected.wait(), 10)  # subscribed again
    assert (await a.manager.load(session.token))["theme"] == "dark"  # not the cached record
    assert (await a.next_event("resync", 10))["type"] == "resync"


async def test_cache_is_bounded(processes):
    a, _ = processes
    for index in range(150):
        session = await committed_session(a.manager, f"user{index}")
        await a.manager.load(session.token)
    assert len(a.cache) == 100


def test_only_stores_that_announce_every_change_are_cached(tmp_path):
    for url in ("memory://", f"sqlite:///{tmp_path}/s.db", "mongodb://127.0.0.1:27017/x"):
        backend = backend_for_url(url, cache_size=100, cache_ttl=60)
        assert not isinstance(backend.store, CachedStore), url
    assert isinstance(backend_for_url(REDIS_URL, cache_size=100, cache_ttl=60).store, CachedStore)


async def test_a_burst_beyond_the_connection_pool_waits_instead_of_failing(processes):
    a, _ = processes
    session = await committed_session(a.manager)
    from tornado_auth.sessions.redis import MAX_CONNECTIONS

    loads = [a.redis.load(session.key) for _ in range(MAX_CONNECTIONS * 4)]
    records = await asyncio.gather(*loads)  # a StoreUnavailable here would fail the test
    assert all(record is not None and record.key == session.key for record in records)


async def test_on_a_cluster_whose_events_the_ping_cannot_prove_entries_stay_briefly(
    tmp_path: Path,
):
    require_service("redis-cluster")
    place, clock = Store("redis-cluster", tmp_path), Clock(time.time())
    a = Process(place.prefix, url=place.session_url(), clock=clock, ttl=300)
    await a.start()
    try:
        session = await committed_session(a.manager)
        assert await a.manager.load(session.token) is not None  # cached
        outage = Unreachable(a.redis)
        clock.now += 4
        assert await a.manager.load(session.token) is not None
        assert outage.calls == 0  # served from memory for a few seconds...
        clock.now += 2
        with pytest.raises(StoreUnavailable):  # ...then from the store, though ttl is 300 s
            await a.manager.load(session.token)
        assert outage.calls == 1
    finally:
        await a.backend.close()
        await place.cleanup()


async def test_an_end_whose_caller_is_cancelled_once_it_is_deleted_is_still_announced(
    processes, monkeypatch
):
    a, b = processes
    session = await committed_session(a.manager)
    assert await b.manager.load(session.token) is not None  # cached in B
    real_delete, deleted, release = a.cache.delete, asyncio.Event(), asyncio.Event()

    async def held_delete(key: str) -> bool:
        found = await real_delete(key)
        deleted.set()
        await release.wait()
        return found

    monkeypatch.setattr(a.cache, "delete", held_delete)
    revoking = asyncio.ensure_future(a.manager.revoke(session.key))
    await deleted.wait()
    revoking.cancel()  # the request revoking it is cut (its client gone, a shutdown)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await revoking
    event = await b.next_event("ended")  # the deletion is announced all the same
    assert event["keys"] == [session.key]
    assert await b.manager.load(session.token) is None
