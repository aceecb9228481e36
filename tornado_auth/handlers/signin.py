"""Signing in, registering and signing out from a request: the account use cases, bound to this
request's session, cookie and client. A sign-in that needs a second step holds no session in
between: only a short pending cookie naming a single-use record of the second-factor service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..accounts import AccountDisabled, Origin, SecondFactorRequired, StartSession
from ..mfa import PendingSignIn
from ..throttle import Throttled
from ..users import User
from .session_cookie import RequestSession, SessionUser
from .validation import ApiError, try_again

ACCOUNT_DISABLED = "Account disabled, ask an admin to enable it"
PENDING_COOKIE = "auth_mfa"  # the sign-in waiting for its second step


class SignIn(RequestSession):
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
        saying so when they are right for a disabled account. SecondFactorRequired when the
        user has a second factor: then the pending cookie is set and no session exists."""
        accounts = self.services.accounts
        try:
            return await self._signing_in(
                lambda start: accounts.sign_in(email, password, self.origin(), start),
                remember_me,
                ["pwd"],
            )
        except SecondFactorRequired as needed:
            mfa = self.services.mfa
            token = await mfa.begin_sign_in(needed.user, remember_me, needed.methods)
            self._set_pending_cookie(token)
            raise

    async def finish_sign_in(
        self, user: User, remember_me: bool, methods_used: list[str]
    ) -> User | None:
        """Sign in a user already proven by ``methods_used`` (e.g. ``["pwd", "otp"]``, or
        ``["passkey"]``), as a password sign-in does: a new session token, audited, announced,
        hooks run, and ended at once (None) if the account changed meanwhile."""
        accounts = self.services.accounts
        return await self._signing_in(
            lambda start: accounts.finish_sign_in(user, self.origin(), start, methods_used),
            remember_me,
            methods_used,
        )

    async def log_in_with_passkey(
        self, credential: dict[str, Any], remember_me: bool
    ) -> User | None:
        """Sign in with a passkey alone (it proves possession and the user's verification);
        as ``log_in``, None when it proves no one."""
        passkeys, origin = self.services.passkeys, self.origin()
        return await self._signing_in(
            lambda start: passkeys.sign_in(credential, origin, start), remember_me, ["passkey"]
        )

    async def _signing_in(
        self,
        use_case: Callable[[StartSession], Awaitable[User | None]],
        remember_me: bool,
        amr: list[str],
    ) -> User | None:
        started = False

        async def start(user: User) -> str:
            nonlocal started
            started = True
            return await self.start_session(user, remember_me, amr)

        try:
            user = await self.unless_abandoned(use_case(start))
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

    async def start_session(
        self, user: User, remember_me: bool, amr: list[str] | None = None
    ) -> str:
        """Bind this request's session to a user under a new token and store it now (the cookie
        goes out with the response); its store key. ``amr``: how the user proved who they are."""
        lifetime = self.services.sessions.lifetime
        ttl = lifetime.remember_me_ttl if remember_me else lifetime.ttl
        amr = amr or ["pwd"]
        session = self.session
        data = {"email": user.email, "role": user.role, "amr": amr}
        session.login(user.id, data, remember_me, ttl)
        session.ip = self.request.remote_ip or ""
        session.user_agent = self.request.headers.get("User-Agent", "")
        self.current_user = SessionUser(user.id, user.email, user.role, tuple(amr))
        change = await self.services.sessions.commit(session)
        if change is not None:
            self._set_session_cookie(change)
        assert session.key is not None
        return session.key

    def second_factor_used(self, method: str) -> None:
        """Note in this session that its user just proved a second factor (an enrolment)."""
        user = self.current_user
        if user is None or method in user.amr:
            return
        amr = [*user.amr, method]
        self.session["amr"] = amr
        self.current_user = SessionUser(user.id, user.email, user.role, tuple(amr))

    async def sign_out(self) -> None:
        user = self.current_user
        if user is not None:
            await self.services.accounts.signed_out(user.id, user.email, self.origin())
        self.session.destroy()
        self.current_user = None

    # -- the pending cookie of a two-step sign-in ------------------------------------------------

    @property
    def _pending_cookie(self) -> str:
        return ("__Host-" if self.settings["secure_cookies"] else "") + PENDING_COOKIE

    def _set_pending_cookie(self, token: str) -> None:
        self.set_signed_cookie(
            self._pending_cookie,
            token,
            expires_days=None,
            max_age=int(self.services.settings["security.mfa_pending_ttl"]),
            path="/",
            httponly=True,
            secure=self.settings["secure_cookies"],
            samesite="Lax",
        )

    def clear_pending_sign_in(self) -> None:
        self.clear_cookie(
            self._pending_cookie,
            path="/",
            httponly=True,
            secure=self.settings["secure_cookies"],
            samesite="Lax",
        )

    def pending_token(self) -> str | None:
        value = self.get_signed_cookie(self._pending_cookie, max_age_days=1)
        return value.decode() if value else None

    async def pending_sign_in(self) -> PendingSignIn | None:
        """The sign-in this browser started and whose second step is due, if still live."""
        token = self.pending_token()
        pending = await self.services.mfa.pending(token) if token else None
        if pending is None and token:
            self.clear_pending_sign_in()
        return pending
