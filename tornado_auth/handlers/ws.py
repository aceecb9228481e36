"""WebSockets tied to the session: the base an app's sockets build on, and the live dashboard."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.websocket
from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream

from ..devices import device_name
from ..live import Message
from ..sessions import Session
from .base import BaseHandler
from .decorators import admin_access
from .validation import ApiError

OPEN = "An open socket keeps no {}: read what it needs in opened()"


class _ReleasedHeaders(HTTPHeaders):
    """The headers of a request or response an open socket let go of: empty, and read-only."""

    def __setitem__(self, name: str, value: str) -> None:
        raise RuntimeError(OPEN.format("headers"))

    def add(self, name: str, value: str, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(OPEN.format("headers"))


RELEASED = _ReleasedHeaders()  # one for every open socket
# each open socket's frame reader (kept from the collector) and its protocol
_reading: dict[asyncio.Future[None], _FramesInTheirOwnTask] = {}


class SessionWebSocket(BaseHandler, tornado.websocket.WebSocketHandler):
    """A WebSocket tied to the session that opened it.

    The handshake is refused (401 JSON) without a signed-in session; gate ``get`` with
    ``requires``/``role_required`` for more. Once open, the socket is closed with code 4001 within
    a second when its session ends for any reason (sign-out, revocation, password or role change,
    disable, expiry), in any server process. Override ``opened`` and ``on_message``.

    An open socket keeps only what it needs: once ``opened`` returns, ``self.current_user`` stays,
    ``self.request`` keeps its method, URI, path, arguments, host, remote IP and protocol, but
    its headers are empty and ``self.session`` raises (read what the socket needs from them in
    ``opened``). The live hub pings every socket each ``live.ping_interval`` and closes one that
    does not answer; an override of ``on_pong`` calls ``super().on_pong(data)``.
    """

    api = True  # a refused handshake answers JSON (401), not a redirect
    session_key = user_id = ""
    is_admin = False

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        # Every attribute the socket will have, set here, while no other handler is being made:
        # CPython then keeps the attributes of all of a class's instances in one shared layout.
        # Set later, after other sockets' handlers were made meanwhile (sockets open at once),
        # they cost every socket a dictionary of its own (about a kilobyte).
        self._transforms, self.path_args, self.path_kwargs = [], [], {}
        self.open_args, self.open_kwargs = (), {}
        self._session, self._current_user, self._task = None, None, None
        self.session_key, self.user_id, self.is_admin = "", "", False
        self._client_gone = False

    def prepare(self) -> Awaitable[None] | None:
        """The session first, then a handshake without a signed-in user is refused (401)."""
        resolving = super().prepare()
        if resolving is None:
            self._refuse_anonymous()
            return None
        return self._resolved(resolving)

    async def _resolved(self, resolving: Awaitable[None]) -> None:
        await resolving
        self._refuse_anonymous()

    def _refuse_anonymous(self) -> None:
        if self.current_user is None:
            raise ApiError(401, "Not authenticated")

    @property
    def ping_interval(self) -> float | None:
        """None: the live hub pings the sockets, all from one timer (see ``Heartbeat``)."""
        return None

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if type(protocol) is tornado.websocket.WebSocketProtocol13:  # as Tornado made it
            return _FramesInTheirOwnTask(self, protocol.mask_outgoing, protocol.params)
        return protocol

    def _detach_stream(self) -> IOStream:
        # Tornado's disables the HTTP methods by setting each on the instance, which costs every
        # open socket a dictionary of its own (over a kilobyte); here the class refuses them.
        return self.detach()

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        user, session = self.current_user, self.session
        assert user is not None and session.record is not None
        self.session_key = session.record.key
        self.user_id = user.id
        self.is_admin = admin_access(self)  # statistics and activity only where admin pages answer
        record = session.record
        self.services.live.add(self, min(record.expires_at, record.absolute_expires_at))
        opening = self.opened(*args, **kwargs)
        if opening is None:
            self._let_go_of_the_handshake()
            return None
        return self._opening(opening)

    async def _opening(self, opening: Awaitable[None]) -> None:
        try:
            await opening
        finally:
            self._let_go_of_the_handshake()

    def _let_go_of_the_handshake(self) -> None:
        """Drop what only the handshake needed, which an open socket would otherwise keep: the
        request's headers and HTTP connection, the response's headers, the session (the
        socket's user and session key stay), the handshake's task."""
        request = self.request
        request.headers = RELEASED
        request.connection = request.server_connection = None
        self._headers = RELEASED
        self._session = None
        self._task = None

    @property
    def session(self) -> Session:
        if self._session is None and self.session_key:
            raise RuntimeError(OPEN.format("session"))
        return super().session

    def opened(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        """The socket is open and tied to the session (``self.current_user`` is set)."""
        return None

    def on_live_event(self, event: dict[str, Any]) -> None:
        """An event about the user's sessions (a sign-in elsewhere, sessions ended, and for admins
        statistics); ignored unless overridden."""

    def on_pong(self, data: bytes) -> None:
        self.services.live.answered(self)

    def on_close(self) -> None:
        if self.session_key:
            self.services.live.remove(self)

    def send(self, event: dict[str, Any]) -> None:
        self.on_live_event(event)

    def write_json(self, payload: dict[str, Any]) -> None:
        """Send a JSON message, unless the socket is closing."""
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.write_message(json.dumps(payload))

    def send_ping(self) -> None:
        """Ping, unless the socket is closing."""
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.ping()

    def end(self, code: int, reason: str) -> None:
        self.close(code, reason)


def _http_only(method: Callable[..., Any]) -> Callable[..., Any]:
    """The method, refused once the socket is open, as Tornado refuses it."""

    @functools.wraps(method)
    def refused_once_open(self: SessionWebSocket, *args: Any, **kwargs: Any) -> Any:
        connection = getattr(self, "ws_connection", None)  # (None too while __init__ runs)
        if connection is not None and connection.stream is not None:
            raise RuntimeError("Method not supported for Web Sockets")
        return method(self, *args, **kwargs)

    return refused_once_open


for _name in ("write", "redirect", "set_header", "set_cookie", "set_status", "flush", "finish"):
    setattr(SessionWebSocket, _name, _http_only(getattr(SessionWebSocket, _name)))


class _FramesInTheirOwnTask(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, except that once the socket is open its frames are read in a task of
    their own: the coroutines of the handshake (the handler's ``_execute`` and ``get`` and the
    protocol's ``accept_connection``) then end, with what they hold, instead of waiting for the
    socket to close. Should Tornado stop calling ``_receive_frame_loop`` there, frames are read
    as Tornado reads them, the socket only costs more."""

    async def _receive_frame_loop(self) -> None:
        # (nothing stored on the protocol: one attribute more would cost it a dict of its own)
        frames = asyncio.ensure_future(super()._receive_frame_loop())
        _reading[frames] = self
        frames.add_done_callback(_frames_read)


def _frames_read(frames: asyncio.Future[None]) -> None:
    """A socket's frames are read: what the handshake's coroutines did with an error escaping
    Tornado's loop (or its cancellation at shutdown), log it and close."""
    protocol = _reading.pop(frames)
    error = None if frames.cancelled() else frames.exception()
    if error is not None:
        protocol.handler.log_exception(type(error), error, error.__traceback__)
    if error is not None or frames.cancelled():
        protocol._abort()


class DashboardSocket(SessionWebSocket):
    """The live dashboard: the user's events, and statistics for admins."""

    async def opened(self, *args: Any, **kwargs: Any) -> None:
        """Hello, and for an admin the statistics at once (not only at the next interval)."""
        user = self.current_user
        self.write_json({"type": Message.HELLO, "email": user.email, "role": user.role})
        if self.is_admin:
            self.write_json(await self.services.live.stats(fresh=False))

    def on_message(self, message: str | bytes) -> None:
        """The page sends nothing that matters; socket traffic is not session activity."""

    def on_live_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == Message.SIGNIN:  # named as "Your devices" names it
            event = {**event, "device": device_name(event.get("userAgent", ""))}
        self.write_json(event)
