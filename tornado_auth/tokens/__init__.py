"""Single-use links and small keyed records with an expiry, kept beside the users: password
reset, email verification and change, "this wasn't me", known devices, session names.

A link's token is 256 random bits; only its SHA-256 is stored, so a copy of the store opens no
account. ``take`` removes the record as it reads it: a link works once, even twice at once.
"""

from __future__ import annotations

import hashlib
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..users import UserStore

__all__ = ["TokenRecord", "TokenStore", "hash_token", "new_token", "tokens_for"]

MAX_TOKEN = 64  # characters of a token in a link: 43 for 256 bits in URL-safe base64


def new_token() -> tuple[str, str]:
    """A fresh token for a link, and the key it is stored under."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_key(token: object) -> str | None:
    """The stored key of a token given in a request, or None if it cannot be one of ours."""
    if not isinstance(token, str) or not 20 <= len(token) <= MAX_TOKEN:
        return None
    if not all(c.isascii() and (c.isalnum() or c in "-_") for c in token):
        return None
    return hash_token(token)


@dataclass(slots=True)
class TokenRecord:
    key: str
    purpose: str
    user_id: str
    expires_at: float
    data: dict[str, Any] = field(default_factory=dict)


class TokenStore(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def put(self, record: TokenRecord, now: float) -> None:
        """Store (or replace) a record; expired records are removed on the way."""

    @abstractmethod
    async def take(self, key: str, purpose: str, now: float) -> TokenRecord | None:
        """Remove and return the record if it is live: only one caller ever gets it."""

    @abstractmethod
    async def get(self, key: str, purpose: str, now: float) -> TokenRecord | None:
        """The live record, left in place."""

    @abstractmethod
    async def drop_user(self, user_id: str, purpose: str) -> int:
        """Remove a user's records of one purpose (e.g. older reset links); how many."""

    @abstractmethod
    async def add(self, record: TokenRecord, now: float) -> bool:
        """Store a record only if no live one has its key: of callers racing, one gets True."""

    @abstractmethod
    async def count_user(self, user_id: str, purpose: str, now: float) -> int:
        """How many live records of one purpose a user has."""


def tokens_for(users: UserStore) -> TokenStore:
    """The token store living in the same database as ``users``."""
    from ..users.sqlite import SQLiteUserStore

    if isinstance(users, SQLiteUserStore):
        from .sqlite import SQLiteTokenStore

        return SQLiteTokenStore(users.db)
    from ..users.mongo import MongoUserStore

    if isinstance(users, MongoUserStore):
        from .mongo import MongoTokenStore

        return MongoTokenStore(users.mongo, f"{users.collection_name}_tokens")
    raise ValueError(f"no token store for user store {type(users).__name__}")
