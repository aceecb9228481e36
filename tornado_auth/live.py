"""Live dashboard sockets: closed when their session ends, fed with the user's events.

How a socket learns that its session ended:
- in this process, and in every process when the session store shares events (Redis pub/sub),
  at once through the ``ended`` event;
- with stores that cannot share events (SQLite, MongoDB) across processes, by a check of every
  open socket's session each ``check_interval`` seconds;
- at its expiry, by a deadline at the session's idle or absolute expiry, moved if activity
  elsewhere moved it.
Socket traffic itself does not count as activity: an open tab does not keep a session alive.

An idle socket costs little: the hub keeps one timer for every session's deadline and one for
every socket's pings (``Deadlines``, ``Heartbeat``), not a timer or a task per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any, Protocol

from . import tasks
from .errors import StoreUnavailable
from .sessions import EndReason, EventType, SessionManager, public_id

log = logging.getLogger("tornado_auth.live")

SESSION_ENDED = 4001  # the close code that tells the page to go to /login
TOO_MANY_SOCKETS = 4008  # the close code of a socket pushed out by newer ones; not reopened
GOING_AWAY = 1001
NORMAL_CLOSURE = 1000
MINUTE = 60.0
# A live count this recent serves an admin socket that opens, even where statistics are not sent
# in rounds (``live.stats_interval`` 0).
MIN_COUNT_REUSE = 1.0
_NEVER = float("inf")
# Ends the user's other dashboards hear of (not those the user sees anyway, like a regeneration).
TOLD_TO_THE_USER = frozenset(
    {EndReason.REVOKED, EndReason.PASSWORD, EndReason.EXPIRED, EndReason.LOGOUT, EndReason.LIMIT}
)


class Message(StrEnum):
    """The ``type`` of a message to a dashboard page."""

    HELLO = "hello"
    SIGNIN = "signin"
    SESSIONS_ENDED = "sessions_ended"
    STATS = "stats"
    ACTIVITY = "activity"  # to admins: the audit trail or the users changed


class RateWindow:
    """Events of the last minute, counted in one-second buckets: bounded however many arrive."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.buckets: deque[list[int]] = deque()  # [second, count], oldest first

    def add(self) -> None:
        second = int(self.clock())
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([second, 1])
            self._forget(second)

    def count(self) -> int:
        """Events since the start of the second a minute ago."""
        self._forget(int(self.clock()))
        return sum(count for _, count in self.buckets)

    def _forget(self, second: int) -> None:
        while self.buckets and self.buckets[0][0] < second - MINUTE:
            self.buckets.popleft()


class Socket(Protocol):
    session_key: str
    user_id: str
    is_admin: bool

    def send(self, event: dict[str, Any]) -> None: ...

    def end(self, code: int, reason: str) -> None: ...

    def send_ping(self) -> None: ...


