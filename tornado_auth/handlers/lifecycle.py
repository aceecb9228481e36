"""A request's life: counted in flight, cut at shutdown, dropped when its client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web

if TYPE_CHECKING:
    from ..server import InFlight

T = TypeVar("T")
CLIENT_GONE = 499  # logged for a request whose client disconnected before the answer
SHUTTING_DOWN = "Server is shutting down"


class Lifecycle(tornado.web.RequestHandler):
    """Counts the request in the server's ``InFlight`` from start to end, so a shutdown can wait
    for it and then ``cut`` it; notices a client that disconnects (``unless_abandoned``)."""

    # Per-request state; these class defaults cost a request nothing until one is set.
    _in_flight: InFlight | None = None
    _task: asyncio.Task[Any] | None = None  # the one running prepare and the method
    _commit: asyncio.Future[None] | None = None  # the session commit that ends the response
    _abandonable: asyncio.Future[Any] | None = None
    _shutting_down = False
    _client_gone = False

    def _begin_in_flight(self) -> None:
        """Count this request in flight until it finishes or its client goes (from initialize)."""
        in_flight = self.settings.get("in_flight")
        if in_flight is not None:
            self._in_flight = in_flight
            in_flight.begin(self)

    def on_finish(self) -> None:
        self._done()
        super().on_finish()

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._abandonable is not None:
            self._abandonable.cancel()  # a password check still queued is never computed
        self._done()
        super().on_connection_close()

    async def unless_abandoned(self, work: Awaitable[T]) -> T:
        """Await work that only this client is waiting for (a password check or hash); if the
        client disconnects first, the work is cancelled and the request ends there, unanswered,
        so a client that gives up (or retries) does not leave bcrypt work behind."""
        abandonable: asyncio.Future[T] = asyncio.ensure_future(work)
        self._abandonable = abandonable
        if self._client_gone:  # gone before the work began
            abandonable.cancel()
        try:
            return await abandonable
        except asyncio.CancelledError:
            if not self._client_gone:
                raise
            self.set_status(CLIENT_GONE)
            raise tornado.web.Finish() from None
        finally:
            self._abandonable = None

    def _done(self) -> None:
        if self._in_flight is not None:
            self._in_flight.end(self)
            self._in_flight = None

    def cut(self) -> asyncio.Future[Any] | None:
        """At shutdown, past the grace: cancel this request's work, which then answers 503
        (Tornado answers a cancelled handler task through ``send_error``), so it makes no store
        call once the stores are closed. The work to wait for, or None if none is running."""
        self._shutting_down = True
        work = self._commit if self._commit is not None else self._task
        if work is None or work.done():
            return None
        work.cancel()
        return work
