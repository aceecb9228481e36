"""The signed-in user's own API: dashboard, profile, sessions; the cookie demo; health."""

from __future__ import annotations

from ..devices import device_name
from ..sessions import SessionRecord, public_id
from . import actions
from .base import ApiHandler
from .decorators import authenticated
from .validation import ApiError


class DashboardHandler(ApiHandler):
    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.send_json({"message": "Welcome to dashboard", "userId": user.id, "email": user.email})


class ProfileHandler(ApiHandler):
    @authenticated
    async def get(self) -> None:
        user = await self.services.users.get(self.current_user.id)
        if user is None:
            raise ApiError(401, "Not authenticated")
        self.send_json(user.public())


def describe(record: SessionRecord, current_key: str | None) -> dict[str, object]:
    return {
        "id": public_id(record.key),
        "createdAt": record.created_at,
        "lastSeenAt": record.last_seen_at,
        "expiresAt": min(record.expires_at, record.absolute_expires_at),
        "ip": record.ip,
        "userAgent": record.user_agent,
        "device": device_name(record.user_agent),
        "current": record.key == current_key,
    }


class SessionsHandler(ApiHandler):
    @authenticated
    async def get(self) -> None:
        records = await self.services.sessions.list_user(self.current_user.id)
        self.send_json({"sessions": [describe(r, self.session.key) for r in records]})


class SessionHandler(ApiHandler):
    @authenticated
    async def delete(self, session_id: str) -> None:
        if not await actions.revoke_own_session(self, session_id):
            raise ApiError(404, "Session not found")
        self.set_status(204)
        self.finish()


class RevokeOthersHandler(ApiHandler):
    @authenticated
    async def post(self) -> None:
        self.send_json({"revoked": await actions.revoke_other_sessions(self)})


class SetCookieHandler(ApiHandler):
    """The seed's cookie demo: a plain, unsigned cookie with the guide's attributes."""

    uses_session = False

    def get(self) -> None:
        self.set_cookie(
            "username",
            "john",
            max_age=900,
            httponly=True,
            samesite="Strict",
            secure=self.settings["secure_cookies"],
            path="/",
        )
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish("Cookie set")


class GetCookieHandler(ApiHandler):
    uses_session = False

    def get(self) -> None:
        username = self.get_cookie("username")
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(f"Username: {username}" if username else "No username cookie")


class HealthHandler(ApiHandler):
    uses_session = False

    def get(self) -> None:
        self.send_json({"status": "ok"})


class ReadyHandler(ApiHandler):
    uses_session = False

    async def get(self) -> None:
        down = await self.services.down()
        if down:
            self.send_json({"error": f"Unavailable: {', '.join(down)}", "down": down}, status=503)
        else:
            self.send_json({"status": "ready"})


class NotFoundHandler(ApiHandler):
    uses_session = False

    def prepare(self) -> None:
        raise ApiError(404, "Not found")
