"""The account use cases, shared by the JSON API, the pages and the command line: sign in,
register, change a password, a role or the disabled flag, end sessions. Every password check goes
through one throttled, audited path; every change is audited here."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .audit import Audit, AuditEntry, AuditEvent
from .hooks import Hook, Hooks
from .live import LiveHub
from .sessions import EndReason, SessionManager
from .tasks import runs_to_the_end, to_the_end
from .throttle import LoginThrottle, Throttled
from .users import ROLES, EmailTaken, User, UserStore, new_user_id, normalize_email
from .users.base import extra_problem
from .users.passwords import DummyHash, cost, hash_password, needs_rehash, verify_password

__all__ = [
    "AccountChanged",
    "AccountDisabled",
    "Accounts",
    "EmailNotVerified",
    "EmailTaken",
    "LastAdmin",
    "Origin",
    "SecondFactorRequired",
    "StartSession",
    "Throttled",
]

# Binds the caller's session to a signed-in user and stores it now; the new session's store key.
StartSession = Callable[[User], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Origin:
    """Who acts, and from where: for the throttles and the audit trail."""

    ip: str = ""  # no address (the command line): not throttled
    user_agent: str = ""
    session_key: str | None = None  # the acting session's store key, audited only as a hash
    by: str | None = None  # the acting admin's id, or "cli"


CLI = Origin(user_agent="tornado-auth cli", by="cli")


class AccountChanged(Exception):
    """A change raced another change of the same account that ends sessions; it was not made."""


class AccountDisabled(Exception):
    """The password is right, but the account is disabled: said only after a correct password,
    so that it tells nobody without the password whether an account exists or is disabled."""


class EmailNotVerified(Exception):
    """The password is right, but users.require_verified_email is on and the address is not
    verified yet: no session is started."""


class SecondFactorRequired(Exception):
    """The password is right and the user has a second factor: no session is started until
    ``finish_sign_in`` after the second step."""

    def __init__(self, user: User, methods: list[str]) -> None:
        super().__init__("a second factor is required")
        self.user = user
        self.methods = methods


class LastAdmin(Exception):
    """The change would leave no enabled admin."""


@dataclass(frozen=True, slots=True)
class _CheckEvents:
    failed: AuditEvent
    throttled: AuditEvent


SIGN_IN = _CheckEvents(AuditEvent.SIGNIN_FAILED, AuditEvent.SIGNIN_THROTTLED)
PASSWORD_CHECK = _CheckEvents(AuditEvent.PASSWORD_CHECK_FAILED, AuditEvent.PASSWORD_CHECK_THROTTLED)


class Accounts:
    def __init__(
        self,
        users: UserStore,
        sessions: SessionManager,
        throttle: LoginThrottle,
        audit: Audit,
        live: LiveHub,
        bcrypt_rounds: int,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.throttle = throttle
        self.audit = audit
        self.live = live
        self.rounds = bcrypt_rounds
        self.hooks = Hooks()
        self.require_verified_email = False  # users.require_verified_email
        # Called with the user's id after a password change (the lifecycle voids its links).
        self.password_changed: list[Callable[[str], Awaitable[None]]] = []
        # The second steps a user's sign-in needs (set by the second-factor service).
        self.second_factors: Callable[[User], Awaitable[list[str]]] | None = None
        # Called with each sign-in's outcome: "ok", "failed" or "throttled" (metrics).
        self.sign_in_outcomes: list[Callable[[str], None]] = []
        self._dummy = DummyHash()
        sessions.on_end(self._sessions_ended)

    def _sessions_ended(self, keys: list[str], user_id: str | None, reason: str) -> None:
        for _ in keys:
            self.hooks.spawn(Hook.SESSION_ENDED, user_id, reason)

    async def start(self) -> None:
        """Make the dummy hash now, so that no sign-in pays for it and stands out by its time."""
        await self._dummy.get(self.rounds)

    # -- the one way a password is checked -------------------------------------------------------

    async def check_password(
        self, user: User | None, email: str, password: str, origin: Origin, events: _CheckEvents
    ) -> bool:
        """Whether ``password`` is ``user``'s: throttled before any bcrypt work, failures audited.

        An unknown user (None) costs one check at the configured cost, and so does a stored hash
        of a lower cost, so the time taken tells no account apart. Throttled past the limits;
        AccountDisabled for the right password of a disabled account (still a failed check).
        """
        await self.reserve(email, origin, events, user, email)
        dummy = await self._dummy.get(self.rounds)
        matches = await verify_password(password, user.password_hash if user else dummy)
        if user is not None and (cost(user.password_hash) or 0) < self.rounds:
            await verify_password(password, dummy)
        return await self.checked(matches, user, email, origin, events, email)

    async def reserve(
        self,
        account: str,
        origin: Origin,
        events: _CheckEvents,
        user: User | None = None,
        email: str | None = None,
    ) -> None:
        """Count a credential check for ``account`` (an email, or what stands for one) from the
        origin's address as failed before it runs; Throttled past the limits (the first refusal
        of a window audited)."""
        if not origin.ip:
            return
        try:
            await self.throttle.reserve(account, origin.ip)
        except Throttled as throttled:
            if throttled.first:  # a flood of refusals is one entry per window
                await self._record(events.throttled, origin, user, email)
            raise

    async def checked(
        self,
        proven: bool,
        user: User | None,
        account: str,
        origin: Origin,
        events: _CheckEvents,
        email: str | None = None,
        **detail: Any,
    ) -> bool:
        """Settle a reserved check: True if ``proven`` for an enabled ``user`` (the account's
        failures from this address forgiven); else audited as failed, and AccountDisabled when
        proven for a disabled one."""
        if proven and user is not None and not user.disabled:
            if origin.ip:
                await self.throttle.succeeded(account, origin.ip)
            return True
        await self.live.sign_in_failed()
        if proven and user is not None:  # disabled
            await self._record(events.failed, origin, user, email, reason="disabled", **detail)
            raise AccountDisabled(user.email)
        await self._record(events.failed, origin, user, email, **detail)
        return False

    # -- signing in and registering --------------------------------------------------------------

    async def sign_in(
        self, email: str, password: str, origin: Origin, start_session: StartSession
    ) -> User | None:
        """The user these credentials prove, signed in through ``start_session``; None if wrong,
        AccountDisabled if right for a disabled account, SecondFactorRequired (and no session)
        if the user has a second factor: ``finish_sign_in`` follows its second step.

        Its outcome is told to ``sign_in_outcomes``: "failed" or "throttled" here, "ok" when
        ``finish_sign_in`` makes the session (after this or a second step).
        """
        try:
            user = await self._password_step(email, password, origin, start_session)
        except Throttled:
            self._sign_in_outcome("throttled")
            raise
        except (AccountDisabled, EmailNotVerified):
            self._sign_in_outcome("failed")
            raise
        if user is None:
            self._sign_in_outcome("failed")
        return user

    def _sign_in_outcome(self, outcome: str) -> None:
        for callback in self.sign_in_outcomes:
            callback(outcome)

    async def _password_step(
        self, email: str, password: str, origin: Origin, start_session: StartSession
    ) -> User | None:
        user = await self.users.by_email(normalize_email(email))
        if not await self.check_password(user, email, password, origin, SIGN_IN):
            return None
        assert user is not None

        async def rehash() -> dict[str, Any]:
            if needs_rehash(user.password_hash, self.rounds):
                return {"password_hash": await hash_password(password, self.rounds)}
            return {}

        return await self.enter(user, origin, start_session, email, rehash)

    async def enter(
        self,
        user: User,
        origin: Origin,
        start_session: StartSession,
        email: str | None = None,
        more_fields: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        methods: list[str] | None = None,
        **detail: Any,
    ) -> User | None:
        """Sign in a user whose credentials were just proven (a password, a passkey): the
        session is started through ``start_session``, checked once more after it exists, and
        the sign-in audited, announced and passed to the hooks. None if the account changed
        meanwhile; EmailNotVerified under users.require_verified_email.

        ``more_fields`` (e.g. a rehashed password) are written with the sign-in time, only while
        nothing revoking happened: a rehash must never undo a password change. ``methods``: how
        the credentials were proven (a password by default: then a user with a second factor
        gets SecondFactorRequired instead of a session).
        """
        if self.require_verified_email and user.email_verified_at is None:
            await self._record(AuditEvent.SIGNIN_UNVERIFIED, origin, user, **detail)
            raise EmailNotVerified(user.email)
        fields: dict[str, Any] = {"last_login_at": time.time()}
        if more_fields is not None:
            fields.update(await more_fields())
        signed = await self.users.set(user.id, expect_generation=user.generation, **fields)
        if signed is None:
            await self._record(
                AuditEvent.SIGNIN_FAILED, origin, None, email or user.email, reason="changed"
            )
            return None
        methods = methods or ["pwd"]
        if methods == ["pwd"] and self.second_factors is not None:
            factors = await self.second_factors(signed)
            if factors:
                raise SecondFactorRequired(signed, factors)
        return await self.finish_sign_in(signed, origin, start_session, methods, email, **detail)

    async def finish_sign_in(
        self,
        user: User,
        origin: Origin,
        start_session: StartSession,
        methods: list[str],
        email: str | None = None,
        **detail: Any,
    ) -> User | None:
        """Sign in a user already proven by ``methods`` (e.g. ``["pwd", "otp"]``, ``["passkey"]``):
        the session is started, then checked once more: a disable, password, or role change that
        landed meanwhile ends it before it is used (None). Audited, announced, hooks run."""
        key = await start_session(user)
        current = await self.users.get(user.id)
        if current is None or current.generation != user.generation or current.disabled:
            await self.sessions.revoke(key, reason=EndReason.REVOKED)
            await self._record(
                AuditEvent.SIGNIN_FAILED, origin, user, email, reason="changed", **detail
            )
            return None
        if not detail and methods != ["pwd"]:
            detail = {"methods": methods}
        await self._record(AuditEvent.SIGNIN, _with_key(origin, key), user, **detail)
        self._sign_in_outcome("ok")
        await self.live.signed_in(user.id, origin.ip, origin.user_agent)
        await self.hooks.run(Hook.SIGNED_IN, user, origin)
        return user

    async def register(
        self,
        email: str,
        name: str,
        password: str,
        origin: Origin,
        role: str = "user",
        start_session: StartSession | None = None,
        counted: bool = False,
    ) -> User:
        """A new user, signed in through ``start_session`` if given; EmailTaken if the email is
        in use (found before any bcrypt work), Throttled past the per-address limit (unless
        ``counted``: the caller already counted this registration)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if origin.ip and not counted:
            try:
                await self.throttle.register(origin.ip)
            except Throttled as throttled:
                if throttled.first:
                    await self._record(AuditEvent.REGISTRATION_THROTTLED, origin, None, email)
                raise
        email = normalize_email(email)
        if await self.users.by_email(email) is not None:
            raise EmailTaken(email)
        user = User(
            id=new_user_id(),
            email=email,
            name=name.strip(),
            role=role,
            password_hash=await hash_password(password, self.rounds),
            created_at=time.time(),
        )
        await self.users.add(user)
        key = await start_session(user) if start_session is not None else None
        await self._record(AuditEvent.REGISTERED, _with_key(origin, key), user)
        await self.hooks.run(Hook.REGISTERED, user, origin)
        return user

    async def rename(self, user: User, name: str, origin: Origin) -> User | None:
        """Change a user's display name (checked with ``name_problem`` by the caller); the
        updated user, or None if there is none. Sessions are not ended: nothing was at risk."""
        name = name.strip()
        if name == user.name:
            return user
        updated = await self.users.set(user.id, name=name)
        if updated is not None:
            await self._record(AuditEvent.NAME_CHANGED, origin, updated)
        return updated

    async def signed_out(self, user_id: str, email: str, origin: Origin) -> None:
        """Audit a sign-out (the caller ends its own session)."""
        await self._record(AuditEvent.LOGOUT, origin, None, email, user_id=user_id)
        await self.hooks.run(Hook.SIGNED_OUT, user_id, origin)

    # -- changes that end sessions ---------------------------------------------------------------

    async def change_password(
        self, user: User, current: str, new: str, origin: Origin
    ) -> int | None:
        """Set a new password when ``current`` is right (None if not); every other session of
        the user ends, and sign-ins still in flight with the old password fail. How many ended.

        AccountChanged if another password, role or disable change landed meanwhile: then that
        change stands, and this one is not made.
        """
        if not await self.check_password(user, user.email, current, origin, PASSWORD_CHECK):
            return None
        password_hash = await hash_password(new, self.rounds)
        # once stored, the other sessions end even if the client goes away meanwhile
        return await to_the_end(self._store_password(user, password_hash, origin))

    async def _store_password(self, user: User, password_hash: str, origin: Origin) -> int:
        changed = await self.users.set(
            user.id,
            expect_generation=user.generation,
            new_generation=True,
            password_hash=password_hash,
        )
        if changed is None:
            raise AccountChanged("the account changed while its password was being checked")
        keep = origin.session_key
        revoked = await self.sessions.revoke_user(user.id, keep=keep, reason=EndReason.PASSWORD)
        for listener in self.password_changed:
            await listener(user.id)
        await self._record(AuditEvent.PASSWORD_CHANGED, origin, user, revoked=revoked)
        return revoked

    @runs_to_the_end  # a role or a disable stored ends the sessions, whatever the request's fate
    async def change_user(
        self, user: User, role: str | None, disabled: bool | None, origin: Origin
    ) -> User:
        """Change a role or the disabled flag. A role change or a disable ends the user's
        sessions (and their sign-ins in flight); LastAdmin if no enabled admin would remain."""
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        changes: dict[str, Any] = {}
        if role is not None and role != user.role:
            changes["role"] = role
        if disabled is not None and disabled != user.disabled:
            changes["disabled"] = disabled
        if not changes:
            return user
        ends_sessions = "role" in changes or bool(changes.get("disabled"))
        updated = await self.users.set(user.id, new_generation=ends_sessions, **changes)
        if updated is None:
            return user  # removed meanwhile: nothing left to change
        # Checked after the write, so two admins demoting each other at once both fail.
        if _admin(user) and not _admin(updated) and await self.users.count_admins() == 0:
            undo = {name: getattr(user, name) for name in changes}
            await self.users.set(user.id, new_generation=True, **undo)
            raise LastAdmin("the last admin cannot be demoted or disabled")
        if ends_sessions:
            reason = EndReason.DISABLED if changes.get("disabled") else EndReason.ROLE
            await self.sessions.revoke_user(user.id, reason=reason)
        if "role" in changes:
            await self._record(AuditEvent.ROLE_CHANGED, origin, updated, role=updated.role)
        if "disabled" in changes:
            event = AuditEvent.USER_DISABLED if updated.disabled else AuditEvent.USER_ENABLED
            await self._record(event, origin, updated)
        return updated

    @runs_to_the_end
    async def end_sessions(
        self, user_id: str, email: str, origin: Origin, keep: str | None = None
    ) -> int:
        """End every session of a user except ``keep``; how many ended. An admin's action is
        always audited; a user's own only when it ended something, so repeating it floods
        nothing."""
        count = await self.sessions.revoke_user(user_id, keep=keep)
        if count or origin.by is not None:
            await self._record(
                AuditEvent.SESSIONS_REVOKED, origin, None, email, user_id=user_id, count=count
            )
        return count

    async def end_session(self, user_id: str, email: str, key: str, origin: Origin) -> bool:
        """End one session of a user by its store key; False if it had already ended."""
        ended = await self.sessions.revoke(key)
        if ended:
            origin = _with_key(origin, key)
            await self._record(AuditEvent.SESSION_REVOKED, origin, None, email, user_id=user_id)
        return ended

    async def set_extra(self, user_id: str, **values: Any) -> User | None:
        """Set the app's own fields of a user (None removes one); ValueError if they cannot be
        stored. The updated user, or None if there is none."""
        problem = extra_problem(values)
        if problem:
            raise ValueError(problem)
        return await self.users.set_extra(user_id, values)

    # -- the audit trail -------------------------------------------------------------------------

    async def _record(
        self,
        event: AuditEvent,
        origin: Origin,
        user: User | None,
        email: str | None = None,
        user_id: str | None = None,
        **detail: Any,
    ) -> None:
        if origin.by is not None:
            detail["by"] = origin.by
        entry = AuditEntry(
            event.value,
            user_id=user.id if user else user_id,
            email=(user.email if user else email or None),
            ip=origin.ip,
            user_agent=origin.user_agent[:256],
            session=self.audit.session_hash(origin.session_key),
            detail=detail,
        )
        if entry.email is not None:
            # what a client typed, kept as text any store takes (FerretDB refuses a NUL)
            entry.email = entry.email[:254].replace("\x00", "\ufffd")
        await self.audit.record(entry)
        await self.live.audited(entry.event)

    # Other use cases (lifecycle.py) audit their events here too; never a token or a link.
    record = _record


def _admin(user: User) -> bool:
    return user.is_admin and not user.disabled


def _with_key(origin: Origin, key: str | None) -> Origin:
    return Origin(origin.ip, origin.user_agent, key, origin.by) if key else origin
