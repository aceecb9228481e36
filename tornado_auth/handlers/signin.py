"""Signing in, registering and signing out from a request: the account use cases, bound to this
request's session, cookie and client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..accounts import AccountDisabled, Origin, StartSession
from ..throttle import Throttled
from ..users import User
from .session_cookie import RequestSession, SessionUser
from .validation import ApiError, try_again

ACCOUNT_DISABLED = "Account disabled, ask an admin to enable it"


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
        saying so when they are right for a disabled account."""
        accounts, origin = self.services.accounts, self.origin()
        return await self._signing_in(
            lambda start: accounts.sign_in(email, password, origin, start), remember_me
        )

    async def log_in_with_passkey(
        self, credential: dict[str, Any], remember_me: bool
    ) -> User | None:
        """Sign in with a passkey alone; as ``log_in``, None when it proves no one."""
        passkeys, origin = self.services.passkeys, self.origin()
        return await self._signing_in(
            lambda start: passkeys.sign_in(credential, origin, start), remember_me
        )

    async def _signing_in(
        self, sign_in: Callable[[StartSession], Awaitable[User | None]], remember_me: bool
    ) -> User | None:
        started = False

        async def start(user: User) -> str:
            nonlocal started
            started = True
            return await self.start_session(user, remember_me)

        try:
            user = await self.unless_abandoned(sign_in(start))
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
