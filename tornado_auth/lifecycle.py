"""The account lifecycle by email, used by the API, the pages and the command line alike:
password reset, email verification, email change and its undo, re-authentication, new-device
alerts and "this wasn't me", session names.

Requests that must not tell whether an address has an account (forgot password, resend a
verification link, quiet registration) answer once the per-IP throttle has counted them; the
lookup, the token and the mail happen afterwards, in the background, so the answer and its time
are the same either way. Every emailed link is built from ``server.public_url``; its token is
never logged or audited.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from .accounts import PASSWORD_CHECK, Accounts, Origin
from .audit import AuditEvent
from .devices import device_name
from .errors import StoreUnavailable
from .hooks import Hook
from .mail import Mailer
from .sessions import Counters, EndReason, SessionRecord, public_id
from .settings import Settings
from .tasks import runs_to_the_end, to_the_end
from .throttle import Throttled
from .tokens import TokenRecord, TokenStore, new_token, token_key
from .users import EmailTaken, User, normalize_email
from .users.passwords import hash_password

log = logging.getLogger("tornado_auth.lifecycle")

RESET = "reset"
VERIFY = "verify"
EMAIL_CHANGE = "email_change"
EMAIL_UNDO = "email_undo"
UNDO_PENDING = "undo_pending"  # while an undo link is live, the address cannot change again
NOT_ME = "not_me"
DEVICE = "device"
SESSION_NAME = "session_name"
REAUTH_KEY = "reauth_at"  # in the session: when its user last proved the password
MAX_SESSION_NAME = 64
# Links that act on the account: a reset, an undo, "this wasn't me" or a new password void them.
ACCOUNT_LINKS = (RESET, EMAIL_CHANGE)
SESSION_RENAMES = 30  # per user and throttle.mail_window: each rename is an audit entry
UNVERIFIED = "Email address not verified: follow the link we sent, or ask for a new one"
CHECK_EMAIL = "Check your email to finish creating your account"


def duration(seconds: float) -> str:
    """``1 hour``, ``24 hours``, ``7 days``, ``10 minutes``: how long a link works, in words."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if (seconds >= size and seconds % size == 0) or unit == "minute":
            count = max(1, math.ceil(seconds / size))
            return f"{count} {unit}{'s' if count != 1 else ''}"
    raise AssertionError("unreachable")


