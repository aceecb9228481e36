"""Sessions in a SQLite file: the zero-setup default. Expired rows go in a periodic sweep."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..sqlite import SQLiteDatabase
from .base import SessionBackend, SessionRecord

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
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    ends_at REAL NOT NULL
);
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


def _record(row: tuple) -> SessionRecord:
    key, user_id, created, seen, expires, absolute, ttl, ip, agent, data = row
    return SessionRecord(
        key, created, seen, expires, absolute, ttl, user_id, ip, agent, json.loads(data)
    )


class SQLiteSessionBackend(SessionBackend):
    name = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.db = SQLiteDatabase(url, SCHEMA, "session")

    async def start(self) -> None:
        await self.db.run(lambda connection: None)

    async def load(self, key: str) -> SessionRecord | None:
        def read(connection: sqlite3.Connection) -> tuple | None:
            sql = f"SELECT {COLUMNS} FROM sessions WHERE key = ?"
            return connection.execute(sql, (key,)).fetchone()

        row = await self.db.run(read)
        return _record(row) if row else None

    async def create(self, record: SessionRecord) -> None:
        self.writes += 1
        row = (
            record.key, record.user_id, record.created_at, record.last_seen_at,
            record.expires_at, record.absolute_expires_at, record.ttl, record.ip,
            record.user_agent, json.dumps(record.data),
        )  # fmt: skip
        sql = f"INSERT OR REPLACE INTO sessions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        await self.db.run(lambda connection: connection.execute(sql, row))

    async def update(
        self,
        key: str,
        changed: dict[str, Any],
        removed: set[str],
        last_seen_at: float,
        expires_at: float,
    ) -> bool:
        self.writes += 1

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
        self.writes += 1
        sql = "DELETE FROM sessions WHERE key = ?"
        return await self.db.run(lambda connection: connection.execute(sql, (key,)).rowcount == 1)

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        sql = f"SELECT {COLUMNS} FROM sessions WHERE user_id = ?"
        rows = await self.db.run(lambda connection: connection.execute(sql, (user_id,)).fetchall())
        return [_record(row) for row in rows]

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        self.writes += 1

        def delete_all(connection: sqlite3.Connection) -> list[str]:
            sql = "DELETE FROM sessions WHERE user_id = ? AND key IS NOT ? RETURNING key"
            return [row[0] for row in connection.execute(sql, (user_id, keep)).fetchall()]

        return await self.db.transaction(delete_all)

    async def sweep(self, now: float) -> int:
        def remove(connection: sqlite3.Connection) -> int:
            connection.execute("DELETE FROM counters WHERE ends_at <= ?", (now,))
            sql = "DELETE FROM sessions WHERE expires_at <= ? OR absolute_expires_at <= ?"
            return connection.execute(sql, (now, now)).rowcount

        return await self.db.run(remove)

    async def count(self, now: float) -> int:
        sql = "SELECT COUNT(*) FROM sessions WHERE expires_at > ? AND absolute_expires_at > ?"
        return await self.db.run(
            lambda connection: connection.execute(sql, (now, now)).fetchone()[0]
        )

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

    async def ping(self) -> None:
        await self.db.run(lambda connection: connection.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self.db.close()
