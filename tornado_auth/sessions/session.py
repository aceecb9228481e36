"""What a session means: tokens, dirty tracking, sliding and absolute expiry, regeneration."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..tasks import in_background, runs_to_the_end
from .store import EndReason, EventBus, EventType, SessionRecord, SessionStore

TOKEN_BYTES = 32  # 256 random bits
MAX_USER_AGENT = 256
TOUCHES_REMEMBERED = 10000  # sessions whose last touch by this process is remembered
ENDS_REMEMBERED = 10000  # sessions whose end this process saw or heard of, most recent
# Data keys are plain names so that every store can address one key alone (no dots, no $).
DATA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

log = logging.getLogger("tornado_auth.sessions")


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


class Session(MutableMapping[str, Any]):
    """One request's view of a session: a mapping whose changes are tracked key by key.

    The session manager commits it through the read-only properties below and ``committed``.
    """

    __slots__ = (
        "_changed",
        "_data",
        "_destroyed",
        "_login_ttl",
        "_next_token",
        "_owned",
        "_removed",
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
        self._login_ttl: float | None = None
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

    # -- the mapping -----------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)  # faster than the mixin's, on every request

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

    def _own(self) -> None:
        if not self._owned:
            self._data, self._owned = dict(self._data), True

    # -- lifecycle -------------------------------------------------------------------------------

    def login(self, user_id: str, data: dict[str, Any], remember_me: bool, ttl: float) -> None:
        """Bind the session to a user under a fresh token (session fixation defence)."""
        self._user_id = user_id
        self._login_ttl = ttl
        self.regenerate()
        self._destroyed = False
        self.update(data)
        self["remember_me"] = remember_me

    def regenerate(self) -> None:
        """Move the data to a new token at commit; the old token stops working."""
        self._next_token = new_token()

    @property
    def next_key(self) -> str | None:
        """The store key this session will have after commit (for audit entries)."""
        return token_key(self._next_token) if self._next_token else self.key

    def destroy(self) -> None:
        """End the session: the record is deleted and the cookie cleared at commit."""
        self._destroyed = True
        self._data, self._owned = {}, True

    # -- what a commit reads ---------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether there is anything to write, apart from a touch."""
        return bool(self._changed or self._removed or self._next_token or self._destroyed)

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    @property
    def rotating(self) -> bool:
        """Whether commit moves the session to a new token."""
        return self._next_token is not None

    @property
    def login_ttl(self) -> float | None:
        """The idle lifetime a sign-in asked for, until committed."""
        return self._login_ttl

    @property
    def owner(self) -> str | None:
        """The user the record will belong to (also after ``destroy``)."""
        return self._user_id

    @property
    def changed(self) -> dict[str, Any]:
        """Data keys set since the last commit (read only)."""
        return self._changed

    @property
    def removed(self) -> set[str]:
        """Data keys deleted since the last commit (read only)."""
        return self._removed

    def data(self) -> dict[str, Any]:
        """A copy of the data, for a new record."""
        return dict(self._data)

    def new_token(self) -> str:
        """The token the next record gets."""
        return self._next_token or new_token()

    def committed(self, record: SessionRecord, token: str | None = None) -> None:
        """The store now holds ``record`` (under ``token``, if it moved): nothing is pending."""
        self.record = record
        if token is not None:
            self.token = token
        self._changed, self._removed = {}, set()
        self._next_token = self._login_ttl = None


_MISSING = object()


def _slid(record: SessionRecord, now: float) -> float:
    """The expiry a touch at ``now`` gives: the idle lifetime from now, within the absolute cap."""
    return min(now + record.ttl, record.absolute_expires_at)


class Write(enum.Enum):
    DESTROY = enum.auto()  # delete the record, clear the cookie
    CREATE = enum.auto()  # a new record: a first write, or a new token
    UPDATE = enum.auto()  # changed keys, with or without a touch of the expiry
    TOUCH = enum.auto()  # only the expiry moves forward: may be written after the response


@dataclass(frozen=True, slots=True)
class Plan:
    """What a commit writes, decided once at ``now``."""

    write: Write
    now: float
    touch: bool = False


