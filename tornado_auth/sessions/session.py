"""What a session means: tokens, dirty tracking, sliding and absolute expiry, regeneration."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .base import SessionBackend, SessionRecord, StoreUnavailable

log = logging.getLogger("tornado_auth.sessions")

TOKEN_BYTES = 32  # 256 random bits
MAX_USER_AGENT = 256
TOUCHES_REMEMBERED = 10000  # sessions whose last touch by this process is remembered
# Data keys are plain names so that every store can address one key alone (no dots, no $).
DATA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_key(token: str) -> str:
    """The store key of a token: its SHA-256, so a leaked store holds no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


def public_id(key: str) -> str:
    """The id a user sees for one of their sessions; the store key never leaves the server."""
    return hashlib.sha256(b"session-id:" + key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Lifetime:
    ttl: float
    remember_me_ttl: float
    absolute_ttl: float
    touch_interval: float


@dataclass(frozen=True, slots=True)
class CookieChange:
    """The cookie to send: ``token`` for ``max_age`` seconds, or None to clear it."""

    token: str | None
    max_age: int = 0


class Session:
    """One request's view of a session: a mapping whose changes are tracked key by key."""

    __slots__ = (
        "_changed",
        "_data",
        "_destroyed",
        "_login",
        "_next_token",
        "_owned",
        "_removed",
        "_rotate",
        "_ttl",
        "_user_id",
        "ip",
        "record",
        "token",
        "user_agent",
    )

    def __init__(self, record: SessionRecord | None = None, token: str | None = None) -> None:
        self.record = record
        self.token = token
        # The record's data is shared (records are never mutated) until the first change.
        self._data: dict[str, Any] = record.data if record else {}
        self._owned = record is None
        self._changed: dict[str, Any] = {}
        self._removed: set[str] = set()
        self._user_id = record.user_id if record else None
        self._ttl: float | None = None
        self._login = False
        self._rotate = False
        self._next_token: str | None = None
        self._destroyed = False
        self.ip = ""
        self.user_agent = ""

    @property
    def key(self) -> str | None:
        return self.record.key if self.record else None

    @property
    def user_id(self) -> str | None:
        return None if self._destroyed else self._user_id

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not DATA_KEY.match(name):
            raise KeyError(f"invalid session key {name!r}: use letters, digits and _")
        if self._data.get(name, _MISSING) == value:
            return
        self._own()
        self._data[name] = value
        self._changed[name] = value
        self._removed.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self._data:
            raise KeyError(name)
        self._own()
        del self._data[name]
        self._changed.pop(name, None)
        self._removed.add(name)

    def login(self, user_id: str, data: dict[str, Any], remember_me: bool, ttl: float) -> None:
        """Bind the session to a user under a fresh token (session fixation defence)."""
        self._user_id = user_id
        self._ttl = ttl
        self._login = True
        self.regenerate()
        self._destroyed = False
        for name, value in data.items():
            self[name] = value
        self["remember_me"] = remember_me

    def regenerate(self) -> None:
        """Move the data to a new token at commit; the old token stops working."""
        self._rotate = True
        self._next_token = new_token()

    @property
    def next_key(self) -> str | None:
        """The store key this session will have after commit (for audit entries)."""
        return token_key(self._next_token) if self._next_token else self.key

    def destroy(self) -> None:
        """End the session: the record is deleted and the cookie cleared at commit."""
        self._destroyed = True
        self._data, self._owned = {}, True

    def _own(self) -> None:
        if not self._owned:
            self._data, self._owned = dict(self._data), True

    @property
    def pending(self) -> bool:
        """Whether commit has anything to write, apart from a touch."""
        return bool(self._changed or self._removed or self._rotate or self._destroyed)


_MISSING = object()


class RecordCache:
    """A bounded in-process cache of session records, dropped on every change anywhere.

    Entries are dropped when this process writes, when another process announces a change or an
    end (Redis pub/sub), all at once when the event connection was lost, and after ``ttl`` seconds
    in any case, which bounds staleness should an event ever be missed.

    Misses are coalesced: requests asking for the same record at once share one store round trip.
    A load that was in flight when its key was dropped is neither cached nor joined afterwards,
    since its answer may predate the change.
    """

    def __init__(self, size: int, ttl: float, clock: Callable[[], float]) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[str, tuple[SessionRecord, float]] = OrderedDict()
        self._loads: dict[str, asyncio.Future[SessionRecord | None]] = {}

    def get(self, key: str, now: float) -> SessionRecord | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry[1] > self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]  # shared: records are never mutated, Session copies data it changes

    def put(self, record: SessionRecord) -> None:
        self._entries[record.key] = (record, self.clock())
        self._entries.move_to_end(record.key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, keys: list[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)
            self._loads.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._loads.clear()

    async def fetch(
        self, key: str, load: Callable[[str], Awaitable[SessionRecord | None]]
    ) -> SessionRecord | None:
        """The record from the store through ``load``, one call for every request asking now."""
        pending = self._loads.get(key)
        if pending is None:
            pending = self._loads[key] = asyncio.ensure_future(load(key))
            pending.add_done_callback(functools.partial(self._loaded, key))
        return await asyncio.shield(pending)  # a waiter that goes away leaves the load running

    def _loaded(self, key: str, load: asyncio.Future[SessionRecord | None]) -> None:
        if self._loads.get(key) is not load:
            return  # dropped while in flight: the answer may predate the change
        del self._loads[key]
        if load.cancelled() or load.exception() is not None:
            return
        record = load.result()
        if record is not None and not record.expired(self.clock()):
            self.put(record)

    def __len__(self) -> int:
        return len(self._entries)


class SessionManager:
    """Loads, commits and revokes sessions over one backend; every policy lives here."""

    def __init__(
        self,
        backend: SessionBackend,
        lifetime: Lifetime,
        clock: Callable[[], float] = time.time,
        cache_size: int = 0,
        cache_ttl: float = 0.0,
    ) -> None:
        self.backend = backend
        self.lifetime = lifetime
        self.clock = clock
        self._sweeper: asyncio.Task[None] | None = None
        # When this process last moved each session's expiry (started to): requests that loaded
        # the record before that touch must not touch it again within the interval.
        self._touched: OrderedDict[str, float] = OrderedDict()
        self._end_callbacks: list[Callable[[list[str], str | None, str], Any]] = []
        self.cache: RecordCache | None = None
        if cache_size > 0 and cache_ttl > 0 and backend.cacheable:
            self.cache = RecordCache(cache_size, cache_ttl, clock)
            backend.subscribe(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") in ("ended", "changed"):
            self.cache.drop(event["keys"])
        elif event.get("type") == "resync":
            self.cache.clear()

    def cached(self, token: str, key: str) -> Session | None:
        """The session from this process's cache, without a store round trip; None if not there
        (then ``load`` asks the store: the store decides expiry, never the cache)."""
        cache = self._usable_cache()
        if cache is None:
            return None
        now = self.clock()
        record = cache.get(key, now)
        if record is None or record.expired(now):
            return None
        return Session(record, token)

    async def load(self, token: str, key: str | None = None) -> Session | None:
        """The live session of a token (whose store key may be known), or None."""
        key = key or token_key(token)
        session = self.cached(token, key)
        if session is not None:
            return session
        now = self.clock()
        cache = self._usable_cache()
        if cache is not None:
            record = await cache.fetch(key, self.backend.load)
        else:
            record = await self.backend.load(key)
        if record is None:
            return None
        if record.expired(now):
            await self._end(record.key, record.user_id, "expired")
            return None
        return Session(record, token)

    def _usable_cache(self) -> RecordCache | None:
        """The cache, unless events may be missed right now (then the store answers)."""
        return self.cache if self.cache is not None and self.backend.events_live else None

    def needs_commit(self, session: Session) -> bool:
        """Whether ``commit`` would do anything; lets a response skip the async commit."""
        record = session.record
        if session.pending or record is None:
            return session.pending or bool(session._data) or session._user_id is not None
        return self._touch_due(record, self.clock())

    def _touch_due(self, record: SessionRecord, now: float) -> bool:
        """Whether this request should move the expiry: once per interval, counting touches by
        other requests of this process (concurrent requests of one session touch once)."""
        interval = self.lifetime.touch_interval
        if now - record.last_seen_at < interval:
            return False  # the common case: seen within the interval
        return now - self._touched.get(record.key, 0.0) >= interval

    def _note_touch(self, key: str, at: float | None) -> None:
        if at is None:
            self._touched.pop(key, None)
            return
        self._touched[key] = at
        self._touched.move_to_end(key)
        if len(self._touched) > TOUCHES_REMEMBERED:
            self._touched.popitem(last=False)

    async def commit(self, session: Session) -> CookieChange | None:
        """Write what changed, at most one store call in the common case; the cookie to send."""
        now = self.clock()
        record = session.record
        if session._destroyed:
            if record is not None:
                await self._end(record.key, record.user_id, "logout")
                return CookieChange(None)
            return None
        if record is None or session._rotate:
            if record is None and not session._data and session._user_id is None:
                return None  # a visitor who stores nothing costs nothing
            return await self._store_new(session, now)
        touch = self._touch_due(record, now)
        if not touch and not session.pending:
            return None
        last_seen = now if touch else record.last_seen_at
        expires = min(now + record.ttl, record.absolute_expires_at) if touch else record.expires_at
        if touch:
            self._note_touch(record.key, now)
        try:
            updated = await self.backend.update(
                record.key, session._changed, session._removed, last_seen, expires
            )
        except BaseException:
            if touch:
                self._note_touch(record.key, None)  # not done: the next request tries again
            raise
        if not updated:
            return CookieChange(None)  # revoked meanwhile: never recreate it
        if self.cache is not None:
            self.cache.drop([record.key])
            await self.backend.publish({"type": "changed", "keys": [record.key]})
        # A new record, never a mutation: records may be shared through the cache.
        session.record = dataclasses.replace(
            record, last_seen_at=last_seen, expires_at=expires, data=dict(session._data)
        )
        session._changed, session._removed = {}, set()
        return CookieChange(session.token, int(expires - now)) if touch else None

    async def _store_new(self, session: Session, now: float) -> CookieChange:
        old = session.record
        ttl = session._ttl or (old.ttl if old else self.lifetime.ttl)
        keep_start = old is not None and not session._login
        absolute = old.absolute_expires_at if keep_start else now + self.lifetime.absolute_ttl
        token = session._next_token or new_token()
        record = SessionRecord(
            key=token_key(token),
            created_at=old.created_at if keep_start else now,
            last_seen_at=now,
            expires_at=min(now + ttl, absolute),
            absolute_expires_at=absolute,
            ttl=ttl,
            user_id=session._user_id,
            ip=session.ip or (old.ip if old else ""),
            user_agent=(session.user_agent or (old.user_agent if old else ""))[:MAX_USER_AGENT],
            data=dict(session._data),
        )
        await self.backend.create(record)
        if old is not None:
            await self._end(old.key, old.user_id, "regenerated")
        session.record, session.token = record, token
        session._changed, session._removed = {}, set()
        session._rotate = session._login = False
        session._next_token = None
        return CookieChange(token, int(record.expires_at - now))

    async def _end(self, key: str, user_id: str | None, reason: str) -> bool:
        """Delete and announce; False if the store had already let the record go."""
        if self.cache is not None:
            self.cache.drop([key])
        if not await self.backend.delete(key):
            return False
        await self._announce([key], user_id, reason)
        return True

    def on_end(self, callback: Callable[[list[str], str | None, str], Any]) -> None:
        """Call ``callback(keys, user_id, reason)`` when this process ends sessions."""
        self._end_callbacks.append(callback)

    async def _announce(self, keys: list[str], user_id: str | None, reason: str) -> None:
        """Tell every process (open sockets, caches) that these sessions ended."""
        for callback in self._end_callbacks:
            if keys:
                callback(keys, user_id, reason)
        if self.cache is not None:
            self.cache.drop(keys)
        if keys and (user_id is not None or self.cache is not None):
            event = {"type": "ended", "keys": keys, "user": user_id, "reason": reason}
            await self.backend.publish(event)

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        """A user's live sessions, newest first."""
        now = self.clock()
        records = [r for r in await self.backend.list_user(user_id) if not r.expired(now)]
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    async def revoke(self, key: str, reason: str = "revoked") -> bool:
        """End one session by its store key; False if it was already gone."""
        record = await self.backend.load(key)
        return await self._end(key, record.user_id if record else None, reason)

    async def revoke_user(
        self, user_id: str, keep: str | None = None, reason: str = "revoked"
    ) -> int:
        """End every session of a user, except ``keep``; how many ended."""
        removed = await self.backend.delete_user(user_id, keep)
        await self._announce(removed, user_id, reason)
        return len(removed)

    def start_sweeper(self, interval: float) -> None:
        """Remove expired records every ``interval`` seconds, for stores without native expiry."""
        if interval > 0 and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(interval))

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.backend.sweep(self.clock())
                if removed:
                    log.info("swept %d expired sessions", removed)
            except StoreUnavailable:
                log.warning("session sweep skipped: store unavailable")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await self.backend.close()
