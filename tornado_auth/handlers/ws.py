"""WebSockets tied to the session: the base an app's sockets build on, and the live dashboard."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

import tornado.websocket

from ..devices import device_name
from ..live import Message
from .base import BaseHandler
from .decorators import admin_access, authenticated


class SessionWebSocket(BaseHandler, tornado.websocket.WebSocketHandler):
    """A WebSocket tied to the session that opened it.

    The handshake is refused (401 JSON) without a signed-in session; gate ``get`` with
    ``requires``/``role_required`` for more. Once open, the socket is closed with code 4001 within
    a second when its session ends for any reason (sign-out, revocation, password or role change,
    disable, expiry), in any server process. Override ``opened`` and ``on_message``.

    The live hub pings every socket each ``live.ping_interval`` and closes one that does not
    answer; an override of ``on_pong`` calls ``super().on_pong(data)``.
    """

    api = True  # a refused handshake answers JSON (401), not a redirect

    @property
    def ping_interval(self) -> float | None:
        """None: the live hub pings the sockets, all from one timer (see ``Heartbeat``)."""
        return None

    @authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        user, session = self.current_user, self.session
        assert user is not None and session.record is not None
        self.session_key = session.record.key
        self.user_id = user.id
        self.is_admin = admin_access(self)  # statistics and activity only where admin pages answer
        record = session.record
        self.services.live.add(self, min(record.expires_at, record.absolute_expires_at))
        return self.opened(*args, **kwargs)

    def opened(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        """The socket is open and tied to the session (``self.current_user`` is set)."""
        return None

    def on_live_event(self, event: dict[str, Any]) -> None:
        """An event about the user's sessions (a sign-in elsewhere, sessions ended, and for admins
        statistics); ignored unless overridden."""

    def on_pong(self, data: bytes) -> None:
        self.services.live.answered(self)

    def on_close(self) -> None:
        if hasattr(self, "session_key"):
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


class DashboardSocket(SessionWebSocket):
    """The live dashboard: the user's events, and statistics for admins."""

    async def opened(self, *args: Any, **kwargs: Any) -> None:
        """Hello, and for an admin the statistics at once (not only at the next interval)."""
        user = self.current_user
        self.write_json({"type": Message.HELLO, "email": user.email, "role": user.role})
        if self.is_admin:
            self.write_json(await self.services.live.stats())

    def on_message(self, message: str | bytes) -> None:
        """The page sends nothing that matters; socket traffic is not session activity."""

    def on_live_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == Message.SIGNIN:  # named as "Your devices" names it
            event = {**event, "device": device_name(event.get("userAgent", ""))}
        self.write_json(event)
