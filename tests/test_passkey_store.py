"""The passkey store beside the users, on SQLite and on MongoDB: credential ids unique, listings
and counts per user, and a use recorded only over the counter it was checked against."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth.passkeys import Passkey, PasskeyStore, passkeys_for
from tornado_auth.users import UserStore, store_for_url

from .conftest import Store, require_service

NOW = 1_900_000_000.0


@pytest.fixture(params=["sqlite", "mongodb"])
async def passkeys(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PasskeyStore]:
    if request.param == "mongodb":
        require_service("mongodb")
    place = Store(request.param, tmp_path)
    users: UserStore = store_for_url(place.user_url())
    await users.start()
    store = passkeys_for(users)
    await store.start()
    yield store
    await users.close()
    await place.cleanup()


def passkey(credential_id: str, user_id: str = "u1", at: float = NOW) -> Passkey:
    return Passkey(credential_id, user_id, "Laptop", b"\xa5\x01\x02", 0, at, None, ["internal"])


async def test_credential_ids_are_unique_and_passkeys_read_back_whole(passkeys: PasskeyStore):
    assert await passkeys.add(passkey("cred-1"))
    assert not await passkeys.add(passkey("cred-1", user_id="u2"))  # taken: never moved over
    assert await passkeys.get("cred-1") == passkey("cred-1")
    assert await passkeys.get("cred-2") is None


async def test_listings_and_counts_are_per_user_oldest_first(passkeys: PasskeyStore):
    for index, (credential_id, user_id) in enumerate((("a", "u1"), ("b", "u2"), ("c", "u1"))):
        assert await passkeys.add(passkey(credential_id, user_id, NOW - index))
    assert [p.credential_id for p in await passkeys.list_user("u1")] == ["c", "a"]
    assert await passkeys.counts(["u1", "u2", "u3"]) == {"u1": 2, "u2": 1}
    assert await passkeys.counts([]) == {}
    assert await passkeys.rename("a", "Phone") and not await passkeys.rename("zz", "Phone")
    assert (await passkeys.get("a")).name == "Phone"
    assert await passkeys.remove("a") and not await passkeys.remove("a")
    assert await passkeys.counts(["u1"]) == {"u1": 1}


async def test_a_use_is_recorded_once_over_the_counter_it_was_checked_against(
    passkeys: PasskeyStore,
):
    await passkeys.add(passkey("cred"))
    used = await asyncio.gather(*(passkeys.used("cred", 0, 5, NOW + n) for n in range(5)))
    assert sorted(used) == [False, False, False, False, True]
    stored = await passkeys.get("cred")
    assert stored.sign_count == 5 and stored.last_used_at is not None
    assert not await passkeys.used("cred", 0, 6, NOW)  # checked against a stale counter
    assert await passkeys.used("cred", 5, 6, NOW)
