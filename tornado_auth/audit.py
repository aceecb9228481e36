"""The audit trail: who did what, from where, to which session; never a token."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import StoreUnavailable

log = logging.getLogger("tornado_auth.audit")

EVENTS = (
    "signin",
    "signin_failed",
    "signin_throttled",
    "logout",
    "session_revoked",
    "sessions_revoked",
    "password_changed",
    "role_changed",
    "user_disabled",
    "user_enabled",
)


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
