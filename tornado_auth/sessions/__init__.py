"""Sessions: the semantics in ``session.py``, one storage backend per module."""

from __future__ import annotations

from .base import SessionBackend, SessionRecord, StoreUnavailable
from .session import CookieChange, Lifetime, Session, SessionManager, public_id, token_key

__all__ = [
    "CookieChange",
    "Lifetime",
    "Session",
    "SessionBackend",
    "SessionManager",
    "SessionRecord",
    "StoreUnavailable",
    "backend_for_url",
    "public_id",
    "token_key",
]


def backend_for_url(url: str, key_prefix: str = "ta:") -> SessionBackend:
    """The backend a URL names: redis://, rediss://, redis+cluster://, redis+sentinel://,
    mongodb://, sqlite:///path, memory://."""
    if url.startswith(("redis://", "rediss://", "redis+cluster://", "redis+sentinel://")):
        from ..settings import SettingsError
        from .redis import RedisSessionBackend

        try:
            return RedisSessionBackend(url, key_prefix)
        except ValueError as error:
            raise SettingsError(f"sessions.url: {error}") from None
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoSessionBackend

        return MongoSessionBackend(url)
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteSessionBackend

        return SQLiteSessionBackend(url)
    if url.startswith("memory://"):
        from .memory import MemorySessionBackend

        return MemorySessionBackend()
    raise ValueError(f"unsupported session store URL: {url}")
