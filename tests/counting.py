"""Counting what reaches a session store, from the outside: production code keeps no counters."""

from __future__ import annotations

from typing import Any

from tornado_auth.sessions import SessionManager

WRITES = ("create", "update", "delete", "delete_user", "trim_user")


class CountingStore:
    """Wraps a store; ``writes`` counts every mutating call that reached it."""

    def __init__(self, store: Any) -> None:
        self.inner = store
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in WRITES:
            return attribute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.writes += 1
            return await attribute(*args, **kwargs)

        return counted


def count_writes(manager: SessionManager) -> CountingStore:
    """Count the writes ``manager`` makes from now on (it uses the wrapper in place)."""
    counting = CountingStore(manager.store)
    manager.store = counting  # type: ignore[assignment]
    return counting
