"""What a session store URL provides: session records, throttle counters and an event bus.

Three small interfaces, one job each. A backend module (``memory.py``, ``sqlite.py``,
``mongo.py``, ``redis.py``) implements them over one connection and bundles them in a
:class:`Backend`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ..errors import StoreUnavailable

log = logging.getLogger("tornado_auth.sessions")

__all__ = [
    "Backend",
    "Counters",
    "EndReason",
    "EventBus",
    "EventType",
    "LocalEventBus",
    "SessionRecord",
    "SessionStore",
    "StoreUnavailable",
]


class EventType(StrEnum):
    """The ``type`` of an event on the bus."""

    ENDED = "ended"  # sessions ended: {"keys", "user", "reason"}
    CHANGED = "changed"  # sessions written: {"keys"} (cached copies are stale)
    RESYNC = "resync"  # events may have been missed (delivered locally only)
    SIGNIN = "signin"  # {"user", "ip", "userAgent"}
    SIGNIN_FAILED = "signin_failed"
    AUDITED = "audited"  # an audit entry was written: {"event"} (admin pages refresh their lists)


class EndReason(StrEnum):
    """Why a session ended: sent to its sockets as the close reason."""

    LOGOUT = "logout"
    REVOKED = "revoked"
    PASSWORD = "password"
    DISABLED = "disabled"
    ROLE = "role"
    EXPIRED = "expired"
    REGENERATED = "regenerated"
    LIMIT = "limit"  # the user signed in past sessions.max_per_user: the oldest ends
    ENDED = "ended"  # gone, for a reason this process did not hear


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


class SessionStore(Protocol):
    """Session records: storage verbs only, no policy.

    The contract every store keeps (``tests/test_session_conformance.py``): only the named data
    keys are written, a deleted record is never recreated, and expiry only moves forward.
    """

    name: str
    # Records live in this process's memory: a cache in front of them gains nothing.
    in_process: bool = False

    async def start(self) -> None:
        """Connect and prepare (indexes, tables). Called inside the running loop."""

    async def close(self) -> None:
        """Release clients and connections."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    def held(self, key: str, now: float) -> SessionRecord | None:
        """The record if this process holds it now, without I/O; None means: ``load`` it."""
        return None

    async def load(self, key: str) -> SessionRecord | None:
        """The record stored under ``key``, or None."""

    async def create(self, record: SessionRecord) -> None:
        """Store a new record and add it to its user's index."""

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
        only moves forward: an update carrying an older one leaves it as it is. It is never past
        the record's absolute expiry (the session manager's expiries are capped by it).
        """

    async def touch(self, touches: dict[str, tuple[float, float]]) -> list[bool | BaseException]:
        """Move the expiry of several records at once: key -> (last seen, expiry), as ``update``
        with nothing else to write; for each key in order, whether its record was there, or the
        error that kept it from being written. Stores that can send them together do."""
        results = await asyncio.gather(
            *(self.update(key, {}, set(), *times) for key, times in touches.items()),
            return_exceptions=True,
        )
        return list(results)

    async def delete(self, key: str) -> bool:
        """Remove one record and its index entry; True if it existed."""

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        """The sessions of one user, through the per-user index."""

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        """Remove every session of a user except ``keep``; the keys removed."""

    async def trim_user(self, user_id: str, keep: int, now: float) -> list[str]:
        """Remove every live session of a user but the newest ``keep`` (by creation time, ties
        by key); the keys removed.

        Every caller orders the sessions alike, so concurrent calls never remove one of the
        newest ``keep``, and the last call leaves exactly ``keep``."""

    async def sweep(self, now: float) -> int:
        """Remove expired records and index entries the store does not expire by itself; how
        many (run periodically, and on no request's path)."""

    async def count(self, now: float) -> int:
        """How many sessions are live."""


class Counters(Protocol):
    """Counters in fixed windows, for throttling."""

    async def hit(self, name: str, window: float, now: float) -> tuple[int, float]:
        """Count one event under ``name`` in a window of ``window`` seconds: (count, window end)."""

    async def peek(self, name: str, now: float) -> tuple[int, float]:
        """The count and window end under ``name``; (0, now) when no window is open."""

    async def release(self, name: str, now: float) -> None:
        """Take back one event counted under ``name`` in its open window, if any."""

    async def clear(self, name: str) -> None:
        """Forget the counter ``name``."""

    async def sweep(self, now: float) -> int:
        """Forget the counters whose window closed, where the store does not; how many."""


Subscriber = Callable[[dict[str, Any]], None]


class EventBus(Protocol):
    """Publish and subscribe: sessions ended or changed, sign-ins."""

    # Events reach every process that uses the store, not only this one.
    shared: bool
    # ``live`` is proven by round trips through the stream itself, for every publisher: a cache
    # may then keep its copies for as long as the bus stays live; else only briefly.
    proven: bool

    @property
    def live(self) -> bool:
        """Whether every event published up to a moment ago has been received (a lost or stalled
        connection may drop or hold some)."""

    def subscribe(self, callback: Subscriber) -> None:
        """Receive every published event."""

    async def publish(self, event: dict[str, Any]) -> None:
        """Deliver an event to the subscribers."""

    async def connected(self) -> None:
        """Return once events are being received."""

    async def start(self) -> None:
        """Begin receiving (once the store is started)."""

    async def close(self) -> None:
        """Stop receiving."""


class LocalEventBus:
    """Events within this process: every process of a single-process store, else only this one."""

    proven = True  # nothing to lose: events never leave the process

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self._subscribers: list[Subscriber] = []

    @property
    def live(self) -> bool:
        return True  # nothing to lose: events never leave the process

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    async def publish(self, event: dict[str, Any]) -> None:
        self.deliver(event)

    def deliver(self, event: dict[str, Any]) -> None:
        """Hand an event to this process's subscribers."""
        for callback in self._subscribers:
            callback(event)

    async def connected(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class Backend:
    """What one session store URL gives, over one connection, and its periodic sweep."""

    store: SessionStore
    counters: Counters
    events: EventBus
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        await self.store.start()
        await self.events.start()

    async def sweep(self, now: float) -> int:
        """Remove what expired: records, index entries, closed counter windows; how many."""
        return await self.store.sweep(now) + await self.counters.sweep(now)

    def start_sweeper(self, interval: float, clock: Callable[[], float]) -> None:
        """Sweep every ``interval`` seconds (0: never), so nothing expired piles up unwatched."""
        if interval > 0 and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(interval, clock))

    async def _sweep_forever(self, interval: float, clock: Callable[[], float]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.sweep(clock())
                if removed:
                    log.info("swept %d expired sessions, index entries and counters", removed)
            except StoreUnavailable:
                log.warning("session sweep skipped: store unavailable")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await self.events.close()
        await self.store.close()
