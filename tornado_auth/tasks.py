"""Work that must not stop halfway.

A request's task is cancelled when its client goes away during work only that client waits for
(a password check, see ``Lifecycle.unless_abandoned``) and when a shutdown cuts it. Some work must
not end in the middle even then: once a new password is stored, the user's other sessions must
end; once a session is deleted, every process must hear of it. ``to_the_end`` runs such work in a
task of its own, which goes on when whoever awaits it is cancelled; ``in_background`` runs work
nobody awaits (the touches written after their responses); ``settle`` waits for what is still
running of both, so that a shutdown closes the stores only after it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("tornado_auth")

_running: set[asyncio.Task[Any]] = set()
# Periodic work (the live-session count, the admins' figures, the socket checks) takes at most
# this share of the time: a run that takes long waits longer before the next. A store that can
# only count by reading every session (FerretDB counts a range so, where MongoDB reads its index)
# is then not kept busy by counts it cannot finish in their interval.
PERIODIC_SHARE = 0.1
# ... but never waits longer than this (or its interval, if longer): a count that once stalled
# for long does not leave the figures it feeds stale for ten times as long.
PERIODIC_MAX_PAUSE = 300.0


def pause_after(interval: float, took: float) -> float:
    """The wait before periodic work runs again: ``interval``, or longer after a run that took
    ``took`` seconds, so that the work keeps at most PERIODIC_SHARE of the time, up to
    PERIODIC_MAX_PAUSE."""
    paced = took * (1 / PERIODIC_SHARE - 1)
    return max(interval, min(paced, PERIODIC_MAX_PAUSE))


async def to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """``await work``, run to its end even if this await is cancelled (its result or error is then
    left to the log)."""
    task = _started(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            task.add_done_callback(_left_behind)
        raise


def runs_to_the_end(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A coroutine function whose every call runs ``to_the_end``."""

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await to_the_end(method(*args, **kwargs))

    return run


def in_background(work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``work`` with nobody awaiting it, to its end (``settle`` waits for it); its error, if
    any, is left to the log."""
    task = _started(work)
    task.add_done_callback(_left_behind)
    return task


def _started(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """``work`` in a task of its own, which ``settle`` waits for."""
    task = asyncio.ensure_future(work)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def _left_behind(task: asyncio.Task[Any]) -> None:
    """The end of work whose caller went away: nobody else will read its error."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("work finished after its request went away failed: %s", error)


async def settle(seconds: float) -> None:
    """Wait up to ``seconds`` for the work ``to_the_end`` is still running."""
    running = set(_running)
    if running:
        _, late = await asyncio.wait(running, timeout=seconds)
        if late:
            log.warning("%d pieces of work still running at shutdown were left", len(late))
