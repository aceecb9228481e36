"""The request's session: found from the signed cookie before the method, committed before the
response, with the cookie set, renewed or cleared to match."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tornado.iostream import StreamClosedError

from ..cookies import VerifiedCookie
from ..errors import StoreUnavailable
from ..logs import current_request
from ..sessions import CookieChange, Plan, Session, Write
from .lifecycle import SHUTTING_DOWN
from .responses import Responses
from .validation import ApiError

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("tornado_auth")


class SessionUser:
    """The signed-in user as the session knows it: no store round trip per request."""

    __slots__ = ("amr", "email", "id", "role")

    def __init__(self, user_id: str, email: str, role: str, amr: tuple[str, ...] = ()) -> None:
        self.id, self.email, self.role = user_id, email, role
        self.amr = amr  # how the user proved who they are this session: "pwd", "otp", ...

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def mfa(self) -> bool:
        """Whether this session was signed in (or enrolled) with a second factor."""
        return any(method != "pwd" for method in self.amr)


class RequestSession(Responses):
    """``self.session`` and ``self.current_user`` from the cookie; ``finish`` commits first."""

    _session: Session | None = None  # none until the cookie names one or something is stored
    _cookie_to_send: CookieChange | None = None

    @property
    def services(self) -> Services:
        services: Services = self.application.settings["services"]
        return services

    @property
    def session(self) -> Session:
        """This request's session; a new, empty one costs nothing unless something is stored."""
        if self._session is None:
            self._session = Session()
        return self._session

    def _resolve_session(self) -> Awaitable[None] | None:
        """Resolve the session from the cookie: at once from this process's cache, else from the
        store (then the returned awaitable finishes the job, and Tornado waits for it)."""
        settings = self.settings
        header = self.request.headers.get("Cookie")
        if header is None or settings["session_cookie"] not in header:
            return None
        cookie = settings["signed_cookies"].from_header(header)
        if cookie is None:
            self._clear_session_cookie()  # absent, tampered or expired: anonymous
            return None
        session = settings["services"].sessions.cached(cookie.token, cookie.key)
        if session is None:
            return self._load_session(cookie)
        self._use_session(session, cookie.version)
        return None

    async def _load_session(self, cookie: VerifiedCookie) -> None:
        try:
            session = await self.services.sessions.load(cookie.token, cookie.key)
        except StoreUnavailable as error:
            raise ApiError(503, error.public_message) from error
        if session is None:
            self._clear_session_cookie()  # unknown or expired: anonymous
        else:
            self._use_session(session, cookie.version)

    def _use_session(self, session: Session, key_version: int | None) -> None:
        self._session = session
        current = self.settings["key_version"]
        if current is not None and key_version != current:
            self._set_session_cookie(CookieChange(session.token, self._remaining(session)))
        if session.user_id is not None:
            amr = session.get("amr")
            self.current_user = SessionUser(
                session.user_id,
                session.get("email", ""),
                session.get("role", "user"),
                tuple(str(m) for m in amr) if isinstance(amr, list) else (),
            )
            context = current_request.get()
            if context is not None:  # the request's log records name its user
                context.user_id = session.user_id

    def _remaining(self, session: Session) -> int:
        assert session.record is not None
        return max(0, int(session.record.expires_at - self.services.sessions.clock()))

    def _set_session_cookie(self, change: CookieChange) -> None:
        """Send this session cookie with the response (written as the headers go out)."""
        if change.token is None:
            self._clear_session_cookie()
        else:
            self._cookie_to_send = change

    def flush(self, include_footers: bool = False) -> asyncio.Future[None]:
        """The session cookie to send goes into the headers as they are written, once."""
        change = self._cookie_to_send
        if change is not None and not self._headers_written:
            self._cookie_to_send = None
            name = self.settings["session_cookie"]
            if hasattr(self, "_new_cookie"):
                self._new_cookie.pop(name, None)  # it replaces an earlier clear
            cookies = self.settings["signed_cookies"]
            header = None
            if cookies.made_for(self.settings):  # else the app's settings changed after
                header = cookies.set_cookie_header(change.token, change.max_age)
            if header is not None:
                self.add_header("Set-Cookie", header)  # as set_signed_cookie, at less cost
            else:
                self.set_signed_cookie(
                    name,
                    change.token,  # type: ignore[arg-type]
                    expires_days=None,
                    version=None,
                    max_age=change.max_age,
                    path="/",
                    httponly=True,
                    secure=self.settings["secure_cookies"],
                    samesite=self.settings["samesite"],
                )
        return super().flush(include_footers)

    def _clear_session_cookie(self) -> None:
        self._cookie_to_send = None  # a clear wins over a set made before it
        self.clear_cookie(
            self.settings["session_cookie"],
            path="/",
            httponly=True,
            secure=self.settings["secure_cookies"],
            samesite=self.settings["samesite"],
        )

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        """Commit the session first, so the cookie goes out with the response."""
        if self._commit is not None and chunk is None:
            return self._commit  # Tornado's automatic finish while the commit is in flight
        status, session = self.get_status(), self._session
        if (
            session is None
            or self._commit is not None
            or status >= 500
            or status == 101  # a WebSocket handshake
            or (plan := self.services.sessions.plan(session)) is None
        ):
            return super().finish(chunk)
        if plan.write is Write.TOUCH:  # the common write: not waited for
            self._set_session_cookie(self.services.sessions.touch(session, plan))
            return super().finish(chunk)
        if chunk is not None:
            self.write(chunk)
        self._commit = asyncio.ensure_future(self._commit_and_finish(plan))
        return self._commit

    async def _commit_and_finish(self, plan: Plan) -> None:
        try:
            change = await self.services.sessions.write(self.session, plan)
        except asyncio.CancelledError:
            if not self._shutting_down:
                raise
            self._answer_instead(503, SHUTTING_DOWN)
            return
        except StoreUnavailable as error:
            log.warning("session commit failed: %s", error)
            self._answer_instead(503, error.public_message)
            return
        except Exception:
            log.exception("session commit failed")
            self._answer_instead(500, "Internal Server Error")
            return
        if change is not None:
            self._set_session_cookie(change)
        with contextlib.suppress(StreamClosedError):
            await super().finish()
