"""What a store does for one request or one sweep must not depend on how much it holds: the memory
store's sweep and count read only what may have expired. Checked by what the stores read, never by
timing (bench/scale.py measures the times)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tornado_auth.sessions import SessionRecord
from tornado_auth.sessions import memory as memory_module
from tornado_auth.sessions.memory import MemorySessionStore

NOW = 1_900_000_000.0
DAY = 86400.0


def record(number: int, ends_in: float, user: str | None = None) -> SessionRecord:
    """A session signed in a while ago that expires ``ends_in`` seconds after NOW."""
    return SessionRecord(
        key=f"{number:064x}",
        created_at=NOW - 60,
        last_seen_at=NOW - 60,
        expires_at=NOW + ends_in,
        absolute_expires_at=NOW + 90 * DAY,
        ttl=DAY,
        user_id=user or f"user{number}",
        ip="192.0.2.1",
        user_agent="Mozilla/5.0",
        data={"email": f"user{number}@example.com", "role": "user"},
    )


# -- memory ---------------------------------------------------------------------------------------


class Watched(dict[str, Any]):
    """A dict that counts the times it is walked through."""

    walks = 0

    def __iter__(self) -> Iterator[str]:
        Watched.walks += 1
        return super().__iter__()

    def items(self) -> Any:
        Watched.walks += 1
        return super().items()

    def values(self) -> Any:
        Watched.walks += 1
        return super().values()

    def keys(self) -> Any:
        Watched.walks += 1
        return super().keys()


async def test_memory_sweep_and_count_never_walk_every_record():
    store = MemorySessionStore()
    for number in range(1000):
        await store.create(record(number, DAY))
    for number in range(1000, 1003):
        await store.create(record(number, -1))  # expired a second ago
    store._records = Watched(store._records)
    Watched.walks = 0
    assert await store.count(NOW) == 1000
    assert await store.sweep(NOW) == 3
    assert await store.sweep(NOW) == 0
    assert await store.count(NOW) == 1000
    assert Watched.walks == 0


async def test_memory_sweep_keeps_a_session_whose_expiry_moved_until_its_new_end():
    store = MemorySessionStore()
    await store.create(record(1, 60))
    await store.create(record(2, 60))
    assert await store.update(f"{1:064x}", {}, set(), NOW + 30, NOW + 3600)  # touched
    assert await store.count(NOW + 61) == 1  # the untouched one expired, not swept yet
    assert await store.load(f"{2:064x}") is not None
    assert await store.sweep(NOW + 61) == 1
    assert await store.load(f"{1:064x}") is not None
    assert await store.count(NOW + 61) == 1
    assert await store.sweep(NOW + 3601) == 1
    assert await store.count(NOW + 3601) == 0
    assert await store.load(f"{1:064x}") is None


async def test_memory_store_forgets_the_ends_of_deleted_sessions():
    store = MemorySessionStore()
    for number in range(10):
        await store.create(record(number, DAY))
    for number in range(10, 10_010):  # signed in and out, long before they would expire
        await store.create(record(number, DAY))
        assert await store.delete(f"{number:064x}")
    assert len(store._ends) <= 2 * len(store._records) + memory_module.STALE_ENDS
    assert await store.count(NOW) == 10
    assert await store.sweep(NOW + 2 * DAY) == 10
    assert store._ends == []
