"""Sessions in a SQLite file: the zero-setup default.

Records are rows of one table indexed by user and by their end (the earlier of the idle and the
absolute expiry), counters rows of another; expired rows go in the periodic sweep, a bounded
number of batches per run, each found through the end index (never a scan of the table). Events
stay in this process: other processes over the same file learn of ended sessions by checking
(``live.check_interval``).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..sqlite import SQLiteDatabase
from .store import Backend, LocalEventBus, SessionRecord, SessionStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,
    user_id TEXT,
    created_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    absolute_expires_at REAL NOT NULL,
    ttl REAL NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id);
DROP INDEX IF EXISTS sessions_expires_at;
CREATE INDEX IF NOT EXISTS sessions_end ON sessions (MIN(expires_at, absolute_expires_at));
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    ends_at REAL NOT NULL
);
-- The number of rows, kept by triggers, so that the live count never counts the table. Files made
-- before it are counted once, in the same transaction as the triggers are made (no row written by
-- another process meanwhile is missed); REPLACE fires the delete trigger (recursive_triggers).
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS session_count (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    rows INTEGER NOT NULL
);
INSERT INTO session_count (id, rows)
    SELECT 0, (SELECT COUNT(*) FROM sessions) WHERE NOT EXISTS (SELECT 1 FROM session_count);
CREATE TRIGGER IF NOT EXISTS sessions_counted AFTER INSERT ON sessions
    BEGIN UPDATE session_count SET rows = rows + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS sessions_uncounted AFTER DELETE ON sessions
    BEGIN UPDATE session_count SET rows = rows - 1 WHERE id = 0; END;
COMMIT;
"""
# Expiry only moves forward: a late write of an older expiry never moves it back.
MOVE_EXPIRY = (
    "UPDATE sessions SET last_seen_at = MAX(last_seen_at, ?), expires_at = MAX(expires_at, ?) "
    "WHERE key = ?"
)
COLUMNS = (
    "key, user_id, created_at, last_seen_at, expires_at, absolute_expires_at, ttl, ip, "
    "user_agent, data"
)
# What a create of a key that is there already sets (an update: the row count stays right on a
# connection that fires no delete trigger for a REPLACE).
REPLACE_ROW = ", ".join(
    f"{column} = excluded.{column}" for column in COLUMNS.split(", ") if column != "key"
)
# A session's end, exactly as the sessions_end index spells it (so that queries use the index).
END = "MIN(expires_at, absolute_expires_at)"
# One sweep run removes at most SWEEP_STEPS batches of SWEEP_BATCH expired rows, each batch its
# own statement: requests queued on the database thread run between them, and a run's time and
# I/O stay bounded however many rows are stored or expired (the rest go in the next run).
SWEEP_BATCH = 1000
SWEEP_STEPS = 20
SWEEP = f"DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions WHERE {END} <= ? LIMIT ?)"
# The live count: every row (the count the triggers keep) less the expired ones not swept yet
# (found through the end index; the sweep keeps them few).
COUNT = (
    "SELECT (SELECT rows FROM session_count WHERE id = 0) - "
    f"(SELECT COUNT(*) FROM sessions WHERE {END} <= ?)"
)


def _record(row: tuple) -> SessionRecord:
    key, user_id, created, seen, expires, absolute, ttl, ip, agent, data = row
    return SessionRecord(
        key, created, seen, expires, absolute, ttl, user_id, ip, agent, json.loads(data)
    )


