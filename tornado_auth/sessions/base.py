"""The storage interface every session backend implements: storage verbs only, no policy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreUnavailable

__all__ = ["SessionBackend", "SessionRecord", "StoreUnavailable"]


@dataclass(slots=True)
class SessionRecord:
    """One stored session. ``key`` is the SHA-256 hex digest of the token, never the token."""

    key: str
    created_at: float
    last_seen_at: float
    expires_at: float
    absolute_expires_at: float
    ttl: float
    user_id: str | None = None
    ip: str = ""
    user_agent: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at or now >= self.absolute_expires_at


class SessionBackend(ABC):
    """Async storage verbs. ``writes`` counts every mutating call that reached the store."""

    name = "sessions"
    # Whether published events reach every server process, not only this one.
    shared_events = False
    # Whether every change is announced to every process, so that a process may cache records.
    cacheable = False
    # Whether events are being received right now (a lost connection may have dropped some).
    events_live = True

    def __init__(self) -> None:
        self.writes = 0
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []

    @abstractmethod
    async def load(self, key: str) -> SessionRecord | None:
        """The record stored under ``key``, or None."""

    @abstractmethod
    async def create(self, record: SessionRecord) -> None:
        """Store a new record and add it to its user's index."""

    @abstractmethod
    async def update(
        self,
        key: str,
        changed: dict[str, Any],
        removed: set[str],
        last_seen_at: float,
        expires_at: float,
    ) -> bool:
        """Set and remove single data keys and move the expiry; False if the record is gone.

        Only the named keys are written, so concurrent updates of different keys all survive,
        and a record deleted meanwhile is never recreated. The expiry (with ``last_seen_at``)
        only moves forward: an update carrying an older one leaves it as it is.
        """

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove one record and its index entry; True if it existed."""

    @abstractmethod
    async def list_user(self, user_id: str) -> list[SessionRecord]:
        """The live sessions of one user, through the per-user index."""

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        """Remove every session of a user except ``keep``; the keys removed."""
        removed = []
        for record in await self.list_user(user_id):
            if record.key != keep and await self.delete(record.key):
                removed.append(record.key)
        return removed

    @abstractmethod
    async def sweep(self, now: float) -> int:
        """Remove expired records the store does not expire by itself; how many."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    async def start(self) -> None:
        """Connect and prepare (indexes, tables). Called inside the running loop."""

    async def close(self) -> None:
        """Release clients and connections."""

    @abstractmethod
    async def count(self, now: float) -> int:
        """How many sessions are live."""

    # -- counters in fixed windows, for throttling ------------------------------------------------

    @abstractmethod
    async def hit(self, name: str, window: float, now: float) -> tuple[int, float]:
        """Count one event under ``name`` in a window of ``window`` seconds: (count, window end)."""

    @abstractmethod
    async def peek(self, name: str, now: float) -> tuple[int, float]:
        """The count and window end under ``name``; (0, now) when no window is open."""

    @abstractmethod
    async def release(self, name: str, now: float) -> None:
        """Take back one event counted under ``name`` in its open window, if any."""

    @abstractmethod
    async def clear(self, name: str) -> None:
        """Forget the counter ``name``."""

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Receive every published event (a session ended, a sign-in)."""
        self._subscribers.append(callback)

    async def publish(self, event: dict[str, Any]) -> None:
        """Deliver an event to the subscribers: in this process, unless the store can do more."""
        self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        for callback in self._subscribers:
            callback(event)
