"""The audit trail: who did what, from where, to which session; never a token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from .errors import StoreUnavailable

log = logging.getLogger("tornado_auth.audit")


class AuditEvent(StrEnum):
    SIGNIN = "signin"
    SIGNIN_FAILED = "signin_failed"
    SIGNIN_THROTTLED = "signin_throttled"
    LOGOUT = "logout"
    REGISTERED = "registered"
    REGISTRATION_THROTTLED = "registration_throttled"
    SESSION_REVOKED = "session_revoked"
    SESSIONS_REVOKED = "sessions_revoked"
    PASSWORD_CHANGED = "password_changed"
    NAME_CHANGED = "name_changed"
    PASSWORD_CHECK_FAILED = "password_check_failed"
    PASSWORD_CHECK_THROTTLED = "password_check_throttled"
    ROLE_CHANGED = "role_changed"
    USER_DISABLED = "user_disabled"
    USER_ENABLED = "user_enabled"
    REAUTHENTICATED = "reauthenticated"
    PASSWORD_RESET_SENT = "password_reset_sent"
    PASSWORD_RESET = "password_reset"
    VERIFICATION_SENT = "verification_sent"
    EMAIL_VERIFIED = "email_verified"
    SIGNIN_UNVERIFIED = "signin_unverified"
    REGISTRATION_TAKEN = "registration_taken"
    EMAIL_CHANGE_REQUESTED = "email_change_requested"
    EMAIL_CHANGED = "email_changed"
    EMAIL_CHANGE_UNDONE = "email_change_undone"
    NEW_DEVICE = "new_device"
    NOT_ME = "not_me"
    SESSION_RENAMED = "session_renamed"
    MAIL_THROTTLED = "mail_throttled"
    TEST_MAIL_SENT = "test_mail_sent"
    MFA_ENABLED = "mfa_enabled"
    MFA_REMOVED = "mfa_removed"
    MFA_RESET = "mfa_reset"
    MFA_FAILED = "mfa_failed"
    MFA_THROTTLED = "mfa_throttled"
    RECOVERY_CODE_USED = "recovery_code_used"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    PASSKEY_ADDED = "passkey_added"
    PASSKEY_RENAMED = "passkey_renamed"
    PASSKEY_REMOVED = "passkey_removed"
    PASSKEY_COUNTER_REFUSED = "passkey_counter_refused"


@dataclass(slots=True)
class AuditEntry:
    event: str
    at: float = field(default_factory=time.time)
    user_id: str | None = None
    email: str | None = None
    ip: str = ""
    user_agent: str = ""
    session: str | None = None  # a keyed hash of the session's store key
    detail: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["event"] = str(self.event)
        entry["userId"] = entry.pop("user_id")
        entry["userAgent"] = entry.pop("user_agent")
        return entry


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Entries of the trail, newest first, and the cursors of the pages beside them: ``older``
    (entries after this page: ask with ``before=older``) and ``newer`` (entries before it: ask
    with ``after=newer``); None where there is nothing more."""

    entries: list[AuditEntry]
    newer: str | None = None
    older: str | None = None

    @classmethod
    def sought(
        cls,
        entries: list[AuditEntry],
        cursors: tuple[str, str],
        more: bool,
        before: str | None,
        after: str | None,
    ) -> AuditPage:
        """The page a seek found: ``entries`` newest first, the cursors of its newest and oldest
        entries, whether there were more beyond it (older ones; with ``after``, newer ones), and
        the cursor asked with (``""``: from the newest or the oldest end)."""
        if not entries:
            return cls(entries)
        newest, oldest = cursors
        if after is not None:
            return cls(entries, newer=newest if more else None, older=oldest if after else None)
        return cls(entries, newer=newest if before else None, older=oldest if more else None)


class BadCursor(ValueError):
    """A cursor that no page of this trail gave."""


# A pruning pass removes at most this many entries: it never holds the store for long, and a pass
# that removes a full batch is followed by the next one after CATCH_UP_PAUSE, not the interval.
PRUNE_BATCH = 2000
CATCH_UP_PAUSE = 0.5


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the trail keeps entries, and how often it is pruned; 0 means no limit."""

    max_age: float = 0.0  # seconds
    max_entries: int = 0
    prune_interval: float = 0.0  # seconds between pruning passes; 0: never pruned


class Audit:
    """Writes entries to the user store; a store outage is logged, never fatal to the request."""

    def __init__(
        self,
        store: Any,
        secret: bytes,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._key = hashlib.sha256(b"audit-session-hash:" + secret).digest()
        self.retention = retention or Retention()
        self.clock = clock
        self._pruner: asyncio.Task[None] | None = None
        self._pass_done = asyncio.Event()

    def session_hash(self, key: str | None) -> str | None:
        if key is None:
            return None
        return hmac.new(self._key, key.encode(), hashlib.sha256).hexdigest()[:32]

    async def record(self, entry: AuditEntry) -> None:
        try:
            await self.store.record(entry)
        except StoreUnavailable as error:
            log.warning("audit entry %s not stored: %s", entry.event, error)

    async def page(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        """Entries by position, newest first, and the total: the deeper the page, the more the
        store reads (``around`` reads only the page)."""
        return await self.store.audit_page(offset, limit)

    async def around(
        self, limit: int, before: str | None = None, after: str | None = None
    ) -> AuditPage:
        """Up to ``limit`` entries, newest first: the newest of all; with ``before``, the newest
        of those older than that cursor (``""``: of all); with ``after``, the oldest of those
        newer than it (``""``: of all, the trail's oldest page). BadCursor for a cursor no page
        gave."""
        return await self.store.audit_range(limit, before, after)

    async def prune(self) -> int:
        """One pass: remove at most ``PRUNE_BATCH`` entries older than ``max_age`` or beyond the
        newest ``max_entries``; how many were removed."""
        retention = self.retention
        older_than = self.clock() - retention.max_age if retention.max_age else None
        keep = retention.max_entries or None
        if older_than is None and keep is None:
            return 0
        return await self.store.prune_audit(older_than, keep, PRUNE_BATCH)

    def start(self) -> None:
        """Prune every ``retention.prune_interval`` seconds, from now on, whoever is watching."""
        if self.retention.prune_interval > 0 and self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_forever())

    async def _prune_forever(self) -> None:
        while True:
            removed = 0
            try:
                removed = await self.prune()
                if removed:
                    log.info("pruned %d audit entries", removed)
            except StoreUnavailable as error:
                log.warning("audit pruning skipped: %s", error)
            except Exception:  # a failed pass must not end pruning for the life of the process
                log.exception("audit pruning failed")
            self._pass_done.set()
            self._pass_done = asyncio.Event()
            full = removed >= PRUNE_BATCH
            await asyncio.sleep(CATCH_UP_PAUSE if full else self.retention.prune_interval)

    async def pruned(self) -> None:
        """Wait until the next pruning pass has finished."""
        await self._pass_done.wait()

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
