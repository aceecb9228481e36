"""The audit trail: who did what, from where, to which session; never a token."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
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
    PASSWORD_CHECK_FAILED = "password_check_failed"
    PASSWORD_CHECK_THROTTLED = "password_check_throttled"
    ROLE_CHANGED = "role_changed"
    USER_DISABLED = "user_disabled"
    USER_ENABLED = "user_enabled"


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


class Audit:
    """Writes entries to the user store; a store outage is logged, never fatal to the request."""

    def __init__(self, store: Any, secret: bytes) -> None:
        self.store = store
        self._key = hashlib.sha256(b"audit-session-hash:" + secret).digest()

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
        return await self.store.audit_page(offset, limit)
