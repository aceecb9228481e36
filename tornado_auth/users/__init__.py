"""Users: the record and interface in ``base.py``, one store per module, ``passwords.py``."""

from __future__ import annotations

from .base import (
    ROLES,
    EmailTaken,
    User,
    UserFilter,
    UserStore,
    email_problem,
    name_problem,
    new_user_id,
    normalize_email,
)

__all__ = [
    "ROLES",
    "EmailTaken",
    "User",
    "UserFilter",
    "UserStore",
    "email_problem",
    "name_problem",
    "new_user_id",
    "normalize_email",
    "store_for_url",
]


def store_for_url(url: str) -> UserStore:
    """The user store a URL names: mongodb:// or sqlite:///path."""
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoUserStore

        return MongoUserStore(url)
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteUserStore

        return SQLiteUserStore(url)
    raise ValueError(f"unsupported user store URL: {url} (use mongodb:// or sqlite:///path)")
