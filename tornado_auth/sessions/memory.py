"""Sessions in this process's memory: for development and tests of a single process."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import SessionBackend, SessionRecord


def _copy(record: SessionRecord) -> SessionRecord:
    return dataclasses.replace(record, data=dict(record.data))


class MemorySessionBackend(SessionBackend):
    name = "memory"
    shared_events = True  # one process is all there is

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, SessionRecord] = {}
        self._users: dict[str, set[str]] = {}
        self._counters: dict[str, tuple[int, float]] = {}

    async def load(self, key: str) -> SessionRecord | None:
        record = self._records.get(key)
        return _copy(record) if record else None

    async def create(self, record: SessionRecord) -> None:
        self.writes += 1
        self._records[record.key] = _copy(record)
        if record.user_id is not None:
            self._users.setdefault(record.user_id, set()).add(record.key)

    async def update(
        self,
        key: str,
        changed: dict[str, Any],
        removed: set[str],
        last_seen_at: float,
        expires_at: float,
    ) -> bool:
        self.writes += 1
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
        self.writes += 1
        record = self._records.pop(key, None)
        if record is None:
            return False
        if record.user_id is not None:
            self._users.get(record.user_id, set()).discard(key)
        return True

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        keys = self._users.get(user_id, set())
        return [_copy(self._records[key]) for key in keys if key in self._records]

    async def sweep(self, now: float) -> int:
        expired = [key for key, record in self._records.items() if record.expired(now)]
        for key in expired:
            await self.delete(key)
        for name in [name for name, (_, ends) in self._counters.items() if ends <= now]:
            del self._counters[name]
        return len(expired)

    async def count(self, now: float) -> int:
        return sum(not record.expired(now) for record in self._records.values())

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

    async def ping(self) -> None:
        return None
