"""The token store beside the users, on SQLite and on a MongoDB wire-protocol server (mongod when
present, else FerretDB, one command at a time: concurrent requests interleave between commands,
not inside one): single use even under concurrency, expiry, replacement, only hashes stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth.tokens import (
    TokenRecord,
    TokenStore,
    hash_token,
    new_token,
    token_key,
    tokens_for,
)
from tornado_auth.users import UserStore, store_for_url

from .conftest import Store, require_service

NOW = 1_900_000_000.0


@pytest.fixture(params=["sqlite", "mongodb"])
async def tokens(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TokenStore]:
    if request.param == "mongodb":
        require_service("mongodb")
    place = Store(request.param, tmp_path)
    users: UserStore = store_for_url(place.user_url())
    await users.start()
    store = tokens_for(users)
    await store.start()
    yield store
    await users.close()
    await place.cleanup()


def record(key: str, purpose: str = "reset", user: str = "u1", ttl: float = 60) -> TokenRecord:
    return TokenRecord(key, purpose, user, NOW + ttl, {"email": "a@example.com"})


async def test_a_token_is_taken_once_even_by_concurrent_callers(tokens: TokenStore):
    token, key = new_token()
    await tokens.put(record(key), NOW)
    assert (await tokens.get(key, "reset", NOW)) is not None  # get leaves it in place
    taken = await asyncio.gather(*(tokens.take(key, "reset", NOW) for _ in range(5)))
    winners = [found for found in taken if found is not None]
    assert len(winners) == 1 and winners[0].data == {"email": "a@example.com"}
    assert winners[0].key == hash_token(token) == token_key(token)


async def test_expired_other_purpose_and_dropped_tokens_are_not_found(tokens: TokenStore):
    _, old = new_token()
    _, other = new_token()
    _, dropped = new_token()
    await tokens.put(record(old, ttl=10), NOW)
    await tokens.put(record(other, purpose="verify"), NOW)
    await tokens.put(record(dropped, user="u2"), NOW)
    assert await tokens.take(old, "reset", NOW + 11) is None
    assert await tokens.take(other, "reset", NOW) is None
    assert await tokens.get(other, "verify", NOW) is not None
    assert await tokens.drop_user("u2", "reset") == 1
    assert await tokens.get(dropped, "reset", NOW) is None


async def test_put_replaces_a_record_and_sweeps_expired_ones(tokens: TokenStore):
    _, key = new_token()
    _, stale = new_token()
    await tokens.put(record(stale, ttl=1), NOW)
    await tokens.put(record(key, ttl=10), NOW)
    await tokens.put(record(key, ttl=100), NOW + 50)  # swept the stale one, extended this
    assert await tokens.get(key, "reset", NOW + 60) is not None
    assert await tokens.drop_user("u1", "reset") == 1  # the stale record was removed


@pytest.mark.parametrize("bad", [None, 5, "", "short", "x" * 65, "a/b" * 10, "é" * 30])
def test_malformed_tokens_have_no_key(bad: object):
    assert token_key(bad) is None


async def test_add_stores_a_key_once_even_for_concurrent_callers(tokens: TokenStore):
    _, key = new_token()
    added = await asyncio.gather(*(tokens.add(record(key), NOW) for _ in range(10)))
    assert added.count(True) == 1
    assert await tokens.add(record(key, ttl=1), NOW) is False  # a live record stays
    _, short = new_token()
    assert await tokens.add(record(short, ttl=10), NOW)
    assert await tokens.add(record(short), NOW + 11)  # an expired one gives way


async def test_count_user_counts_live_records_of_one_purpose(tokens: TokenStore):
    for ttl in (10, 100, 100):
        await tokens.put(record(new_token()[1], ttl=ttl, user="u3"), NOW)
    await tokens.put(record(new_token()[1], purpose="verify", user="u3"), NOW)
    assert await tokens.count_user("u3", "reset", NOW) == 3
    assert await tokens.count_user("u3", "reset", NOW + 11) == 2
    assert await tokens.count_user("nobody", "reset", NOW) == 0
