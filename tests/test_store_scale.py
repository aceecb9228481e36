"""What a store does for one request or one sweep must not depend on how much it holds: the memory
store's sweep and count read only what may have expired, the SQLite store's statements search its
indexes (never a scan of the sessions table) and its sweep removes a bounded number of rows per
run, the MongoDB store's sweep and count filter by its indexed end alone. Checked by what the
stores read, the query plans and the filters sent, never by timing (bench/scale.py measures the
times)."""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import monitoring

from tornado_auth import mongo as mongo_module
from tornado_auth.mongo import MongoDatabase
from tornado_auth.sessions import SessionRecord
from tornado_auth.sessions import memory as memory_module
from tornado_auth.sessions import sqlite as sqlite_module
from tornado_auth.sessions.memory import MemorySessionStore
from tornado_auth.sessions.mongo import MongoSessionStore
from tornado_auth.sessions.sqlite import SQLiteSessionStore
from tornado_auth.sqlite import SQLiteDatabase

from .conftest import Store, require_service

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


# -- SQLite ---------------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteSessionStore]:
    url = f"sqlite:///{tmp_path}/sessions.db"
    store = SQLiteSessionStore(SQLiteDatabase(url, sqlite_module.SCHEMA, "session"))
    await store.start()
    yield store
    await store.close()


def plans(connection: sqlite3.Connection, statements: list[str]) -> dict[str, list[str]]:
    """Each statement's query plan, one detail a line."""
    return {
        sql: [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}")]
        for sql in statements
    }


async def traced(store: SQLiteSessionStore, work: Any) -> list[str]:
    """The statements on the sessions table that ``work()`` runs, as SQLite ran them."""
    statements: list[str] = []

    def trace(sql: str) -> None:
        if "sessions" in sql:
            statements.append(sql)

    await store.db.run(lambda connection: connection.set_trace_callback(trace))
    await work()
    await store.db.run(lambda connection: connection.set_trace_callback(None))
    return statements


async def test_sqlite_request_path_statements_never_scan_the_sessions_table(sqlite_store):
    store = sqlite_store
    for number in range(50):
        await store.create(record(number, DAY, user=f"user{number % 5}"))

    async def request_path() -> None:
        await store.create(record(100, DAY, user="user1"))  # a sign-in
        await store.trim_user("user1", 50, NOW)
        await store.load(f"{3:064x}")  # a request
        await store.update(f"{3:064x}", {}, set(), NOW, NOW + DAY)  # a touch
        await store.update(f"{3:064x}", {"theme": "dark"}, set(), NOW, NOW + DAY)
        await store.list_user("user2")  # the sessions page
        await store.delete_user("user2", keep=f"{2:064x}")  # revoke-others
        await store.delete(f"{4:064x}")  # logout

    statements = await traced(store, request_path)
    assert len(statements) >= 8
    found = await store.db.run(lambda connection: plans(connection, statements))
    for sql, details in found.items():
        assert not [d for d in details if d.startswith("SCAN sessions")], (sql, details)


async def test_sqlite_sweep_and_count_search_the_end_index(sqlite_store):
    store = sqlite_store
    for number in range(20):
        await store.create(record(number, DAY if number % 2 else -1))

    async def background() -> None:
        assert await store.count(NOW) == 10
        assert await store.sweep(NOW) == 10

    statements = await traced(store, background)
    found = await store.db.run(lambda connection: plans(connection, statements))
    for sql, details in found.items():
        # a count of every row reads only an index's pages; expired rows are found through the
        # end index; no statement reads the table from end to end
        assert not [d for d in details if d.startswith("SCAN sessions") and "INDEX" not in d]
        if "<=" in sql:
            assert any("USING INDEX sessions_end" in detail for detail in details), details


async def test_sqlite_sweep_removes_a_bounded_number_per_run(sqlite_store, monkeypatch):
    monkeypatch.setattr(sqlite_module, "SWEEP_BATCH", 3)
    monkeypatch.setattr(sqlite_module, "SWEEP_STEPS", 2)
    store = sqlite_store
    for number in range(10):
        await store.create(record(number, -1 - number))
    await store.create(record(99, DAY))
    assert await store.count(NOW) == 1  # expired rows are not counted, swept or not
    assert [await store.sweep(NOW) for _ in range(3)] == [6, 4, 0]
    assert await store.count(NOW) == 1
    assert await store.load(f"{99:064x}") is not None


