"""Users: the record, the store interface, and input normalisation."""

from __future__ import annotations

import json
import re
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from ..audit import AuditEntry, AuditPage, BadCursor
from ..errors import StoreUnavailable

__all__ = [
    "ROLES",
    "EmailTaken",
    "StoreUnavailable",
    "User",
    "UserFilter",
    "UserStore",
    "new_user_id",
]

ROLES = ("user", "admin")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 254


class EmailTaken(Exception):
    """Another user already has this email."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_problem(email: object) -> str | None:
    if not isinstance(email, str):
        return "Email must be a string"
    email = normalize_email(email)
    # isprintable: no control, format (zero-width, bidi), separator or unassigned characters,
    # which would show one address as another on a page, a terminal or a mail header
    if len(email) > MAX_EMAIL or not EMAIL.match(email) or not email.isprintable():
        return "Email is not a valid address"
    return None


EXTRA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_EXTRA = 16384  # bytes of JSON, all extra fields of one user together


def extra_problem(values: dict[str, Any]) -> str | None:
    """Why these extra fields cannot be stored, or None."""
    for name in values:
        if not isinstance(name, str) or not EXTRA_NAME.match(name):
            return f"invalid extra field name {name!r}: use letters, digits and _"
    try:
        size = len(json.dumps(values))
    except (TypeError, ValueError):
        return "extra fields must be JSON values"
    return f"extra fields must be at most {MAX_EXTRA} bytes of JSON" if size > MAX_EXTRA else None


# Bidirectional overrides and isolates: they reorder what an admin page or a terminal shows.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MAX_NAME = 100


def name_problem(name: object) -> str | None:
    """Why a display name is unacceptable, or None."""
    if not isinstance(name, str) or not name.strip():
        return "Name is required"
    if len(name) > MAX_NAME:
        return f"Name must be at most {MAX_NAME} characters"
    if any(unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS for c in name):
        return "Name must not contain control characters"
    return None


def _position(cursor: str) -> int:
    """The position a cursor of the default ``audit_range`` names."""
    digits = cursor.removeprefix("p")
    if not (cursor.startswith("p") and digits.isascii() and digits.isdigit() and len(digits) < 10):
        raise BadCursor(cursor)
    return int(digits)


def new_user_id() -> str:
    return str(ObjectId())


@dataclass(slots=True)
class User:
    id: str
    email: str
    name: str
    role: str
    password_hash: str
    created_at: float
    last_login_at: float | None = None
    disabled: bool = False
    # Moves on with every change that must end the user's sessions (password, role, disable):
    # a sign-in checks it again once its session exists, so none outlives such a change.
    generation: int = 0
    # When the user followed an emailed verification link (None: not verified).
    email_verified_at: float | None = None
    # The app's own fields (JSON values by name), stored with the user in every store.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def public(self) -> dict[str, Any]:
        """The user as the API shows it: never the password hash."""
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "createdAt": self.created_at,
            "lastLoginAt": self.last_login_at,
            "disabled": self.disabled,
            "emailVerified": self.email_verified_at is not None,
            "extra": self.extra,
        }


@dataclass(frozen=True, slots=True)
class UserFilter:
    """Which users a listing shows: ``search`` is found in the email or the name (case-insensitive
    for ASCII letters), ``role`` and ``disabled`` match exactly; None matches any."""

    search: str = ""
    role: str | None = None
    disabled: bool | None = None


class UserStore(ABC):
    name = "users"

    @abstractmethod
    async def add(self, user: User) -> None:
        """Store a new user; EmailTaken if the email is in use."""

    @abstractmethod
    async def get(self, user_id: str) -> User | None: ...

    @abstractmethod
    async def by_email(self, email: str) -> User | None:
        """The user with this normalised email."""

    @abstractmethod
    async def page(
        self, offset: int, limit: int, where: UserFilter | None = None
    ) -> tuple[list[User], int]:
        """Users ordered by creation, and the total count, of those ``where`` matches (all if
        None)."""

    @abstractmethod
    async def set(
        self,
        user_id: str,
        *,
        expect_generation: int | None = None,
        new_generation: bool = False,
        **fields: Any,
    ) -> User | None:
        """Change named fields; the updated user, or None if there is none.

        With ``expect_generation``, only while the user's generation is that one (else None);
        with ``new_generation``, the generation moves on in the same atomic write.
        """

    @abstractmethod
    async def set_extra(self, user_id: str, values: dict[str, Any]) -> User | None:
        """Set the named extra fields (None removes one), leaving the others as they are."""

    @abstractmethod
    async def count_admins(self) -> int:
        """How many enabled admins there are."""

    @abstractmethod
    async def record(self, entry: AuditEntry) -> None:
        """Append one audit entry."""

    @abstractmethod
    async def audit_page(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        """Audit entries, newest first, and the total count."""

    async def audit_range(
        self, limit: int, before: str | None = None, after: str | None = None
    ) -> AuditPage:
        """Up to ``limit`` audit entries, newest first, and the cursors beside them (see
        ``Audit.around``). This default finds them by position through ``audit_page``, so a
        page deep in a long trail costs what skipping to it costs; the stores here override it
        with cursors that seek."""
        if before is not None and after is not None:
            raise BadCursor("before and after together")
        cursor = before if before is not None else after
        position = _position(cursor) if cursor else None
        if after is not None:  # the entries before ``position``: from the oldest if none
            if position is None:
                position = (await self.audit_page(0, 1))[1]
            start = max(0, position - limit)
            entries, total = await self.audit_page(start, position - start)
        else:
            start = position or 0
            entries, total = await self.audit_page(start, limit)
        end = start + len(entries)
        return AuditPage(
            entries,
            newer=f"p{start}" if start > 0 and entries else None,
            older=f"p{end}" if end < total and entries else None,
        )

    @abstractmethod
    async def prune_audit(self, older_than: float | None, keep: int | None, limit: int) -> int:
        """Remove at most ``limit`` audit entries, oldest first: those written before
        ``older_than``, then those beyond the newest ``keep``; how many were removed."""

    @abstractmethod
    async def ping(self) -> None: ...

    async def start(self) -> None:
        """Connect and prepare indexes or tables, inside the running loop."""

    async def close(self) -> None: ...