def wait_words(seconds: float) -> str:
    """How long until something, rounded up: ``3 days``, ``5 hours``, ``12 minutes``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds > 2 * size or unit == "minute":
            count = max(1, math.ceil(seconds / size))
            return f"{count} {unit}{'s' if count != 1 else ''}"
    raise AssertionError("unreachable")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class ChangePending(Exception):
    """The address changed recently: it cannot change again while the undo link works."""

    def __init__(self, until: float) -> None:
        super().__init__(until)
        self.until = until


class Lifecycle:
    def __init__(
        self,
        settings: Settings,
        accounts: Accounts,
        tokens: TokenStore,
        mailer: Mailer,
        counters: Counters,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.accounts = accounts
        self.users = accounts.users
        self.sessions = accounts.sessions
        self.tokens = tokens
        self.mailer = mailer
        self.counters = counters
        self.clock = clock
        self.public_url = settings["server.public_url"]
        self._background: set[asyncio.Task[None]] = set()
        accounts.require_verified_email = settings["users.require_verified_email"]
        # After the answer: a sign-in or registration never waits for device records or mail.
        accounts.hooks.add(Hook.REGISTERED, lambda *args: self.later(self._registered(*args)))
        accounts.hooks.add(Hook.SIGNED_IN, lambda *args: self.later(self._signed_in(*args)))
        accounts.password_changed.append(self.void_links)

    @property
    def quiet_registration(self) -> bool:
        """Registration tells no one whether an address has an account."""
        return bool(self.settings["users.require_verified_email"])

    def _send(self, to: str, template: str, **values: Any) -> None:
        self.mailer.send(to, template, public_url=self.public_url, **values)

    def link(self, path: str, token: str) -> str:
        return f"{self.public_url}{path}?{urllib.parse.urlencode({'token': token})}"

    # -- background work and throttles -----------------------------------------------------------

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the answer; a failure is logged, never lost."""

        async def run() -> None:
            try:
                await work
            except StoreUnavailable as error:
                log.warning("account mail not prepared: %s", error)
            except Exception:
                log.exception("account mail not prepared")

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for the background work and the mail it queued."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.mailer.drain()

    async def close(self, grace: float = 5.0) -> None:
        """Give the background work ``grace`` seconds to queue its mail (then the mailer's own
        grace applies)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=grace)

    async def count_ip(self, ip: str) -> None:
        """Count a mail request from ``ip``; Throttled past ``throttle.mail_per_ip``."""
        if not ip:
            return
        now, window = self.clock(), self.settings["throttle.mail_window"]
        count, ends = await self.counters.hit(f"mail:ip:{_digest(ip)[:32]}", window, now)
        if count > self.settings["throttle.mail_per_ip"]:
            raise Throttled(max(1, math.ceil(ends - now)), first=False)

    async def _address_allowed(self, email: str, origin: Origin) -> bool:
        """Count a mail to ``email``; False past ``throttle.mail_per_address`` (audited once)."""
        now, window = self.clock(), self.settings["throttle.mail_window"]
        name = f"mail:address:{_digest(normalize_email(email))[:32]}"
        count, _ = await self.counters.hit(name, window, now)
        limit = self.settings["throttle.mail_per_address"]
        if count == limit + 1:
            await self.accounts.record(AuditEvent.MAIL_THROTTLED, origin, None, email=email[:254])
        return count <= limit

    async def _issue(
        self, user: User, purpose: str, ttl: float, data: dict[str, Any] | None = None
    ) -> str:
        """A new token for ``user``: older ones of the purpose stop working."""
        await self.tokens.drop_user(user.id, purpose)
        token, key = new_token()
        now = self.clock()
        await self.tokens.put(TokenRecord(key, purpose, user.id, now + ttl, data or {}), now)
        return token

    async def _take(self, token: object, purpose: str) -> tuple[TokenRecord, User] | None:
        """The record and live user a token names, used up; None if unknown, used or expired."""
        key = token_key(token)
        if key is None:
            return None
        record = await self.tokens.take(key, purpose, self.clock())
        if record is None:
            return None
        user = await self.users.get(record.user_id)
        if user is None or user.disabled:
            return None
        return record, user

    async def void_links(self, user_id: str) -> None:
        """End the user's outstanding reset and email change links (after the password or the
        address changed, or the owner said "this wasn't me")."""
        for purpose in ACCOUNT_LINKS:
            await self.tokens.drop_user(user_id, purpose)

    # -- password reset --------------------------------------------------------------------------

    async def forgot(self, email: str, origin: Origin) -> None:
        """Send a reset link if the address has an account; the same for any address."""
        await self.count_ip(origin.ip)
        self.later(self._forgot(email, origin))

    async def _forgot(self, email: str, origin: Origin) -> None:
        if not await self._address_allowed(email, origin):
            return
        user = await self.users.by_email(normalize_email(email))
        if user is not None and not user.disabled:
            await self.send_reset(user, origin)

    async def send_reset(self, user: User, origin: Origin) -> None:
        ttl = self.settings["security.reset_ttl"]
        token = await self._issue(user, RESET, ttl)
        self._send(
            user.email,
            "reset",
            link=self.link("/reset", token),
            email=user.email,
            valid_for=duration(ttl),
        )
        await self.accounts.record(AuditEvent.PASSWORD_RESET_SENT, origin, user)

    async def reset_valid(self, token: object) -> bool:
        """Whether a reset token would work now (for the page; it is not used up)."""
        key = token_key(token)
        return key is not None and await self.tokens.get(key, RESET, self.clock()) is not None

    async def reset(self, token: object, new_password: str, origin: Origin) -> User | None:
        """Set the password a reset link is for; every session of the user ends and a notice is
        sent. None if the token is unknown, used or expired (then nothing changes)."""
        taken = await self._take(token, RESET)
        if taken is None:
            return None
        _, user = taken
        password_hash = await hash_password(new_password, self.accounts.rounds)
        # once stored, every session ends even if the client goes away meanwhile
        return await to_the_end(self._store_reset(user, password_hash, origin))

    async def _store_reset(self, user: User, password_hash: str, origin: Origin) -> User | None:
        fields: dict[str, Any] = {"password_hash": password_hash}
        if user.email_verified_at is None:  # the link reached this address: it is the user's
            fields["email_verified_at"] = self.clock()
        changed = await self.users.set(user.id, new_generation=True, **fields)
        if changed is None:
            return None
        await self.void_links(user.id)
        revoked = await self.sessions.revoke_user(user.id, reason=EndReason.PASSWORD)
        await self.accounts.record(AuditEvent.PASSWORD_RESET, origin, changed, revoked=revoked)
        self._send(
            changed.email,
            "password_changed",
            link=f"{self.public_url}/forgot",
            email=changed.email,
        )
        return changed

    # -- email verification ----------------------------------------------------------------------

    async def send_verification(self, user: User, origin: Origin) -> None:
        ttl = self.settings["security.verify_ttl"]
        token = await self._issue(user, VERIFY, ttl, {"email": user.email})
        self._send(
            user.email,
            "verify",
            link=self.link("/verify", token),
            name=user.name,
            email=user.email,
            valid_for=duration(ttl),
        )
        await self.accounts.record(AuditEvent.VERIFICATION_SENT, origin, user)

    async def resend_verification(self, email: str, origin: Origin) -> None:
        """Send a new verification link if the address has an unverified account; the same
        answer for any address."""
        await self.count_ip(origin.ip)
        self.later(self._resend(email, origin))

    async def _resend(self, email: str, origin: Origin) -> None:
        if not await self._address_allowed(email, origin):
            return
        user = await self.users.by_email(normalize_email(email))
        if user is not None and not user.disabled and user.email_verified_at is None:
            await self.send_verification(user, origin)

    async def verify(self, token: object, origin: Origin) -> User | None:
        """Mark the address a verification link was sent to as verified; None if the token is
        unknown, used or expired, or the user's address changed since."""
        taken = await self._take(token, VERIFY)
        if taken is None:
            return None
        record, user = taken
        if record.data.get("email") != user.email:
            return None
        if user.email_verified_at is not None:
            return user
        verified = await self.users.set(user.id, email_verified_at=self.clock())
        if verified is not None:
            await self.accounts.record(AuditEvent.EMAIL_VERIFIED, origin, verified)
        return verified

    async def _registered(self, user: User, origin: Origin) -> None:
        if not origin.ip or origin.by is not None:
            return  # made by an operator or the app's own code: they send a link if they want
        if origin.user_agent:  # made through a browser or client: its first device
            await self.remember_device(user, origin.user_agent)
        await self.send_verification(user, origin)

    async def register_quietly(self, email: str, name: str, password: str, origin: Origin) -> None:
        """Registration that answers alike for a new or a taken address: the account is made
        (and a verification link sent) or the owner told, after the answer."""
        if origin.ip:
            await self.accounts.throttle.register(origin.ip)
        self.later(self._register_quietly(email, name, password, origin))

    async def _register_quietly(self, email: str, name: str, password: str, origin: Origin) -> None:
        try:
            quiet = Origin(origin.ip, origin.user_agent)  # counted by register_quietly
            await self.accounts.register(email, name, password, quiet, counted=True)
        except EmailTaken:
            owner = await self.users.by_email(normalize_email(email))
            if owner is None or owner.disabled or not await self._address_allowed(email, origin):
                return
            ttl = self.settings["security.reset_ttl"]
            token = await self._issue(owner, RESET, ttl)
            self._send(
                owner.email,
                "register_taken",
                link=self.link("/reset", token),
                email=owner.email,
            )
            await self.accounts.record(AuditEvent.REGISTRATION_TAKEN, origin, owner)

    # -- re-authentication -----------------------------------------------------------------------

    def fresh(self, reauth_at: object) -> bool:
        """Whether a password check at ``reauth_at`` is within ``security.reauth_ttl``."""
        if not isinstance(reauth_at, int | float):
            return False
        return self.clock() - reauth_at <= self.settings["security.reauth_ttl"]

    async def reauthenticate(self, user: User, password: str, origin: Origin) -> bool:
        """Check the signed-in user's password again (throttled and audited like any check)."""
        if not await self.accounts.check_password(
            user, user.email, password, origin, PASSWORD_CHECK
        ):
            return False
        await self.accounts.record(AuditEvent.REAUTHENTICATED, origin, user)
        return True

    # -- email change ----------------------------------------------------------------------------

    async def request_email_change(self, user: User, new_email: str, origin: Origin) -> None:
        """Send a confirmation link to ``new_email`` (the address changes when it is followed)
        and a notice with a "this wasn't me" link to the current one. The answer is the same
        whether the new address has an account or not: the work happens after it.

        Throttled past ``throttle.mail_per_ip``; ChangePending while the undo link of the last
        change still works (the owner of the previous address must be able to use it)."""
        pending = await self.tokens.get(_digest(UNDO_PENDING, user.id), UNDO_PENDING, self.clock())
        if pending is not None:
            raise ChangePending(pending.expires_at)
        await self.count_ip(origin.ip)
        self.later(self._request_email_change(user, normalize_email(new_email), origin))

    async def _request_email_change(self, user: User, new_email: str, origin: Origin) -> None:
        if not await self._address_allowed(new_email, origin):
            return
        await self.accounts.record(AuditEvent.EMAIL_CHANGE_REQUESTED, origin, user)
        if await self.users.by_email(new_email) is not None:
            return
        ttl = self.settings["security.email_change_ttl"]
        token = await self._issue(user, EMAIL_CHANGE, ttl, {"email": new_email, "old": user.email})
        self._send(
            new_email,
            "email_change_confirm",
            link=self.link("/confirm-email", token),
            email=new_email,
            valid_for=duration(ttl),
        )
        self._send(
            user.email,
            "email_change_requested",
            link=self.link("/not-me", await self._not_me_token(user)),
            email=user.email,
            new_email=new_email,
            valid_for=duration(ttl),
        )

    @runs_to_the_end  # the token taken, the change and its ends happen whole
    async def confirm_email_change(self, token: object, origin: Origin) -> User | None:
        """Change the address (if still unique: else EmailTaken) and end every session; the old
        address gets a notice with an undo link. None for a bad token."""
        taken = await self._take(token, EMAIL_CHANGE)
        if taken is None:
            return None
        record, user = taken
        old, new = record.data.get("old"), record.data.get("email")
        if old != user.email or not isinstance(new, str):
            return None
        changed = await self.users.set(
            user.id,
            expect_generation=user.generation,
            new_generation=True,
            email=new,
            email_verified_at=self.clock(),
        )  # EmailTaken if someone took it meanwhile
        if changed is None:
            return None
        await self.void_links(user.id)  # reset links went to the old address
        await self.sessions.revoke_user(user.id, reason=EndReason.REVOKED)
        ttl, now = self.settings["security.undo_ttl"], self.clock()
        undo = await self._issue(changed, EMAIL_UNDO, ttl, {"email": old, "new": new})
        marker = TokenRecord(_digest(UNDO_PENDING, user.id), UNDO_PENDING, user.id, now + ttl)
        await self.tokens.put(marker, now)
        self._send(
            old,
            "email_change_notice",
            link=self.link("/undo-email", undo),
            email=old,
            new_email=new,
            valid_for=duration(ttl),
        )
        await self.accounts.record(AuditEvent.EMAIL_CHANGED, origin, changed, previous=old)
        return changed

    @runs_to_the_end
    async def undo_email_change(self, token: object, origin: Origin) -> User | None:
        """Put the old address back, end every session and send a reset link to it. None for
        a bad token or an address changed again since; EmailTaken if the old one was taken."""
        taken = await self._take(token, EMAIL_UNDO)
        if taken is None:
            return None
        record, user = taken
        old = record.data.get("email")
        if record.data.get("new") != user.email or not isinstance(old, str):
            return None
        restored = await self.users.set(user.id, new_generation=True, email=old)
        if restored is None:
            return None
        await self.tokens.take(_digest(UNDO_PENDING, user.id), UNDO_PENDING, self.clock())
        await self.void_links(user.id)
        await self.sessions.revoke_user(user.id, reason=EndReason.REVOKED)
        await self.accounts.record(AuditEvent.EMAIL_CHANGE_UNDONE, origin, restored)
        await self.send_reset(restored, origin)
        return restored

    # -- devices ---------------------------------------------------------------------------------

    async def remember_device(self, user: User, user_agent: str) -> bool:
        """Note that ``user`` used this device now; whether it was new to them (not used within
        ``security.device_memory``, and not their very first device)."""
        now, memory = self.clock(), self.settings["security.device_memory"]
        device = device_name(user_agent)
        key, seen = _digest(DEVICE, user.id, device), _digest(DEVICE, user.id)
        known = await self.tokens.get(key, DEVICE, now)
        first = await self.tokens.get(seen, DEVICE, now) is None
        for record_key in (key, seen):
            await self.tokens.put(TokenRecord(record_key, DEVICE, user.id, now + memory), now)
        return known is None and not first

    async def _signed_in(self, user: User, origin: Origin) -> None:
        if not await self.remember_device(user, origin.user_agent):
            return
        token = await self._not_me_token(user)
        now = self.clock()
        device = device_name(origin.user_agent)
        when = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M UTC")
        self._send(
            user.email,
            "new_device",
            link=self.link("/not-me", token),
            email=user.email,
            device=device,
            when=when,
            ip=origin.ip or "unknown",
        )
        await self.accounts.record(AuditEvent.NEW_DEVICE, origin, user, device=device)

    async def _not_me_token(self, user: User) -> str:
        """A "this wasn't me" token: one per mail, so an earlier mail's link keeps working."""
        ttl = self.settings["security.undo_ttl"]
        token, key = new_token()
        now = self.clock()
        await self.tokens.put(TokenRecord(key, NOT_ME, user.id, now + ttl), now)
        return token

    @runs_to_the_end
    async def not_me(self, token: object, origin: Origin) -> User | None:
        """ "This wasn't me": end every session of the user (and sign-ins in flight) and send a
        reset link. None for a bad token."""
        taken = await self._take(token, NOT_ME)
        if taken is None:
            return None
        _, user = taken
        changed = await self.users.set(user.id, new_generation=True) or user
        await self.void_links(user.id)
        revoked = await self.sessions.revoke_user(user.id, reason=EndReason.REVOKED)
        await self.accounts.record(AuditEvent.NOT_ME, origin, changed, revoked=revoked)
        await self.send_reset(changed, origin)
        return changed

    # -- session names ---------------------------------------------------------------------------

    async def name_session(
        self, user_id: str, record: SessionRecord, name: str, origin: Origin
    ) -> None:
        """Give one of the user's sessions a name ("" removes it); Throttled past
        SESSION_RENAMES a ``throttle.mail_window`` (each rename is an audit entry)."""
        now, window = self.clock(), self.settings["throttle.mail_window"]
        count, ends = await self.counters.hit(f"rename:{_digest(user_id)[:32]}", window, now)
        if count > SESSION_RENAMES:
            raise Throttled(max(1, math.ceil(ends - now)), first=False)
        key = _digest(SESSION_NAME, record.key)
        if name:
            expires = record.absolute_expires_at
            data = {"name": name}
            await self.tokens.put(
                TokenRecord(key, SESSION_NAME, user_id, expires, data), self.clock()
            )
        else:
            await self.tokens.take(key, SESSION_NAME, self.clock())
        session_id = public_id(record.key)
        await self.accounts.record(
            AuditEvent.SESSION_RENAMED, origin, None, user_id=user_id, session_id=session_id
        )

    async def session_names(self, records: list[SessionRecord]) -> dict[str, str]:
        """The names of these sessions, by store key."""
        names = {}
        now = self.clock()
        for record in records:
            found = await self.tokens.get(_digest(SESSION_NAME, record.key), SESSION_NAME, now)
            if found is not None:
                names[record.key] = str(found.data.get("name", ""))
        return names
