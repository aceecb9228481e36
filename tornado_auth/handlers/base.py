"""The one BaseHandler: session and user resolved in ``prepare()``, committed before responding."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Awaitable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web
from tornado.iostream import StreamClosedError

from ..accounts import AccountDisabled, Origin
from ..cookies import VerifiedCookie
from ..errors import StoreUnavailable
from ..resources import STATIC
from ..sessions import CookieChange, Plan, Session
from ..throttle import Throttled
from ..users import User
from .validation import ApiError, json_object, try_again

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("tornado_auth")
T = TypeVar("T")
CLIENT_GONE = 499  # logged for a request whose client disconnected before the answer
SHUTTING_DOWN = "Server is shutting down"
ACCOUNT_DISABLED = "Account disabled, ask an admin to enable it"

# One encoder for every JSON response: json.dumps with separators builds a new one per call.
to_json = json.JSONEncoder(separators=(",", ":")).encode
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


class SessionUser:
    """The signed-in user as the session knows it: no store round trip per request."""

    __slots__ = ("email", "id", "role")

    def __init__(self, user_id: str, email: str, role: str) -> None:
        self.id, self.email, self.role = user_id, email, role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class BaseHandler(tornado.web.RequestHandler):
    api = False  # API handlers answer JSON errors; pages answer HTML and redirects
    uses_session = True

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        """Per-request state. An app's handler takes its dependencies here, as Tornado passes a
        route's keyword arguments, and calls ``super().initialize()`` (typed loosely so such an
        override type-checks); anything left over is a mistake in the route."""
        if args or kwargs:
            raise TypeError(f"{type(self).__name__} takes no route arguments: {sorted(kwargs)}")
        self._session: Session | None = None
        self._in_flight = self.settings.get("in_flight")
        if self._in_flight is not None:
            self._in_flight.begin(self)
        self._task: asyncio.Task[Any] | None = None  # the one running prepare and the method
        self._shutting_down = False
        self._commit: asyncio.Future[None] | None = None
        self._abandonable: asyncio.Future[Any] | None = None
        self._client_gone = False

    @property
    def services(self) -> Services:
        services: Services = self.application.settings["services"]
        return services

    def url(self, path: str) -> str:
        """A path of ours under the prefix the app mounted us at."""
        prefix: str = self.settings.get("auth_prefix", "")
        return prefix + path

    def auth_static_url(self, path: str) -> str:
        """The versioned URL of one of our static assets."""
        version = tornado.web.StaticFileHandler.get_version({"static_path": str(STATIC)}, path)
        return f"{self.url('/static/')}{path}?v={version}"

    def get_template_path(self) -> str | None:
        """A key of this application's own template loader. Tornado keeps one loader per
        template path for the whole process, so two apps (one with its own ``template_path``)
        would otherwise both render with whichever loader was used first."""
        loader = self.settings.get("template_loader")
        return f"<loader {id(loader):x}>" if loader is not None else super().get_template_path()

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(url=self.url, auth_static_url=self.auth_static_url)
        return namespace

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "DENY")
        # Every response here depends on the session (or tells who is signed in): none may be kept
        # for Back after sign-out. Static assets are not served by these handlers and keep theirs.
        self.set_header("Cache-Control", "no-store")
        if self.application.settings.get("secure_cookies"):
            self.set_header("Strict-Transport-Security", "max-age=63072000; includeSubDomains")

    def _origin_matches_host(self, origin: str) -> bool:
        # Tornado 6.6 lets urlsplit's ValueError (Origin: http://[) escape its cross-origin
        # check as a 500; an origin that does not parse matches no host, so the request is a 403.
        try:
            return super()._origin_matches_host(origin)
        except ValueError:
            return False

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

    # -- the session ---------------------------------------------------------------------------

    def prepare(self) -> Awaitable[None] | None:
        """Resolve the session from the cookie: at once from this process's cache, else from the
        store (then the returned awaitable finishes the job, and Tornado waits for it)."""
        self._task = asyncio.current_task()
        if self._shutting_down:
            raise ApiError(503, SHUTTING_DOWN)
        headers = self.request.headers
        size = sum(len(name) + len(value) + 4 for name, value in headers.get_all())
        if size > self.settings["max_header_size"]:
            raise ApiError(431, "Request headers too large")
        if len(self.request.body) > self.settings["max_body_size"]:
            raise ApiError(413, "Request body too large")
        if not self.uses_session:
            return None
        settings = self.settings
        header = headers.get("Cookie")
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
            self.current_user = SessionUser(
                session.user_id, session.get("email", ""), session.get("role", "user")
            )

    @property
    def session(self) -> Session:
        """This request's session; a new, empty one costs nothing unless something is stored."""
        if self._session is None:
            self._session = Session()
        return self._session

    def origin(self, as_admin: bool = False) -> Origin:
        """This request as the use cases see it; ``as_admin`` names the acting admin."""
        user = self.current_user
        return Origin(
            ip=self.request.remote_ip or "",
            user_agent=self.request.headers.get("User-Agent", "")[:256],
            session_key=self._session.key if self._session is not None else None,
            by=user.id if as_admin and user is not None else None,
        )

    async def log_in(self, email: str, password: str, remember_me: bool) -> User | None:
        """Check credentials and sign in; None when they are wrong, 429 when throttled, 401
        saying so when they are right for a disabled account."""
        started = False

        async def start(user: User) -> str:
            nonlocal started
            started = True
            return await self.start_session(user, remember_me)

        accounts = self.services.accounts
        try:
            user = await self.unless_abandoned(
                accounts.sign_in(email, password, self.origin(), start)
            )
        except Throttled as throttled:
            message = try_again("Too many failed sign-ins", throttled.retry_after)
            raise ApiError(429, message, throttled.retry_after) from None
        except AccountDisabled:
            raise ApiError(401, ACCOUNT_DISABLED) from None
        if user is None and started:  # its session was ended at once: send no cookie for it
            self._session, self.current_user = None, None
            self._clear_session_cookie()
        return user

    async def register(self, email: str, name: str, password: str) -> User:
        """Register and sign in; EmailTaken, or 429 when this address registered too often."""
        accounts = self.services.accounts

        async def start(user: User) -> str:
            return await self.start_session(user, remember_me=False)

        try:
            return await self.unless_abandoned(
                accounts.register(email, name, password, self.origin(), start_session=start)
            )
        except Throttled as throttled:
            message = try_again("Too many registrations from this address", throttled.retry_after)
            raise ApiError(429, message, throttled.retry_after) from None

    async def start_session(self, user: User, remember_me: bool) -> str:
        """Bind this request's session to a user under a new token and store it now (the cookie
        goes out with the response); its store key."""
        lifetime = self.services.sessions.lifetime
        ttl = lifetime.remember_me_ttl if remember_me else lifetime.ttl
        session = self.session
        session.login(user.id, {"email": user.email, "role": user.role}, remember_me, ttl)
        session.ip = self.request.remote_ip or ""
        session.user_agent = self.request.headers.get("User-Agent", "")
        self.current_user = SessionUser(user.id, user.email, user.role)
        change = await self.services.sessions.commit(session)
        if change is not None:
            self._set_session_cookie(change)
        assert session.key is not None
        return session.key

    async def sign_out(self) -> None:
        user = self.current_user
        if user is not None:
            await self.services.accounts.signed_out(user.id, user.email, self.origin())
        self.session.destroy()
        self.current_user = None

    def _remaining(self, session: Session) -> int:
        assert session.record is not None
        return max(0, int(session.record.expires_at - self.services.sessions.clock()))

    def _set_session_cookie(self, change: CookieChange) -> None:
        if change.token is None:
            self._clear_session_cookie()
            return
        self.set_signed_cookie(
            self.settings["session_cookie"],
            change.token,
            expires_days=None,
            version=None,
            max_age=change.max_age,
            path="/",
            httponly=True,
            secure=self.settings["secure_cookies"],
            samesite=self.settings["samesite"],
        )

    def _clear_session_cookie(self) -> None:
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

    # -- input and output ----------------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400."""
        return json_object(self.request)

    def send_json(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(to_json(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if self._shutting_down:
            self.set_status(503)
            message = SHUTTING_DOWN
        elif isinstance(error, StoreUnavailable):
            self.set_status(503)
            message = error.public_message
        elif isinstance(error, ApiError):
            message = error.message
            if error.retry_after is not None:
                self.set_header("Retry-After", str(error.retry_after))
        elif isinstance(error, tornado.web.HTTPError) and status_code == 403 and error.log_message:
            message = "Cross-site request refused"
        else:
            message = (
                HTTPStatus(status_code).phrase.capitalize()
                if status_code in HTTPStatus._value2member_map_
                else "Error"
            )
        self._write_error_body(message)

    def _answer_instead(self, status: int, message: str) -> None:
        """Replace the response being built with an error."""
        self.clear()
        self.set_status(status)
        self._write_error_body(message)

    def _write_error_body(self, message: str) -> None:
        if self.api:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"error": message}))
        else:
            self.render("error.html", status=self.get_status(), message=message)

    def _request_summary(self) -> str:
        # Tornado's warnings name the request; without the query, which may carry a token.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, StoreUnavailable):
            log.warning("%s %s: %s", self.request.method, self.request.path, value)
        else:
            super().log_exception(typ, value, tb)

    def deny(self, status: int, message: str) -> None:
        """Refuse an anonymous (401) or under-privileged (403) request, as API or page."""
        if status == 401 and not self.api and self.request.method in ("GET", "HEAD"):
            next_url = urllib.parse.quote(self.request.uri or "/", safe="/")
            self.redirect(f"{self.get_login_url()}?next={next_url}")
            return
        self.set_status(status)
        self._write_error_body(message)


class ApiHandler(BaseHandler):
    """JSON endpoints: guarded by cross-origin checks and a JSON content type, not XSRF tokens."""

    api = True

    def check_xsrf_cookie(self) -> None:
        return None
