"""Sessions in this process's memory: for development and tests of a single process.

Records in a dict with a set of keys per user and a heap of their ends (so that the sweep and
the count look only at what may have expired, never at every record), counters in a dict, events
delivered in this process, which is every process there is.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any

from .store import Backend, LocalEventBus, SessionRecord, SessionStore

# The ends heap keeps the entries of deleted records until their time comes; once it holds more
# than twice as many entries as there are records (and this many), it is made again from the
# records: a rebuild at most once per as many deletes as there are records.
STALE_ENDS = 1024


def _copy(record: SessionRecord) -> SessionRecord:
    return dataclasses.replace(record, data=dict(record.data))


def _end(record: SessionRecord) -> float:
    """When the record expires (idle or absolute, whichever is first)."""
    return min(record.expires_at, record.absolute_expires_at)


class MemorySessionStore(SessionStore):
    name = "memory"
    in_process = True

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._users: dict[str, set[str]] = {}
        # (end, key) of every record as it was stored. An end only moves later (the expiry only
        # moves forward), so every expired record has an entry at or before now: the sweep and
        # the count read only those, from the top of the heap.
        self._ends: list[tuple[float, str]] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def load(self, key: str) -> SessionRecord | None:
        record = self._records.get(key)
        return _copy(record) if record else None

    async def create(self, record: SessionRecord) -> None:
        self._records[record.key] = _copy(record)
        if record.user_id is not None:
            self._users.setdefault(record.user_id, set()).add(record.key)
        heapq.heappush(self._ends, (_end(record), record.key))

    async def update(
        self,
        key: str,
        changed: dict[str, Any],
        removed: set[str],
        last_seen_at: float,
        expires_at: float,
    ) -> bool:
        record = self._records.get(key)
        if record is None:
            return False
        record.data.update(changed)
        for name in removed:
            record.data.pop(name, None)
        if expires_at > record.expires_at:  # a late write of an older expiry never moves it back
            record.last_seen_at, record.expires_at = last_seen_at, expires_at
        return True

    async def delete(self, key: str) -> bool:
        record = self._records.pop(key, None)
        if record is None:
            return False
        if record.user_id is not None:
            keys = self._users.get(record.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:  # no empty index left behind for every user ever signed in
                    del self._users[record.user_id]
        if len(self._ends) > 2 * len(self._records) + STALE_ENDS:
            self._ends = [(_end(kept), stored) for stored, kept in self._records.items()]
            heapq.heapify(self._ends)
        return True

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        keys = self._users.get(user_id, set())
        return [_copy(self._records[key]) for key in keys if key in self._records]

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        removed = [key for key in list(self._users.get(user_id, ())) if key != keep]
        for key in removed:
            await self.delete(key)
        return removed

    async def trim_user(self, user_id: str, keep: int, now: float) -> list[str]:
        records = [self._records[key] for key in self._users.get(user_id, ())]
        live = [record for record in records if not record.expired(now)]
        live.sort(key=lambda record: (-record.created_at, record.key))
        ended = [record.key for record in live[keep:]]
        for key in ended:
            await self.delete(key)
        return ended

    async def sweep(self, now: float) -> int:
        removed = 0
        while self._ends and self._ends[0][0] <= now:
            _, key = heapq.heappop(self._ends)
            record = self._records.get(key)
            if record is None:
                continue  # deleted before it expired
            if record.expired(now):
                await self.delete(key)
                removed += 1
            else:  # its expiry moved on: it waits under its new end
                heapq.heappush(self._ends, (_end(record), key))
        return removed

    def _expired(self, now: float) -> set[str]:
        """The keys of stored records that expired by ``now``: a walk down the heap from its top
        through the entries at or before ``now`` only."""
        expired, ends, below = set(), self._ends, [0]
        while below:
            index = below.pop()
            if index < len(ends) and ends[index][0] <= now:
                record = self._records.get(ends[index][1])
                if record is not None and record.expired(now):
                    expired.add(record.key)
                below += (2 * index + 1, 2 * index + 2)
        return expired

    async def count(self, now: float) -> int:
        return len(self._records) - len(self._expired(now))


class MemoryCounters:
    def __init__(self) -> None:
        self._counters: dict[str, tuple[int, float]] = {}

    async def hit(self, name: str, window: float, now: float) -> tuple[int, float]:
        count, ends = await self.peek(name, now)
        self._counters[name] = (count + 1, ends if count else now + window)
        return self._counters[name]

    async def peek(self, name: str, now: float) -> tuple[int, float]:
        count, ends = self._counters.get(name, (0, now))
        return (count, ends) if ends > now else (0, now)

    async def release(self, name: str, now: float) -> None:
        count, ends = await self.peek(name, now)
        if count > 0:
            self._counters[name] = (count - 1, ends)

    async def clear(self, name: str) -> None:
        self._counters.pop(name, None)

    async def sweep(self, now: float) -> int:
        closed = [name for name, (_, ends) in self._counters.items() if ends <= now]
        for name in closed:
            del self._counters[name]
        return len(closed)


def memory_backend() -> Backend:
    return Backend(MemorySessionStore(), MemoryCounters(), LocalEventBus(shared=True))