class SQLiteSessionStore(SessionStore):
    name = "sqlite"

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def start(self) -> None:
        await self.db.run(lambda connection: None)

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.run(lambda connection: connection.execute("SELECT 1").fetchone())

    async def load(self, key: str) -> SessionRecord | None:
        def read(connection: sqlite3.Connection) -> tuple | None:
            sql = f"SELECT {COLUMNS} FROM sessions WHERE key = ?"
            return connection.execute(sql, (key,)).fetchone()

        row = await self.db.run(read)
        return _record(row) if row else None

    async def create(self, record: SessionRecord) -> None:
        row = (
            record.key, record.user_id, record.created_at, record.last_seen_at,
            record.expires_at, record.absolute_expires_at, record.ttl, record.ip,
            record.user_agent, json.dumps(record.data),
        )  # fmt: skip
        sql = (
            f"INSERT INTO sessions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT (key) DO UPDATE SET {REPLACE_ROW}"  # a row, not a delete: one count
        )
        await self.db.run(lambda connection: connection.execute(sql, row))

    async def update(
        self,
        key: str,
        changed: dict[str, Any],
        removed: set[str],
        last_seen_at: float,
        expires_at: float,
    ) -> bool:

        def touch(connection: sqlite3.Connection) -> bool:
            return connection.execute(MOVE_EXPIRY, (last_seen_at, expires_at, key)).rowcount == 1

        def merge(connection: sqlite3.Connection) -> bool:
            row = connection.execute("SELECT data FROM sessions WHERE key = ?", (key,)).fetchone()
            if row is None:
                return False
            data = json.loads(row[0])
            data.update(changed)
            for name in removed:
                data.pop(name, None)
            sql = "UPDATE sessions SET data = ? WHERE key = ?"
            connection.execute(sql, (json.dumps(data), key))
            connection.execute(MOVE_EXPIRY, (last_seen_at, expires_at, key))
            return True

        if not changed and not removed:
            return await self.db.run(touch)
        return await self.db.transaction(merge)

    async def delete(self, key: str) -> bool:
        sql = "DELETE FROM sessions WHERE key = ?"
        return await self.db.run(lambda connection: connection.execute(sql, (key,)).rowcount == 1)

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        sql = f"SELECT {COLUMNS} FROM sessions WHERE user_id = ?"
        rows = await self.db.run(lambda connection: connection.execute(sql, (user_id,)).fetchall())
        return [_record(row) for row in rows]

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:

        def delete_all(connection: sqlite3.Connection) -> list[str]:
            sql = "DELETE FROM sessions WHERE user_id = ? AND key IS NOT ? RETURNING key"
            return [row[0] for row in connection.execute(sql, (user_id, keep)).fetchall()]

        return await self.db.transaction(delete_all)

    async def trim_user(self, user_id: str, keep: int, now: float) -> list[str]:
        sql = (
            "DELETE FROM sessions WHERE key IN (SELECT key FROM sessions "
            "WHERE user_id = ? AND expires_at > ? AND absolute_expires_at > ? "
            "ORDER BY created_at DESC, key LIMIT -1 OFFSET ?) RETURNING key"
        )
        arguments = (user_id, now, now, keep)
        return await self.db.run(
            lambda connection: [row[0] for row in connection.execute(sql, arguments).fetchall()]
        )

    async def sweep(self, now: float) -> int:
        removed = 0
        for _ in range(SWEEP_STEPS):
            batch = await self.db.run(
                lambda connection: connection.execute(SWEEP, (now, SWEEP_BATCH)).rowcount
            )
            removed += batch
            if batch < SWEEP_BATCH:
                break
        return removed

    async def count(self, now: float) -> int:
        return await self.db.run(lambda connection: connection.execute(COUNT, (now,)).fetchone()[0])


class SQLiteCounters:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def hit(self, name: str, window: float, now: float) -> tuple[int, float]:
        def count(connection: sqlite3.Connection) -> tuple[int, float]:
            sql = "SELECT count, ends_at FROM counters WHERE name = ? AND ends_at > ?"
            row = connection.execute(sql, (name, now)).fetchone()
            counted = (row[0] + 1, row[1]) if row else (1, now + window)
            sql = "INSERT OR REPLACE INTO counters (name, count, ends_at) VALUES (?, ?, ?)"
            connection.execute(sql, (name, *counted))
            return counted

        return await self.db.transaction(count)

    async def peek(self, name: str, now: float) -> tuple[int, float]:
        sql = "SELECT count, ends_at FROM counters WHERE name = ? AND ends_at > ?"
        row = await self.db.run(lambda connection: connection.execute(sql, (name, now)).fetchone())
        return (row[0], row[1]) if row else (0, now)

    async def release(self, name: str, now: float) -> None:
        sql = "UPDATE counters SET count = count - 1 WHERE name = ? AND ends_at > ? AND count > 0"
        await self.db.run(lambda connection: connection.execute(sql, (name, now)))

    async def clear(self, name: str) -> None:
        sql = "DELETE FROM counters WHERE name = ?"
        await self.db.run(lambda connection: connection.execute(sql, (name,)))

    async def sweep(self, now: float) -> int:
        sql = "DELETE FROM counters WHERE ends_at <= ?"
        return await self.db.run(lambda connection: connection.execute(sql, (now,)).rowcount)


def sqlite_backend(url: str) -> Backend:
    db = SQLiteDatabase(url, SCHEMA, "session")
    return Backend(SQLiteSessionStore(db), SQLiteCounters(db), LocalEventBus(shared=False))
