"""Passkeys in a table of the users' SQLite file."""

from __future__ import annotations

import json
import sqlite3

from ..sqlite import SQLiteDatabase
from . import Passkey, PasskeyStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS passkeys (
    credential_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    public_key BLOB NOT NULL,
    sign_count INTEGER NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL,
    transports TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS passkeys_user ON passkeys (user_id, created_at);
"""
COLUMNS = (
    "credential_id, user_id, name, public_key, sign_count, created_at, last_used_at, transports"
)


def _passkey(row: tuple[str, str, str, bytes, int, float, float | None, str]) -> Passkey:
    credential_id, user_id, name, public_key, sign_count, created_at, last_used_at, _ = row
    transports = json.loads(row[7])
    return Passkey(
        credential_id, user_id, name, public_key, sign_count, created_at, last_used_at, transports
    )


class SQLitePasskeyStore(PasskeyStore):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    async def start(self) -> None:
        await self.db.run(lambda connection: connection.executescript(SCHEMA))

    async def add(self, passkey: Passkey) -> bool:
        row = (
            passkey.credential_id, passkey.user_id, passkey.name, passkey.public_key,
            passkey.sign_count, passkey.created_at, passkey.last_used_at,
            json.dumps(passkey.transports),
        )  # fmt: skip
        sql = f"INSERT INTO passkeys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        try:
            await self.db.run(lambda connection: connection.execute(sql, row))
        except sqlite3.IntegrityError:
            return False
        return True

    async def get(self, credential_id: str) -> Passkey | None:
        sql = f"SELECT {COLUMNS} FROM passkeys WHERE credential_id = ?"
        row = await self.db.run(lambda c: c.execute(sql, (credential_id,)).fetchone())
        return _passkey(row) if row else None

    async def list_user(self, user_id: str) -> list[Passkey]:
        sql = f"SELECT {COLUMNS} FROM passkeys WHERE user_id = ? ORDER BY created_at"
        rows = await self.db.run(lambda c: c.execute(sql, (user_id,)).fetchall())
        return [_passkey(row) for row in rows]

    async def counts(self, user_ids: list[str]) -> dict[str, int]:
        if not user_ids:
            return {}
        marks = ", ".join("?" * len(user_ids))
        sql = f"SELECT user_id, COUNT(*) FROM passkeys WHERE user_id IN ({marks}) GROUP BY user_id"
        rows = await self.db.run(lambda c: c.execute(sql, user_ids).fetchall())
        return {user_id: count for user_id, count in rows}

    async def rename(self, credential_id: str, name: str) -> bool:
        sql = "UPDATE passkeys SET name = ? WHERE credential_id = ?"
        return bool(await self.db.run(lambda c: c.execute(sql, (name, credential_id)).rowcount))

    async def used(self, credential_id: str, expected: int, sign_count: int, at: float) -> bool:
        sql = (
            "UPDATE passkeys SET sign_count = ?, last_used_at = ?"
            " WHERE credential_id = ? AND sign_count = ?"
        )
        values = (sign_count, at, credential_id, expected)
        return bool(await self.db.run(lambda c: c.execute(sql, values).rowcount))

    async def remove(self, credential_id: str) -> bool:
        sql = "DELETE FROM passkeys WHERE credential_id = ?"
        return bool(await self.db.run(lambda c: c.execute(sql, (credential_id,)).rowcount))
