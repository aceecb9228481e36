"""One SQLite file written through two connections at once, as two processes (or two stores of one
process) do: every read-modify-write is one transaction, so no write is lost to the other. Each
store has one thread, so the second connection is what can interleave with a transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth.sessions import Backend, backend_for_url
from tornado_auth.sessions.store import SessionRecord
from tornado_auth.users.sqlite import SQLiteUserStore

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


async def test_an_audit_entry_written_while_the_user_store_starts_counting_is_counted(tmp_path):
    """The audit count is set up (counted once, then kept by triggers) in one transaction: another
    process's entry written between the count and the triggers would be in neither."""
    path = tmp_path / "users.db"
    users = SQLiteUserStore(f"sqlite:///{path}")
    refused: list[sqlite3.OperationalError] = []
    written: list[str] = []  # the statements the store ran
    entry = (
        "INSERT INTO audit (event, at, ip, user_agent, detail) VALUES ('login', 0, '', '', '{}')"
    )

    def another_process_writes(statement: str) -> None:
        """Between the count and its triggers (run on the store's thread as it gets there)."""
        written.append(statement)
        if statement.startswith("CREATE TRIGGER IF NOT EXISTS audit_counted"):
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute(entry)
            except sqlite3.OperationalError as error:  # locked: the count is in a transaction
                refused.append(error)
            finally:
                other.close()

    await users.db.run(lambda connection: connection.set_trace_callback(another_process_writes))
    try:
        await users.start()
        await users.db.run(lambda connection: connection.set_trace_callback(None))
        if refused:  # the other process tries again once the transaction is over
            await users.db.run(lambda connection: connection.execute(entry))
        _, total = await users.audit_page(0, 10)
        stored = await users.db.run(
            lambda connection: connection.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        )
        assert any(s.startswith("CREATE TRIGGER IF NOT EXISTS audit_counted") for s in written)
        assert (total, stored) == (1, 1)
    finally:
        await users.close()


def _record(key: str, now: float, ends_in: float = 3600) -> SessionRecord:
    return SessionRecord(key, now, now, now + ends_in, now + 2 * ends_in, ends_in, "u1")


async def test_the_live_count_kept_by_triggers_matches_the_rows_from_two_connections(
    two_connections,
):
    """Creates, replaces, deletes and a sweep through both connections at once leave the count
    the triggers keep equal to the rows, less those expired."""
    first, second = two_connections
    now = time.time()
    creates = [
        backend.store.create(_record(f"{name}{index}", now, 3600 if index % 4 else -1))
        for index in range(ROUNDS)
        for name, backend in (("a", first), ("b", second))
    ]
    await asyncio.gather(*creates)
    # a create of a key that exists replaces its row: counted once, not twice
    await asyncio.gather(
        first.store.create(_record("a1", now)), second.store.create(_record("b1", now))
    )
    await asyncio.gather(*(b.store.delete(f"{n}2") for n, b in (("a", first), ("b", second))))
    expired = 2 * len(range(0, ROUNDS, 4))
    live = 2 * ROUNDS - expired - 2
    assert await first.store.count(now) == await second.store.count(now) == live
    assert await second.store.sweep(now) == expired
    assert await first.store.count(now) == live
    rows = sqlite3.connect(first.store.db.path).execute("SELECT COUNT(*) FROM sessions").fetchone()
    assert rows[0] == live


async def test_a_file_made_before_the_count_is_counted_once_when_first_opened(tmp_path: Path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    columns = (
        "key TEXT PRIMARY KEY, user_id TEXT, created_at REAL NOT NULL, last_seen_at REAL NOT "
        "NULL, expires_at REAL NOT NULL, absolute_expires_at REAL NOT NULL, ttl REAL NOT NULL, "
        "ip TEXT NOT NULL, user_agent TEXT NOT NULL, data TEXT NOT NULL"
    )
    old.execute(f"CREATE TABLE sessions ({columns})")
    now = time.time()
    rows = [(f"k{i}", "u1", now, now, now + 60, now + 120, 60, "", "", "{}") for i in range(7)]
    old.executemany("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    old.commit()
    old.close()
    for opened in range(2):  # opened twice: counted once, then kept by the triggers
        backend = backend_for_url(f"sqlite:///{path}")
        await backend.start()
        assert await backend.store.count(now) == 7 + opened
        await backend.store.create(_record(f"new{opened}", now))
        await backend.close()
    backend = backend_for_url(f"sqlite:///{path}")
    assert await backend.store.count(now) == 9
    await backend.close()