class Deadlines:
    """When each session's sockets are next checked for expiry: a heap of (time, key) under one
    timer set for the earliest, which calls ``due(keys)`` with the keys whose time came.

    A later ``set`` for a key replaces its time; the entry it replaces stays in the heap until it
    surfaces (or the heap is rebuilt, once stale entries outnumber the live ones)."""

    SLACK = 0.001  # a timer may fire this early: what is due by then is due now

    def __init__(self, clock: Callable[[], float], due: Callable[[list[str]], None]) -> None:
        self.clock = clock
        self.due = due
        self.at: dict[str, float] = {}  # each key's current deadline
        self.heap: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER

    def set(self, key: str, at: float) -> None:
        self.at[key] = at
        heapq.heappush(self.heap, (at, key))
        if len(self.heap) > 2 * len(self.at) + 16:
            self.heap = [(when, name) for name, when in self.at.items()]
            heapq.heapify(self.heap)
        self._schedule()

    def discard(self, key: str) -> None:
        self.at.pop(key, None)  # its heap entry is skipped when it surfaces

    def pop_due(self) -> list[str]:
        """The keys whose deadline has come, each once; their deadlines stay known (``at``)."""
        now, heap = self.clock() + self.SLACK, self.heap
        due: dict[str, None] = {}
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            if self.at.get(key) == at:
                due[key] = None  # once, however many sockets of its session set it
        return list(due)

    def _schedule(self) -> None:
        while self.heap and self.at.get(self.heap[0][1]) != self.heap[0][0]:
            heapq.heappop(self.heap)  # stale: replaced or discarded
        earliest = self.heap[0][0] if self.heap else _NEVER
        if earliest >= self._timer_at:
            return  # the timer set fires first; it reschedules
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = earliest
        if earliest < _NEVER:
            delay = max(0.0, earliest - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, _NEVER
        due = self.pop_due()
        self._schedule()
        if due:
            self.due(due)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, _NEVER


class Heartbeat:
    """Pings every socket once per ``interval`` from one timer: the sockets sit in slots, one
    slot visited every ``TICK`` seconds, so the pings spread over the interval. A socket whose
    ping is still unanswered at its next visit is closed, as Tornado's own pings would close it.
    """

    TICK = 0.1

    def __init__(self, interval: float) -> None:
        self.interval = interval
        count = max(1, round(interval / self.TICK))
        self.slots: list[dict[Socket, None]] = [{} for _ in range(count)]
        self.unanswered: set[Socket] = set()
        self._next = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time of the next visit

    def add(self, socket: Socket) -> None:
        if self.interval <= 0:
            return
        self._slot(socket)[socket] = None
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._due = loop.time() + self.interval / len(self.slots)
            self._timer = loop.call_at(self._due, self._tick)

    def remove(self, socket: Socket) -> None:
        if self.interval > 0:
            self._slot(socket).pop(socket, None)
            self.unanswered.discard(socket)

    def answered(self, socket: Socket) -> None:
        self.unanswered.discard(socket)

    def _slot(self, socket: Socket) -> dict[Socket, None]:
        return self.slots[hash(socket) % len(self.slots)]

    def visit(self) -> None:
        """Ping the sockets of the next slot; close those that did not answer the last ping."""
        slot = self.slots[self._next]
        self._next = (self._next + 1) % len(self.slots)
        for socket in list(slot):
            if socket in self.unanswered:
                self.remove(socket)
                socket.end(NORMAL_CLOSURE, "ping timed out")
            else:
                self.unanswered.add(socket)
                socket.send_ping()

    def _tick(self) -> None:
        self.visit()
        if not any(self.slots):
            self._timer = None  # no socket left: the next one starts the timer again
            return
        loop = asyncio.get_running_loop()
        self._due = max(self._due + self.interval / len(self.slots), loop.time())
        self._timer = loop.call_at(self._due, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class LiveHub:
    def __init__(
        self,
        sessions: SessionManager,
        check_interval: float,
        stats_interval: float,
        clock: Callable[[], float] = time.time,
        max_per_session: int = 0,
        max_per_user: int = 0,
        ping_interval: float = 0,
    ) -> None:
        self.sessions = sessions
        self.check_interval = check_interval
        self.stats_interval = stats_interval
        self.clock = clock
        self.max_per_session = max_per_session
        self.max_per_user = max_per_user
        # Sockets in the order they opened, the oldest first (most sessions and users have one).
        self.by_key: dict[str, list[Socket]] = {}
        self.by_user: dict[str, list[Socket]] = {}
        self.admins: dict[Socket, None] = {}
        self.open_sockets = 0
        self.on_count: list[Callable[[int], Any]] = []  # told the open sockets after a change
        self.sign_ins = RateWindow(clock)
        self.failures = RateWindow(clock)
        # The live count the admins' figures show: the last one (when, how many), the one
        # running (every socket that asks meanwhile waits for it), and the wait between rounds.
        self._last_count: tuple[float, int | None] | None = None
        self._counting: asyncio.Future[int | None] | None = None
        self._stats_pause = stats_interval
        self.deadlines = Deadlines(clock, lambda keys: self._spawn(self.check(keys)))
        self.heartbeat = Heartbeat(ping_interval)
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Future[None]] = set()
        sessions.events.subscribe(self._on_event)

    def start(self) -> None:
        if not self.sessions.events.shared and self.check_interval > 0:
            self._tasks.append(asyncio.create_task(self._every(self.check_interval, self.check)))
        if self.stats_interval > 0:
            self._tasks.append(
                asyncio.create_task(self._every(self.stats_interval, self.push_stats, paced=True))
            )

    def add(self, socket: Socket, expires_at: float) -> None:
        """Track a new socket; past a cap, the oldest socket of its session or user closes."""
        self.open_sockets += 1
        if socket.is_admin:
            self.admins[socket] = None
        self.heartbeat.add(socket)
        for index, name, cap in (
            (self.by_key, socket.session_key, self.max_per_session),
            (self.by_user, socket.user_id, self.max_per_user),
        ):
            sockets = index.get(name)
            if sockets is None:
                sockets = index[name] = []
            sockets.append(socket)
            while cap and len(sockets) > cap:
                oldest = sockets[0]
                self.remove(oldest)  # at once: its close handshake may take a while
                oldest.end(TOO_MANY_SOCKETS, "too many open dashboards")
        self._arm(socket.session_key, expires_at)
        self._counted()

    def remove(self, socket: Socket) -> None:
        """Stop tracking a socket (again: nothing happens)."""
        sockets = self.by_key.get(socket.session_key)
        if sockets is None or socket not in sockets:
            return
        self.open_sockets -= 1
        self.admins.pop(socket, None)
        self.heartbeat.remove(socket)
        for index, name in ((self.by_key, socket.session_key), (self.by_user, socket.user_id)):
            sockets = index.get(name)
            if sockets is not None and socket in sockets:
                sockets.remove(socket)
                if not sockets:
                    del index[name]
        self._counted()
        if socket.session_key not in self.by_key:
            self.deadlines.discard(socket.session_key)

    def answered(self, socket: Socket) -> None:
        """A socket answered a ping."""
        self.heartbeat.answered(socket)

    def _counted(self) -> None:
        for callback in self.on_count:
            callback(self.open_sockets)

    # -- events ------------------------------------------------------------------------------

    async def signed_in(self, user_id: str, ip: str, user_agent: str) -> None:
        event = {"type": EventType.SIGNIN, "user": user_id, "ip": ip, "userAgent": user_agent}
        await self._publish(event)

    async def sign_in_failed(self) -> None:
        await self._publish({"type": EventType.SIGNIN_FAILED})

    async def audited(self, event: str) -> None:
        await self._publish({"type": EventType.AUDITED, "event": event})

    async def _publish(self, event: dict[str, Any]) -> None:
        try:
            await self.sessions.events.publish(event)
        except StoreUnavailable as error:
            log.warning("live event not published: %s", error)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        now = self.clock()
        if kind == EventType.ENDED:
            self._ended(event["keys"], event["user"], event.get("reason", EndReason.ENDED))
        elif kind == EventType.SIGNIN:
            self.sign_ins.add()
            at = {
                "type": Message.SIGNIN,
                "at": now,
                "ip": event["ip"],
                "userAgent": event["userAgent"],
            }
            for socket in list(self.by_user.get(event["user"], ())):
                socket.send(at)
        elif kind == EventType.SIGNIN_FAILED:
            self.failures.add()
        elif kind == EventType.AUDITED:
            activity = {"type": Message.ACTIVITY, "event": event.get("event")}
            for socket in list(self.admins):
                socket.send(activity)
        elif kind == EventType.RESYNC:
            self._spawn(self.check())

    def _ended(self, keys: list[str], user_id: str | None, reason: str) -> None:
        """Close the sessions' sockets; ``reason`` as sent, maybe by a newer process."""
        for key in keys:
            for socket in list(self.by_key.get(key, ())):
                socket.end(SESSION_ENDED, reason)
        if user_id is not None and reason in TOLD_TO_THE_USER:
            ids = [public_id(key) for key in keys]
            for socket in list(self.by_user.get(user_id, ())):
                socket.send({"type": Message.SESSIONS_ENDED, "ids": ids, "reason": reason})

    # -- checks --------------------------------------------------------------------------------

    def _arm(self, key: str, expires_at: float) -> None:
        self.deadlines.set(key, expires_at)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def check(self, keys: list[str] | None = None) -> None:
        """Close the sockets whose session is gone or expired; re-arm the others' timers."""
        for key in list(self.by_key) if keys is None else keys:
            if key not in self.by_key:
                continue
            try:
                record = await self.sessions.store.load(key)
            except StoreUnavailable:
                return  # unknown, not ended: check again later
            if record is None:  # expired by the store, or ended where events do not reach us
                expired = self.clock() >= self.deadlines.at.get(key, _NEVER)
                reason = EndReason.EXPIRED if expired else EndReason.ENDED
                self._ended([key], self.by_key[key][0].user_id, reason)
            elif record.expired(self.clock()):
                # Its event closes the sockets, unless the store (Redis's own expiry) got there
                # first between the load and the delete: then nothing was announced.
                if not await self.sessions.revoke(key, reason=EndReason.EXPIRED):
                    self._ended([key], record.user_id, EndReason.EXPIRED)
            else:
                self._arm(key, min(record.expires_at, record.absolute_expires_at))

    async def stats(self, fresh: bool = True) -> dict[str, Any]:
        """The admins' figures. ``fresh``: the live sessions counted now (or by the count running);
        else, as for a socket that just opened, the last count unless it is older than a round of
        statistics: however many admin sockets open, the store counts once a round."""
        reuse_within = 0.0 if fresh else max(self._stats_pause, MIN_COUNT_REUSE)
        return {
            "type": Message.STATS,
            "activeSessions": await self._active_sessions(reuse_within),
            "signInsPerMinute": self.sign_ins.count(),
            "failedSignInsPerMinute": self.failures.count(),
            "openSockets": self.open_sockets,
        }

    async def _active_sessions(self, reuse_within: float) -> int | None:
        if self._last_count is not None and time.monotonic() - self._last_count[0] < reuse_within:
            return self._last_count[1]
        if self._counting is None:
            self._counting = asyncio.ensure_future(self._count())
        return await asyncio.shield(self._counting)

    async def _count(self) -> int | None:
        try:
            active = await self.sessions.store.count(self.clock())
        except StoreUnavailable:
            active = None
        finally:
            self._counting = None
        self._last_count = (time.monotonic(), active)
        return active

    async def push_stats(self) -> None:
        admins = list(self.admins)
        if admins:
            stats = await self.stats()
            for socket in admins:
                socket.send(stats)

    async def _every(self, interval: float, work: Callable[[], Any], paced: bool = False) -> None:
        """``work`` every ``interval``; ``paced`` (the statistics' rounds, whose wait opening
        sockets read too): less often where it takes long (``tasks.pause_after``). The socket
        checks are not paced: their interval bounds how long a revoked session's socket stays
        open."""
        took = 0.0
        while True:
            if paced:
                self._stats_pause = tasks.pause_after(interval, took)
            await asyncio.sleep(self._stats_pause if paced else interval)
            began = time.monotonic()
            try:
                await work()
            except Exception:
                log.exception("live: periodic %s failed", getattr(work, "__name__", "work"))
            took = time.monotonic() - began

    def close_all(self) -> None:
        """Server shutdown: every socket is told to go away (1001)."""
        for sockets in list(self.by_key.values()):
            for socket in list(sockets):
                socket.end(GOING_AWAY, "server shutting down")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.deadlines.close()
        self.heartbeat.close()
