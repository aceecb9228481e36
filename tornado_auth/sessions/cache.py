"""A session store with a bounded per-process cache in front, kept honest by the event bus.

Like Django's ``cached_db``: reads are served from this process's memory where possible, every
write goes to the store behind it. Entries are dropped when this process writes data, when another
process announces a change of data or an end, all at once when the event connection was lost,
and after ``ttl`` seconds in any case. A touch (which only moves the expiry forward, and is not
announced) updates this process's copy in place: another process's copy can only think the
session ends sooner than it does, and then asks the store.

Nothing is served while the bus is not ``live``: over Redis that means a PING sent down the event
subscription less than a second ago has come back, so every event published before it has
arrived; a connection that stalls without closing stops the cache within that second. Where the
bus proves that for every publisher (``EventBus.proven``: one Redis server or a Sentinel's master)
entries are kept for ``ttl``, which can then be long, since a person who clicks now and then
should still be served from memory; elsewhere (a Redis Cluster, where events cross the cluster
bus) for at most UNPROVEN_MAX_AGE seconds. It is only correct over an event bus that reaches every
process (``EventBus.shared``).

Misses are coalesced: requests asking for the same record at once share one store round trip.
A load that was in flight when its key was dropped is neither cached nor joined afterwards,
since its answer may predate the change.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .store import EventBus, EventType, SessionRecord, SessionStore

UNPROVEN_MAX_AGE = 5.0  # seconds an entry is kept over a bus whose liveness is not proven


class CachedStore(SessionStore):
    def __init__(
        self,
        store: SessionStore,
        events: EventBus,
        size: int,
        ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.events = events
        self.name = store.name
        self.size = size
        self.ttl = ttl
        self.max_age = ttl if events.proven else min(ttl, UNPROVEN_MAX_AGE)
        self.clock = clock
        self._entries: OrderedDict[str, tuple[SessionRecord, float]] = OrderedDict()
        self._loads: dict[str, asyncio.Future[SessionRecord | None]] = {}
        events.subscribe(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in (EventType.ENDED, EventType.CHANGED):
            self.drop(event["keys"])
        elif kind == EventType.RESYNC:
            self._entries.clear()
            self._loads.clear()

    def drop(self, keys: list[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)
            self._loads.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    # -- reads -------------------------------------------------------------------------------------

    def held(self, key: str, now: float) -> SessionRecord | None:
        if not self.events.live:
            return None  # events may be missed right now: the store answers
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry[1] > self.max_age:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]  # shared: records are never mutated, Session copies data it changes

    async def load(self, key: str) -> SessionRecord | None:
        if not self.events.live:
            return await self.store.load(key)
        pending = self._loads.get(key)
        if pending is not None:
            return await self._join(key, pending)
        # this request loads it; requests for the same key meanwhile wait for its answer
        loading = self._loads[key] = asyncio.get_running_loop().create_future()
        try:
            record = await self.store.load(key)
        except BaseException as error:
            if self._loads.get(key) is loading:
                del self._loads[key]
            if isinstance(error, asyncio.CancelledError):
                loading.cancel()  # its waiters load for themselves
            else:
                loading.set_exception(error)
                loading.exception()  # retrieved: nobody may be waiting
            raise
        if self._loads.get(key) is loading:
            del self._loads[key]
            if record is not None and not record.expired(self.clock()):
                self._put(record)
        # else dropped while in flight: the answer may predate the change, so it is not kept
        loading.set_result(record)
        return record

    async def _join(
        self, key: str, pending: asyncio.Future[SessionRecord | None]
    ) -> SessionRecord | None:
        try:
            return await asyncio.shield(pending)  # a waiter that goes away leaves it running
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not pending.cancelled() or (task is not None and task.cancelling()):
                raise  # this request itself was cancelled
            return await self.load(key)  # the request loading it went away: load again

    def _put(self, record: SessionRecord) -> None:
        self._entries[record.key] = (record, self.clock())
        self._entries.move_to_end(record.key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    # -- writes: to the store, then every process's copy is dropped --------------------------------

    async def create(self, record: SessionRecord) -> None:
        await self.store.create(record)

    async def update(
        self,
        key: str,
        changed: dict[str, Any],
        removed: set[str],
        last_seen_at: float,
        expires_at: float,
    ) -> bool:
        held = self._entries.get(key)
        updated = await self.store.update(key, changed, removed, last_seen_at, expires_at)
        if updated and not changed and not removed:
            self._touched(key, held, last_seen_at, expires_at)
            return updated
        self.drop([key])
        if updated:
            await self.events.publish({"type": EventType.CHANGED, "keys": [key]})
        return updated

    async def touch(self, touches: dict[str, tuple[float, float]]) -> list[bool | BaseException]:
        held = {key: self._entries.get(key) for key in touches}
        results = await self.store.touch(touches)
        for (key, times), result in zip(touches.items(), results, strict=True):
            if result is True:
                self._touched(key, held[key], *times)
        return results

    def _touched(
        self,
        key: str,
        held: tuple[SessionRecord, float] | None,
        last_seen_at: float,
        expires_at: float,
    ) -> None:
        """A touch is not announced (the expiry only moves forward, so a copy elsewhere can only
        think the session ends sooner than it does, and then asks the store). This copy moves
        with it, unless an event dropped or a load replaced it meanwhile."""
        if held is not None and self._entries.get(key) is held:
            record = held[0]
            touched = dataclasses.replace(
                record,
                last_seen_at=max(record.last_seen_at, last_seen_at),
                expires_at=max(record.expires_at, expires_at),
            )  # a new record: requests holding the old one never see it change
            self._entries[key] = (touched, held[1])

    async def delete(self, key: str) -> bool:
        self.drop([key])  # ends are announced by the session manager, to every process
        return await self.store.delete(key)

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        removed = await self.store.delete_user(user_id, keep)
        self.drop(removed)
        return removed

    async def trim_user(self, user_id: str, keep: int, now: float) -> list[str]:
        removed = await self.store.trim_user(user_id, keep, now)
        self.drop(removed)
        return removed

    # -- the rest as the store does it ---------------------------------------------------------

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    async def ping(self) -> None:
        await self.store.ping()

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        return await self.store.list_user(user_id)

    async def sweep(self, now: float) -> int:
        return await self.store.sweep(now)

    async def count(self, now: float) -> int:
        return await self.store.count(now)
