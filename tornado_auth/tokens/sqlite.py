"""Token records in a table of the users' SQLite file."""

from __future__ import annotations

import json
import sqlite3

from ..sqlite import SQLiteDatabase
from . import TokenRecord, TokenStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    key TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_id, purpose);
CREATE INDEX IF NOT EXISTS tokens_expires_at ON tokens (expires_at);
"""
COLUMNS = "key, purpose, user_id, expires_at, data"


def _record(row: tuple[str, str, str, float, str]) -> TokenRecord:
    return TokenRecord(row[0], row[1], row[2], row[3], json.loads(row[4]))


class SQLiteTokenStore(TokenStore):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def start(self) -> None:
        await self.db.run(lambda connection: connection.executescript(SCHEMA))

    async def put(self, record: TokenRecord, now: float) -> None:
        row = (record.key, record.purpose, record.user_id, record.expires_at)
        values = (*row, json.dumps(record.data))

        def write(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))
            sql = f"INSERT OR REPLACE INTO tokens ({COLUMNS}) VALUES (?, ?, ?, ?, ?)"
            connection.execute(sql, values)

        await self.db.transaction(write)

    async def take(self, key: str, purpose: str, now: float) -> TokenRecord | None:
        sql = f"DELETE FROM tokens WHERE key = ? AND purpose = ? RETURNING {COLUMNS}"
        row = await self.db.run(lambda c: c.execute(sql, (key, purpose)).fetchone())
        record = _record(row) if row else None
        return record if record is not None and record.expires_at > now else None

    async def get(self, key: str, purpose: str, now: float) -> TokenRecord | None:
        sql = f"SELECT {COLUMNS} FROM tokens WHERE key = ? AND purpose = ? AND expires_at > ?"
        row = await self.db.run(lambda c: c.execute(sql, (key, purpose, now)).fetchone())
        return _record(row) if row else None

    async def drop_user(self, user_id: str, purpose: str) -> int:
        sql = "DELETE FROM tokens WHERE user_id = ? AND purpose = ?"
        return await self.db.run(lambda c: c.execute(sql, (user_id, purpose)).rowcount)

    async def add(self, record: TokenRecord, now: float) -> bool:
        row = (record.key, record.purpose, record.user_id, record.expires_at)
        values = (*row, json.dumps(record.data))

        def write(connection: sqlite3.Connection) -> bool:
            expired = "DELETE FROM tokens WHERE key = ? AND expires_at <= ?"
            connection.execute(expired, (record.key, now))
            sql = f"INSERT OR IGNORE INTO tokens ({COLUMNS}) VALUES (?, ?, ?, ?, ?)"
            return connection.execute(sql, values).rowcount == 1

        return await self.db.transaction(write)

    async def count_user(self, user_id: str, purpose: str, now: float) -> int:
        sql = "SELECT COUNT(*) FROM tokens WHERE user_id = ? AND purpose = ? AND expires_at > ?"
        row = await self.db.run(lambda c: c.execute(sql, (user_id, purpose, now)).fetchone())
        return int(row[0])
