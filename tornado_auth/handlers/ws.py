"""The live dashboard socket: opened with a session cookie, closed when that session ends."""

from __future__ import annotations

import json
from typing import Any

import tornado.websocket

from ..live import Message
from .base import BaseHandler, authenticated


class DashboardSocket(BaseHandler, tornado.websocket.WebSocketHandler):
    api = True  # a refused handshake answers JSON (401), not a redirect

    @authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await super().get(*args, **kwargs)

    def open(self) -> None:
        user = self.current_user
        self.session_key = self.session.key
        self.user_id = user.id
        self.is_admin = user.is_admin
        record = self.session.record
        self.services.live.add(self, min(record.expires_at, record.absolute_expires_at))
        self.send({"type": Message.HELLO, "email": user.email, "role": user.role})

    def on_message(self, message: str | bytes) -> None:
        """The page sends nothing that matters; socket traffic is not session activity."""

    def on_close(self) -> None:
        if hasattr(self, "session_key"):
            self.services.live.remove(self)

    def send(self, event: dict[str, Any]) -> None:
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.write_message(json.dumps(event))

    def end(self, code: int, reason: str) -> None:
        self.close(code, reason)
