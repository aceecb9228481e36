"""One SQLite file written through two connections at once, as two processes (or two stores of one
process) do: every read-modify-write is one transaction, so no write is lost to the other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth.sessions import Backend, backend_for_url
from tornado_auth.sessions.store import SessionRecord

ROUNDS = 100  # writes through each connection


@pytest.fixture
async def two_connections(tmp_path: Path) -> AsyncIterator[tuple[Backend, Backend]]:
    url = f"sqlite:///{tmp_path}/sessions.db"
    pair = backend_for_url(url), backend_for_url(url)  # each its own thread and connection
    for backend in pair:
        await backend.start()
    yield pair
    for backend in pair:
        await backend.close()


async def test_counts_from_two_connections_are_never_lost(two_connections):
    now = time.time()
    hits = [
        backend.counters.hit("login:ip:one", 600, now)
        for _ in range(ROUNDS)
        for backend in two_connections
    ]
    counts = sorted(count for count, _ in await asyncio.gather(*hits))
    assert counts == list(range(1, 2 * ROUNDS + 1))  # each hit saw every earlier one


async def test_data_changes_from_two_connections_are_never_lost(two_connections):
    first, second = two_connections
    now = time.time()
    record = SessionRecord("k", now, now, now + 3600, now + 7200, 3600, "u1")
    await first.store.create(record)
    updates = [
        backend.store.update("k", {f"{name}{index}": index}, set(), now, now + 3600)
        for index in range(ROUNDS)
        for name, backend in (("a", first), ("b", second))
    ]
    assert all(await asyncio.gather(*updates))
    stored = await second.store.load("k")
    assert stored is not None
    expected = {f"{name}{index}": index for index in range(ROUNDS) for name in ("a", "b")}
    assert stored.data == expected
