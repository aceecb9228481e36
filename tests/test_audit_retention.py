"""The audit trail stays bounded: pruned by age and count, and a flood is one entry per window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth import audit as audit_module
from tornado_auth.audit import Audit, AuditEntry, Retention
from tornado_auth.users import UserStore, store_for_url

from .conftest import USER_STORES, Clock, Store, require_service, serving, settings_for

DAY = 86400.0
SECRET = b"s" * 32


@pytest.fixture(params=USER_STORES)
async def users(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UserStore]:
    """A started user store: SQLite under tmp_path, or a unique MongoDB database dropped after."""
    if request.param == "mongodb":
        require_service("mongodb")
    place = Store(request.param, tmp_path)
    store = store_for_url(place.user_url())
    await store.start()
    yield store
    await store.close()
    await place.cleanup()


async def write(users: UserStore, *ages_in_days: float, now: float) -> None:
    """One entry per age, oldest first, numbered in ``detail["n"]`` in the order written."""
    for n, age in enumerate(ages_in_days):
        await users.record(AuditEntry("signin_failed", at=now - age * DAY, detail={"n": n}))


async def numbers(users: UserStore) -> list[int]:
    """The ``n`` of every entry left, oldest first."""
    entries, total = await users.audit_page(0, 1000)
    assert total == len(entries)
    return sorted(entry.detail["n"] for entry in entries)


# -- pruning --------------------------------------------------------------------------------------


async def test_pruning_removes_entries_older_than_max_age_and_keeps_the_rest(users: UserStore):
    clock = Clock()
    await write(users, 400, 120, 91, 89, 10, 0, now=clock.now)
    audit = Audit(users, SECRET, Retention(max_age=90 * DAY), clock)
    assert await audit.prune() == 3
    assert await numbers(users) == [3, 4, 5]
    assert await audit.prune() == 0


async def test_pruning_keeps_only_the_newest_max_entries(users: UserStore):
    clock = Clock()
    await write(users, *range(30, 0, -1), now=clock.now)
    audit = Audit(users, SECRET, Retention(max_entries=10), clock)
    assert await audit.prune() == 20
    assert await numbers(users) == list(range(20, 30))
    assert await audit.prune() == 0


async def test_age_and_count_limits_together_and_zero_keeps_everything(users: UserStore):
    clock = Clock()
    await write(users, 200, 100, 5, 4, 3, 2, 1, now=clock.now)
    assert await Audit(users, SECRET, Retention(), clock).prune() == 0
    assert await numbers(users) == list(range(7))
    audit = Audit(users, SECRET, Retention(max_age=90 * DAY, max_entries=3), clock)
    assert await audit.prune() == 4
    assert await numbers(users) == [4, 5, 6]


async def test_a_pass_removes_at_most_one_batch(users: UserStore, monkeypatch):
    monkeypatch.setattr(audit_module, "PRUNE_BATCH", 10)
    clock = Clock()
    await write(users, *[100] * 15, *[1] * 12, now=clock.now)
    audit = Audit(users, SECRET, Retention(max_age=90 * DAY, max_entries=5), clock)
    assert [await audit.prune() for _ in range(4)] == [10, 10, 2, 0]
    assert await numbers(users) == list(range(22, 27))


async def entries_left(audit: Audit) -> int:
    return (await audit.store.audit_page(0, 1))[1]


async def until_at_most(audit: Audit, count: int) -> None:
    """Await pruning passes until at most ``count`` entries are left (10 s at most)."""
    async with asyncio.timeout(10):
        while await entries_left(audit) > count:
            await audit.pruned()


@pytest.mark.parametrize("store", ["sqlite", "mongodb"], indirect=True)
async def test_the_running_server_prunes_every_interval_with_nobody_watching(store: Store):
    settings = settings_for(store, audit__max_entries=5, audit__prune_interval="50ms")
    async with serving(settings) as server:
        audit = server.services.audit
        await write(audit.store, *[1] * 12, now=audit.clock())
        await until_at_most(audit, 5)
        assert await numbers(audit.store) == list(range(7, 12))


@pytest.mark.parametrize("store", ["sqlite", "mongodb"], indirect=True)
async def test_a_backlog_is_worked_off_in_quick_passes_not_one_batch_per_interval(
    store: Store, monkeypatch
):
    monkeypatch.setattr(audit_module, "PRUNE_BATCH", 10)
    monkeypatch.setattr(audit_module, "CATCH_UP_PAUSE", 0.01)
    users = store_for_url(store.user_url())
    await users.start()
    await write(users, *[1] * 45, now=Clock().now)  # a flood's backlog, from before a restart
    await users.close()
    settings = settings_for(store, audit__max_entries=5, audit__prune_interval="1h")
    async with serving(settings) as server:
        await until_at_most(server.services.audit, 5)  # five passes, and never an hour's wait
        assert await numbers(server.services.users) == list(range(40, 45))


@pytest.mark.parametrize("store", ["sqlite", "mongodb"], indirect=True)
async def test_a_burst_of_throttled_sign_ins_leaves_one_entry_per_window(store: Store):
    settings = settings_for(store, throttle__account_ip_failures=2, throttle__window="10m")
    async with serving(settings) as server:
        clock = server.services.throttle.clock = Clock()
        await server.add_user("ann@example.com", "password123")
        attacker = server.client()
        for _ in range(3):
            for _ in range(2):
                assert (await attacker.login("ann@example.com", "wrong password")).code == 401
            burst = [attacker.login("ann@example.com", "wrong password") for _ in range(40)]
            assert {response.code for response in await asyncio.gather(*burst)} == {429}
            clock.now += 601

        entries, _ = await server.services.audit.page(0, 1000)
        events = [entry.event for entry in entries]
        assert events.count("signin_throttled") == 3  # for 120 refusals
        assert events.count("signin_failed") == 6
