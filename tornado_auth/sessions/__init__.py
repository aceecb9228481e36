"""Sessions: the semantics in ``session.py``, the interfaces in ``store.py``, one backend per
module, and ``cache.py``, a caching wrapper around any store."""

from __future__ import annotations

import time
from collections.abc import Callable

from .cache import CachedStore
from .session import (
    CookieChange,
    Lifetime,
    Plan,
    Session,
    SessionManager,
    Write,
    public_id,
    token_key,
)
from .store import (
    Backend,
    Counters,
    EndReason,
    EventBus,
    EventType,
    LocalEventBus,
    SessionRecord,
    SessionStore,
    StoreUnavailable,
)

__all__ = [
    "Backend",
    "CachedStore",
    "CookieChange",
    "Counters",
    "EndReason",
    "EventBus",
    "EventType",
    "Lifetime",
    "LocalEventBus",
    "Plan",
    "Session",
    "SessionManager",
    "SessionRecord",
    "SessionStore",
    "StoreUnavailable",
    "Write",
    "backend_for_url",
    "public_id",
    "token_key",
]


def backend_for_url(
    url: str,
    key_prefix: str = "ta:",
    cache_size: int = 0,
    cache_ttl: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> Backend:
    """The backend a URL names: redis://, rediss://, redis+cluster://, redis+sentinel://,
    mongodb://, sqlite:///path, memory://. Its records are cached in this process (up to
    ``cache_size`` for ``cache_ttl`` seconds) where its events reach every process and a load
    leaves the process."""
    backend = _open(url, key_prefix)
    store, events = backend.store, backend.events
    if cache_size > 0 and cache_ttl > 0 and events.shared and not store.in_process:
        backend.store = CachedStore(store, events, cache_size, cache_ttl, clock)
    return backend


def _open(url: str, key_prefix: str) -> Backend:
    if url.startswith(("redis://", "rediss://", "redis+cluster://", "redis+sentinel://")):
        from ..settings import SettingsError
        from .redis import redis_backend

        try:
            return redis_backend(url, key_prefix)
        except ValueError as error:
            raise SettingsError(f"sessions.url: {error}") from None
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import mongo_backend

        return mongo_backend(url)
    if url.startswith("sqlite://"):
        from .sqlite import sqlite_backend

        return sqlite_backend(url)
    if url.startswith("memory://"):
        from .memory import memory_backend

        return memory_backend()
    raise ValueError(f"unsupported session store URL: {url}")