class SessionManager:
    """Loads, commits and revokes sessions over one store; every policy lives here."""

    def __init__(
        self,
        store: SessionStore,
        events: EventBus,
        lifetime: Lifetime,
        clock: Callable[[], float] = time.time,
        max_per_user: int = 0,
    ) -> None:
        self.store = store
        self.events = events
        self.lifetime = lifetime
        self.clock = clock
        self.max_per_user = max_per_user
        # When this process last moved each session's expiry (started to): requests that loaded
        # the record before that touch must not touch it again within the interval.
        self._touched: OrderedDict[str, float] = OrderedDict()
        # Touches made by ``touch`` and not yet written: key -> (last seen, expiry); the task that
        # writes them.
        self._touches: dict[str, tuple[float, float]] = {}
        self._touching: asyncio.Task[None] | None = None  # the batch the next touch joins
        self._batches: set[asyncio.Task[None]] = set()  # batches not yet written
        # Sessions recently ended, here or (through the events) elsewhere: a request that loaded
        # one before its end must not send its cookie again with a touch.
        self._ended: OrderedDict[str, None] = OrderedDict()
        events.subscribe(self._on_event)
        self._end_callbacks: list[Callable[[list[str], str | None, str], Any]] = []
        self._create_callbacks: list[Callable[[], Any]] = []

    def cached(self, token: str, key: str) -> Session | None:
        """The session if this process holds it, without I/O; None if not (then ``load`` asks
        the store: the store decides expiry, never a cached copy)."""
        now = self.clock()
        record = self.store.held(key, now)
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
        record = await self.store.load(key)
        if record is None:
            return None
        if record.expired(now):
            await self._end(record.key, record.user_id, EndReason.EXPIRED)
            return None
        return Session(record, token)

    # -- commit ----------------------------------------------------------------------------------

    def plan(self, session: Session) -> Plan | None:
        """What committing ``session`` now would write; None when nothing (no async commit)."""
        now = self.clock()
        record = session.record
        if record is not None and not session.pending:  # the common case
            return Plan(Write.TOUCH, now, touch=True) if self._touch_due(record, now) else None
        if session.destroyed:
            return Plan(Write.DESTROY, now) if record is not None else None
        if record is None or session.rotating:
            if record is None and not session and session.owner is None:
                return None  # a visitor who stores nothing costs nothing
            return Plan(Write.CREATE, now)
        return Plan(Write.UPDATE, now, touch=self._touch_due(record, now))

    async def commit(self, session: Session) -> CookieChange | None:
        """Write what changed, at most one store call in the common case; the cookie to send."""
        plan = self.plan(session)
        return None if plan is None else await self.write(session, plan)

    async def write(self, session: Session, plan: Plan) -> CookieChange | None:
        """Carry out a plan from ``plan``; the cookie to send."""
        record = session.record
        if plan.write is Write.CREATE:
            return await self._store_new(session, plan.now)
        assert record is not None
        if plan.write is Write.DESTROY:
            await self._end(record.key, record.user_id, EndReason.LOGOUT)
            return CookieChange(None)
        return await self._update(session, record, plan)

    def touch(self, session: Session, plan: Plan) -> CookieChange:
        """Carry out a ``Write.TOUCH`` plan without waiting for the store: the cookie to send now.

        The new expiry is written right after, with the other touches of the same moment
        (``touches_written``). A touch only moves the expiry forward and never recreates a
        session, so nothing waits on it: a session revoked meanwhile stays revoked, and its cookie
        is cleared when this process saw or heard of the end (else by the next request, which
        finds no session); a touch that fails (the store is down) is logged and tried again by
        the session's next request.
        """
        record = session.record
        assert plan.write is Write.TOUCH and record is not None
        if record.key in self._ended:
            return CookieChange(None)  # ended while this request ran: clear the cookie
        now = plan.now
        expires = _slid(record, now)
        self._note_touch(record.key, now)
        self._touches[record.key] = (now, expires)
        if self._touching is None:
            self._touching = in_background(self._write_touches())
            self._batches.add(self._touching)
            self._touching.add_done_callback(self._batches.discard)
        return CookieChange(session.token, int(expires - now))

    async def touches_written(self) -> None:
        """Wait until the touches made so far by ``touch`` are written (or have failed)."""
        while self._batches:
            await asyncio.wait(set(self._batches))

    async def _write_touches(self) -> None:
        await asyncio.sleep(0)  # the touches of requests finishing now go in the same batch
        touches, self._touches, self._touching = self._touches, {}, None
        try:
            results = await self.store.touch(touches)
        except Exception as error:  # each touch is then reported as failed, with the error
            results = [error] * len(touches)
        failed = [
            (key, r)
            for key, r in zip(touches, results, strict=True)
            if isinstance(r, BaseException)
        ]
        for key, _ in failed:
            self._note_touch(key, None)  # not done: the session's next request tries again
        if failed:
            log.warning("%d of %d session touches not stored: %s", len(failed), len(touches),
                        failed[0][1])  # fmt: skip

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

    async def _update(
        self, session: Session, record: SessionRecord, plan: Plan
    ) -> CookieChange | None:
        now, touch = plan.now, plan.touch
        last_seen = now if touch else record.last_seen_at
        expires = _slid(record, now) if touch else record.expires_at
        if touch:
            self._note_touch(record.key, now)
        try:
            updated = await self.store.update(
                record.key, session.changed, session.removed, last_seen, expires
            )
        except BaseException:
            if touch:
                self._note_touch(record.key, None)  # not done: the next request tries again
            raise
        if not updated:
            return CookieChange(None)  # revoked meanwhile: never recreate it
        # A new record, never a mutation: records may be shared through a cache.
        session.committed(
            dataclasses.replace(
                record, last_seen_at=last_seen, expires_at=expires, data=session.data()
            )
        )
        return CookieChange(session.token, int(expires - now)) if touch else None

    async def _store_new(self, session: Session, now: float) -> CookieChange:
        old = session.record
        ttl = session.login_ttl or (old.ttl if old else self.lifetime.ttl)
        keep_start = old is not None and session.login_ttl is None
        absolute = (
            old.absolute_expires_at if old and keep_start else now + self.lifetime.absolute_ttl
        )
        token = session.new_token()
        record = SessionRecord(
            key=token_key(token),
            created_at=old.created_at if old and keep_start else now,
            last_seen_at=now,
            expires_at=min(now + ttl, absolute),
            absolute_expires_at=absolute,
            ttl=ttl,
            user_id=session.owner,
            ip=session.ip or (old.ip if old else ""),
            user_agent=(session.user_agent or (old.user_agent if old else ""))[:MAX_USER_AGENT],
            data=session.data(),
        )
        if keep_start:
            # A regeneration moves a live session: ended meanwhile (revoked, its user disabled),
            # it must not come back under a new token.
            assert old is not None
            if not await self._end(old.key, old.user_id, EndReason.REGENERATED):
                return CookieChange(None)
            await self.store.create(record)
        else:
            await self.store.create(record)
            if old is not None:
                await self._end(old.key, old.user_id, EndReason.REGENERATED)
        for callback in self._create_callbacks:
            callback()
        if record.user_id is not None and self.max_per_user > 0:
            # After the create, so that of concurrent sign-ins the last to trim sees them all.
            ended = await self.store.trim_user(record.user_id, self.max_per_user, now)
            await self._announce(ended, record.user_id, EndReason.LIMIT)
        session.committed(record, token)
        return CookieChange(token, int(record.expires_at - now))

    # -- ends ------------------------------------------------------------------------------------

    @runs_to_the_end  # a session deleted is announced, whatever happens to the request
    async def _end(self, key: str, user_id: str | None, reason: EndReason) -> bool:
        """Delete and announce; False if the store had already let the record go."""
        if not await self.store.delete(key):
            return False
        await self._announce([key], user_id, reason)
        return True

    def on_create(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` when this process stores a new session (a regeneration too)."""
        self._create_callbacks.append(callback)

    def on_end(self, callback: Callable[[list[str], str | None, str], Any]) -> None:
        """Call ``callback(keys, user_id, reason)`` when this process ends sessions."""
        self._end_callbacks.append(callback)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == EventType.ENDED:
            self._note_ended(event["keys"])

    def _note_ended(self, keys: list[str]) -> None:
        for key in keys:
            self._ended[key] = None
            self._ended.move_to_end(key)
        while len(self._ended) > ENDS_REMEMBERED:
            self._ended.popitem(last=False)

    async def _announce(self, keys: list[str], user_id: str | None, reason: EndReason) -> None:
        """Tell every process (open sockets, cached copies) that these sessions ended."""
        self._note_ended(keys)  # at once here; other processes hear of it through the events
        if keys:
            for callback in self._end_callbacks:
                callback(keys, user_id, reason)
            event = {"type": EventType.ENDED, "keys": keys, "user": user_id, "reason": reason}
            await self.events.publish(event)

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        """A user's live sessions, newest first."""
        now = self.clock()
        records = [r for r in await self.store.list_user(user_id) if not r.expired(now)]
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    async def revoke(self, key: str, reason: EndReason = EndReason.REVOKED) -> bool:
        """End one session by its store key; False if it was already gone."""
        record = await self.store.load(key)
        return await self._end(key, record.user_id if record else None, reason)

    @runs_to_the_end
    async def revoke_user(
        self, user_id: str, keep: str | None = None, reason: EndReason = EndReason.REVOKED
    ) -> int:
        """End every session of a user, except ``keep``; how many ended."""
        removed = await self.store.delete_user(user_id, keep)
        await self._announce(removed, user_id, reason)
        return len(removed)
