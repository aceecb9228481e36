"""Second factors: an authenticator app (TOTP) and recovery codes, and the pending state
between a right password and the second step of a sign-in.

Everything lives in the token store beside the users. The TOTP secret is encrypted (``crypto``);
recovery codes and the pending sign-in's token are kept only as SHA-256 hashes. Each use is made
single by an atomic store operation: a used TOTP step is ``add``-ed (the first caller wins), a
recovery code and a pending sign-in are ``take``-n. Wrong codes count toward the sign-in
throttle, like wrong passwords.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..accounts import Accounts, Origin
from ..audit import AuditEvent
from ..mail import Mailer
from ..sessions import EndReason
from ..tasks import runs_to_the_end
from ..throttle import Throttled
from ..tokens import TokenRecord, TokenStore, new_token, token_key
from ..users import User
from . import codes, totp
from .crypto import InvalidToken, SecretBox

__all__ = ["FactorStatus", "PendingSignIn", "SecondFactors", "SecretBox"]

log = logging.getLogger("tornado_auth.mfa")

TOTP = "mfa_totp"  # the enrolled secret, one per user
TOTP_ENROL = "mfa_totp_enrol"  # a secret shown but not confirmed yet
TOTP_USED = "mfa_totp_used"  # a time step whose code was used
RECOVERY = "mfa_recovery"  # one per unused recovery code
PENDING = "mfa_pending"  # a sign-in waiting for its second step
FOREVER = 253402300799.0  # 9999-12-31: enrolled factors do not expire
ENROL_TTL = 900.0  # a secret shown for enrolment must be confirmed within 15 minutes


class Passkeys(Protocol):
    """What second factors need of the passkeys service (``services.passkeys``)."""

    async def count(self, user_id: str) -> int: ...

    async def remove_all(self, user_id: str) -> int: ...


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FactorStatus:
    totp: bool
    recovery_codes: int  # left unused
    passkeys: int

    @property
    def methods(self) -> list[str]:
        """The second steps a sign-in offers: ``totp``, ``passkey``, ``recovery``. Two-step
        sign-in is on with an authenticator app (which brings the recovery codes); a user's
        passkeys are then a second step too. Passkeys alone sign in without a password but do
        not make a password sign-in ask for a second step: losing the device must not lock the
        user out of their password."""
        if not self.totp:
            return []
        found = ["totp"] + (["passkey"] if self.passkeys else [])
        return found + (["recovery"] if self.recovery_codes else [])

    @property
    def enrolled(self) -> bool:
        return self.totp

    @property
    def few_recovery_codes(self) -> bool:
        """Whether the pages should warn: a second factor on, and few recovery codes left."""
        return self.enrolled and self.recovery_codes <= codes.FEW

    def public(self) -> dict[str, Any]:
        return {
            "enabled": self.enrolled,
            "totp": self.totp,
            "recoveryCodesLeft": self.recovery_codes,
            "passkeys": self.passkeys,
            "methods": self.methods,
        }


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    user: User
    remember_me: bool
    methods: list[str]


class SecondFactors:
    def __init__(
        self,
        accounts: Accounts,
        tokens: TokenStore,
        box: SecretBox,
        mailer: Mailer,
        public_url: str,
        issuer: str,
        pending_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        self.tokens = tokens
        self.box = box
        self.mailer = mailer
        self.public_url = public_url
        self.issuer = issuer
        self.pending_ttl = pending_ttl
        self.clock = clock
        self.passkeys: Passkeys | None = None  # set when the app runs the passkeys service
        accounts.second_factors = self._methods

    # -- what a user has -------------------------------------------------------------------------

    async def status(self, user_id: str) -> FactorStatus:
        return await self._status(user_id, await self._enrolled(user_id))

    async def _enrolled(self, user_id: str) -> bool:
        return await self.tokens.get(_digest(TOTP, user_id), TOTP, self.clock()) is not None

    async def _status(self, user_id: str, enrolled: bool) -> FactorStatus:
        now = self.clock()
        left = await self.tokens.count_user(user_id, RECOVERY, now)
        passkeys = await self.passkeys.count(user_id) if self.passkeys is not None else 0
        return FactorStatus(enrolled, left, passkeys)

    async def _methods(self, user: User) -> list[str]:
        """The second steps a sign-in of ``user`` needs: one read for the many without an app."""
        if not await self._enrolled(user.id):
            return []  # two-step sign-in is off (see FactorStatus.methods)
        return (await self._status(user.id, True)).methods

    # -- TOTP enrolment --------------------------------------------------------------------------

    async def begin_totp(self, user: User) -> str:
        """A new secret to show; it takes effect only once a code of it is confirmed."""
        secret = totp.new_secret()
        now = self.clock()
        data = {"secret": self.box.seal(secret)}
        key = _digest(TOTP_ENROL, user.id)
        await self.tokens.put(TokenRecord(key, TOTP_ENROL, user.id, now + ENROL_TTL, data), now)
        return secret

    async def enrolment_secret(self, user_id: str) -> str | None:
        """The secret being enrolled (for its QR code), or None."""
        record = await self.tokens.get(_digest(TOTP_ENROL, user_id), TOTP_ENROL, self.clock())
        return self._open(record)

    def uri(self, user: User, secret: str) -> str:
        return totp.uri(secret, user.email, self.issuer)

    async def confirm_totp(self, user: User, code: str, origin: Origin) -> list[str] | None:
        """Turn the secret being enrolled on if ``code`` is one of its codes; new recovery codes
        when the user had no second factor yet (else []). None for a wrong code or no enrolment."""
        now = self.clock()
        key = _digest(TOTP_ENROL, user.id)
        secret = self._open(await self.tokens.get(key, TOTP_ENROL, now))
        step = totp.matching_step(secret, code, now) if secret else None
        if secret is None or step is None:
            return None
        if await self.tokens.take(key, TOTP_ENROL, now) is None:
            return None  # a concurrent confirmation won
        had = await self.status(user.id)
        since = str(now)
        data = {"secret": self.box.seal(secret), "since": since}
        enrolled = TokenRecord(_digest(TOTP, user.id), TOTP, user.id, FOREVER, data)
        await self.tokens.put(enrolled, now)
        await self._claim_step(user.id, since, step)  # the code that confirmed it is used
        await self.accounts.record(AuditEvent.MFA_ENABLED, origin, user, method="totp")
        if had.recovery_codes:
            return []
        return await self._new_recovery_codes(user)

    @runs_to_the_end  # a factor removed ends the other sessions, whatever the request's fate
    async def remove_totp(self, user: User, origin: Origin) -> bool:
        """Turn the authenticator app off (and the recovery codes with the last factor); the
        user's other sessions end and a notice is mailed. False if it was not on."""
        removed = await self.tokens.take(_digest(TOTP, user.id), TOTP, self.clock())
        if removed is None:
            return False
        if not (await self.status(user.id)).enrolled:
            await self.tokens.drop_user(user.id, RECOVERY)
        revoked = await self.accounts.sessions.revoke_user(
            user.id, keep=origin.session_key, reason=EndReason.REVOKED
        )
        await self.accounts.record(
            AuditEvent.MFA_REMOVED, origin, user, method="totp", revoked=revoked
        )
        self._notify(user, by_admin=False)
        return True

    # -- recovery codes --------------------------------------------------------------------------

    async def regenerate_recovery_codes(self, user: User, origin: Origin) -> list[str] | None:
        """Ten new codes; the old ones stop working. None if the user has no second factor."""
        if not (await self.status(user.id)).enrolled:
            return None
        fresh = await self._new_recovery_codes(user)
        await self.accounts.record(AuditEvent.RECOVERY_CODES_REGENERATED, origin, user)
        return fresh

    async def _new_recovery_codes(self, user: User) -> list[str]:
        await self.tokens.drop_user(user.id, RECOVERY)
        fresh, now = codes.new_codes(), self.clock()
        for code in fresh:
            key = _digest(RECOVERY, user.id, str(codes.normalize(code)))
            await self.tokens.put(TokenRecord(key, RECOVERY, user.id, FOREVER), now)
        return fresh

    # -- an admin's reset ------------------------------------------------------------------------

    @runs_to_the_end
    async def reset(self, user: User, origin: Origin) -> bool:
        """Remove the user's authenticator app, recovery codes and passkeys; every session of
        the user ends and a notice is mailed. False if there was nothing to remove."""
        now = self.clock()
        had = await self.tokens.take(_digest(TOTP, user.id), TOTP, now) is not None
        had = await self.tokens.drop_user(user.id, RECOVERY) > 0 or had
        if self.passkeys is not None:
            had = await self.passkeys.remove_all(user.id) > 0 or had
        await self.tokens.drop_user(user.id, TOTP_ENROL)
        if not had:
            return False
        revoked = await self.accounts.sessions.revoke_user(user.id, reason=EndReason.REVOKED)
        await self.accounts.record(AuditEvent.MFA_RESET, origin, user, revoked=revoked)
        self._notify(user, by_admin=True)
        return True

    def _notify(self, user: User, by_admin: bool) -> None:
        self.mailer.send(
            user.email,
            "mfa_removed",
            public_url=self.public_url,
            email=user.email,
            by_admin=by_admin,
            link=f"{self.public_url}/forgot",
        )

    # -- the second step of a sign-in ------------------------------------------------------------

    async def check_totp(self, user_id: str, code: str) -> bool:
        """Whether ``code`` is a current code of the user's app not used before (each time
        step once, also for concurrent callers; a step older than a used one is refused too)."""
        now = self.clock()
        record = await self.tokens.get(_digest(TOTP, user_id), TOTP, now)
        secret = self._open(record)
        if record is None or secret is None:
            return False
        step = totp.matching_step(secret, code, now)
        if step is None:
            return False
        return await self._claim_step(user_id, str(record.data.get("since", "")), step)

    async def _claim_step(self, user_id: str, since: str, step: int) -> bool:
        now = self.clock()
        expires = (step + totp.SKEW + 2) * totp.STEP

        def marker(at: int) -> TokenRecord:
            key = _digest(TOTP_USED, user_id, since, str(at))
            return TokenRecord(key, TOTP_USED, user_id, expires)

        if not await self.tokens.add(marker(step), now):
            return False
        for older in range(step - 2 * totp.SKEW, step):  # still accepted, but older: refused
            await self.tokens.add(marker(older), now)
        return True

    async def check_recovery_code(self, user: User, value: str, origin: Origin) -> bool:
        """Use up one of the user's recovery codes (once, also for concurrent callers)."""
        code = codes.normalize(value)
        if code is None:
            return False
        now = self.clock()
        used = await self.tokens.take(_digest(RECOVERY, user.id, code), RECOVERY, now)
        if used is None:
            return False
        left = await self.tokens.count_user(user.id, RECOVERY, now)
        await self.accounts.record(AuditEvent.RECOVERY_CODE_USED, origin, user, left=left)
        return True

    async def attempt(
        self, user: User, method: str, origin: Origin, check: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Run one second-step ``check``, counted in the sign-in throttle like a password check
        and per user from any address (Throttled past either); a failure is audited."""
        throttle = self.accounts.throttle
        try:
            await throttle.second_step(user.id)
            if origin.ip:
                await throttle.reserve(user.email, origin.ip)
        except Throttled as throttled:
            if throttled.first:
                await self.accounts.record(AuditEvent.MFA_THROTTLED, origin, user)
            raise
        if await check():
            await throttle.second_step_succeeded(user.id)
            if origin.ip:
                await throttle.succeeded(user.email, origin.ip)
            return True
        await self.accounts.live.sign_in_failed()
        await self.accounts.record(AuditEvent.MFA_FAILED, origin, user, method=method)
        return False

    async def begin_sign_in(self, user: User, remember_me: bool, methods: list[str]) -> str:
        """The token of a sign-in waiting for its second step: it grants nothing else, lasts
        ``security.mfa_pending_ttl`` and dies with any change of the user's generation."""
        token, key = new_token()
        now = self.clock()
        data = {"generation": user.generation, "rememberMe": remember_me, "methods": methods}
        await self.tokens.put(TokenRecord(key, PENDING, user.id, now + self.pending_ttl, data), now)
        return token

    async def pending(self, token: object) -> PendingSignIn | None:
        """The sign-in a pending token stands for, if it is live and its user unchanged."""
        key = token_key(token)
        if key is None:
            return None
        record = await self.tokens.get(key, PENDING, self.clock())
        if record is None:
            return None
        user = await self.accounts.users.get(record.user_id)
        if user is None or user.disabled or user.generation != record.data.get("generation"):
            return None
        methods = [str(m) for m in record.data.get("methods", [])]
        return PendingSignIn(user, bool(record.data.get("rememberMe")), methods)

    async def take_pending(self, token: object) -> bool:
        """Use the pending sign-in up; False if another request already did."""
        key = token_key(token)
        return key is not None and await self.tokens.take(key, PENDING, self.clock()) is not None

    # --------------------------------------------------------------------------------------------

    def _open(self, record: TokenRecord | None) -> str | None:
        if record is None:
            return None
        try:
            return self.box.open(str(record.data.get("secret", "")))
        except InvalidToken:  # sealed under a secret no longer configured
            log.warning("a second-factor secret of user %s cannot be decrypted", record.user_id)
            return None