async def test_sqlite_file_of_an_older_version_gets_the_end_index(tmp_path: Path):
    path = tmp_path / "sessions.db"
    old = sqlite_module.SCHEMA.replace("DROP INDEX IF EXISTS sessions_expires_at;\n", "").replace(
        "CREATE INDEX IF NOT EXISTS sessions_end ON sessions "
        "(MIN(expires_at, absolute_expires_at));",
        "CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);",
    )
    assert "sessions_end" not in old
    with sqlite3.connect(path) as connection:
        connection.executescript(old)
    connection.close()
    store = SQLiteSessionStore(SQLiteDatabase(f"sqlite:///{path}", sqlite_module.SCHEMA, "session"))
    await store.start()
    try:
        await store.create(record(1, -1))
        assert await store.sweep(NOW) == 1
        names = await store.db.run(
            lambda connection: {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master")
            }
        )
        assert "sessions_end" in names and "sessions_expires_at" not in names
    finally:
        await store.close()


# -- mongodb --------------------------------------------------------------------------------------


class Filters(monitoring.CommandListener):
    """The filters of the commands a client sends, by command name."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if event.command_name == "aggregate":  # count_documents: a $match, then a count
            self.sent.append(("count", command["pipeline"][0]["$match"]))
        elif event.command_name == "delete":
            self.sent += [("delete", delete["q"]) for delete in command["deletes"]]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_mongodb_sweep_and_count_filter_by_the_indexed_end_alone(tmp_path: Path, monkeypatch):
    """MongoDB answers the live count and the sweep from the ``expires_at`` index (the TTL index
    where the server has them), never by reading every session: their filters name that field
    alone, and it holds each session's end, the earlier of its idle and absolute expiry."""
    require_service("mongodb")
    filters = Filters()
    client = functools.partial(mongo_module.AsyncMongoClient, event_listeners=[filters])
    monkeypatch.setattr(mongo_module, "AsyncMongoClient", client)
    place = Store("mongodb", tmp_path)
    store = MongoSessionStore(MongoDatabase(place.session_url(), "session"))
    await store.start()
    try:
        for number in range(6):
            await store.create(record(number, DAY if number % 2 else -1))
        # idle for a day more, but past its absolute expiry
        await store.create(dataclasses.replace(record(7, DAY), absolute_expires_at=NOW - 1))
        filters.sent.clear()
        assert await store.count(NOW) == 3
        assert await store.sweep(NOW) == 4
        assert await store.count(NOW) == 3
        indexed = {
            name
            for index in await (await store.sessions.list_indexes()).to_list(None)
            for name in index["key"]
        }
        assert "expires_at" in indexed
        assert [kind for kind, _ in filters.sent] == ["count", "delete", "count"]
        for _, found in filters.sent:
            assert set(found) == {"expires_at"}, found
    finally:
        await store.close()
        await place.cleanup()


async def test_mongodb_sweep_never_removes_a_session_in_the_millisecond_before_its_end(
    tmp_path: Path,
):
    """A BSON date holds milliseconds: a session's end is stored rounded up, so that a sweep in
    the same millisecond, before the end, leaves it (created so, or moved there by a touch)."""
    require_service("mongodb")
    place = Store("mongodb", tmp_path)
    store = MongoSessionStore(MongoDatabase(place.session_url(), "session"))
    await store.start()
    try:
        now = NOW + 0.0002
        await store.create(record(1, 0.0007))  # ends 0.5 ms after now
        await store.create(record(2, -60))
        await store.update(f"{2:064x}", {}, set(), now, NOW + 0.0007)  # touched, ends alike
        assert await store.sweep(now) == 0
        assert await store.count(now) == 2
        assert await store.sweep(NOW + 0.0011) == 2
    finally:
        await store.close()
        await place.cleanup()
