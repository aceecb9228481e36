"""Users in a SQLite file: the zero-setup default."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from ..audit import AuditEntry, AuditPage, BadCursor
from ..sqlite import SQLiteDatabase
from .base import EmailTaken, User, UserFilter, UserStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_login_at REAL,
    disabled INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    email_verified_at REAL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS users_created_at ON users (created_at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL,
    at REAL NOT NULL,
    user_id TEXT,
    email TEXT,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    session TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
"""
AUDIT_COLUMNS = "event, at, user_id, email, ip, user_agent, session, detail"
FIELDS = [field.name for field in dataclasses.fields(User)]
COLUMNS = ", ".join(FIELDS)


def _user(row: tuple) -> User:
    user = User(*row)
    user.disabled = bool(user.disabled)
    user.extra = json.loads(row[-1])
    return user


def _add_columns(connection: sqlite3.Connection) -> None:
    """Files made by older versions lack the generation, extra or email_verified_at columns:
    add them."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(users)")}
    if "generation" not in columns:
        connection.execute("ALTER TABLE users ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
    if "extra" not in columns:
        connection.execute("ALTER TABLE users ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")
    if "email_verified_at" not in columns:
        connection.execute("ALTER TABLE users ADD COLUMN email_verified_at REAL")


# How many audit entries there are, kept by triggers as entries are written and pruned: the
# admin's page total and the pruning by count never count a long trail.
AUDIT_COUNT = (
    "CREATE TABLE IF NOT EXISTS audit_count "
    "(id INTEGER PRIMARY KEY CHECK (id = 0), entries INTEGER NOT NULL)",
    "INSERT OR REPLACE INTO audit_count (id, entries) SELECT 0, COUNT(*) FROM audit",
    "CREATE TRIGGER IF NOT EXISTS audit_counted AFTER INSERT ON audit "
    "BEGIN UPDATE audit_count SET entries = entries + 1 WHERE id = 0; END",
    "CREATE TRIGGER IF NOT EXISTS audit_uncounted AFTER DELETE ON audit "
    "BEGIN UPDATE audit_count SET entries = entries - 1 WHERE id = 0; END",
)
AUDIT_TOTAL = "SELECT entries FROM audit_count WHERE id = 0"


def _count_audit(connection: sqlite3.Connection) -> None:
    """Files made before the audit count: count the entries once and keep the count from then on,
    in one transaction (so no entry written meanwhile is missed, by this or another process)."""
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'audit_uncounted'"
    if connection.execute(sql).fetchone() is None:
        for statement in AUDIT_COUNT:
            connection.execute(statement)


def _conditions(where: UserFilter) -> tuple[str, list[Any]]:
    """A WHERE clause (or nothing) and its values; instr() needs no escaping of % or _."""
    clauses: list[str] = []
    values: list[Any] = []
    if where.search:
        clauses.append("(instr(lower(email), ?) > 0 OR instr(lower(name), ?) > 0)")
        values += [where.search.lower()] * 2
    if where.role is not None:
        clauses.append("role = ?")
        values.append(where.role)
    if where.disabled is not None:
        clauses.append("disabled = ?")
        values.append(int(where.disabled))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), values


def _audit_entry(row: tuple) -> AuditEntry:
    event, at, user_id, email, ip, user_agent, session, detail = row
    return AuditEntry(event, at, user_id, email, ip, user_agent, session, json.loads(detail))


def _audit_id(cursor: str) -> int:
    """The entry id an audit cursor of this store names."""
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise BadCursor(cursor)
    return int(cursor)


class SQLiteUserStore(UserStore):
    name = "sqlite"

    def __init__(self, url: str) -> None:
        self.db = SQLiteDatabase(url, SCHEMA, "user")

    async def start(self) -> None:
        await self.db.run(_add_columns)
        await self.db.transaction(_count_audit)

    async def add(self, user: User) -> None:
        row = (*(getattr(user, name) for name in FIELDS[:-1]), json.dumps(user.extra))
        sql = f"INSERT INTO users ({COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})"
        try:
            await self.db.run(lambda connection: connection.execute(sql, row))
        except sqlite3.IntegrityError:
            raise EmailTaken(user.email) from None

    async def _one(self, column: str, value: str) -> User | None:
        sql = f"SELECT {COLUMNS} FROM users WHERE {column} = ?"
        row = await self.db.run(lambda connection: connection.execute(sql, (value,)).fetchone())
        return _user(row) if row else None

    async def get(self, user_id: str) -> User | None:
        return await self._one("id", str(user_id))

    async def by_email(self, email: str) -> User | None:
        return await self._one("email", str(email))

    async def page(
        self, offset: int, limit: int, where: UserFilter | None = None
    ) -> tuple[list[User], int]:
        conditions, values = _conditions(where or UserFilter())

        def read(connection: sqlite3.Connection) -> tuple[list[tuple], int]:
            sql = (
                f"SELECT {COLUMNS} FROM users{conditions} ORDER BY created_at, id LIMIT ? OFFSET ?"
            )
            rows = connection.execute(sql, (*values, limit, offset)).fetchall()
            count = f"SELECT COUNT(*) FROM users{conditions}"
            return rows, connection.execute(count, values).fetchone()[0]

        rows, total = await self.db.run(read)
        return [_user(row) for row in rows], total

    async def set(
        self,
        user_id: str,
        *,
        expect_generation: int | None = None,
        new_generation: bool = False,
        **fields: Any,
    ) -> User | None:
        unknown = set(fields) - set(FIELDS[1:]) | ({"generation", "extra"} & set(fields))
        if unknown:
            raise ValueError(f"unknown user fields: {sorted(unknown)}")
        assignments = [f"{name} = ?" for name in fields]
        if new_generation:
            assignments.append("generation = generation + 1")
        where, values = "id = ?", [*fields.values(), str(user_id)]
        if expect_generation is not None:
            where += " AND generation = ?"
            values.append(expect_generation)
        sql = f"UPDATE users SET {', '.join(assignments)} WHERE {where} RETURNING {COLUMNS}"

        def write(connection: sqlite3.Connection) -> tuple | None:
            return connection.execute(sql, values).fetchone()

        try:
            row = await self.db.run(write)
        except sqlite3.IntegrityError:
            raise EmailTaken(fields.get("email", "")) from None
        return _user(row) if row else None

    async def set_extra(self, user_id: str, values: dict[str, Any]) -> User | None:
        sql = f"UPDATE users SET extra = json_patch(extra, ?) WHERE id = ? RETURNING {COLUMNS}"
        patch = json.dumps(values)
        row = await self.db.run(
            lambda connection: connection.execute(sql, (patch, str(user_id))).fetchone()
        )
        return _user(row) if row else None

    async def count_admins(self) -> int:
        sql = "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0"
        return await self.db.run(lambda connection: connection.execute(sql).fetchone()[0])

    async def record(self, entry: AuditEntry) -> None:
        row = (
            entry.event, entry.at, entry.user_id, entry.email, entry.ip, entry.user_agent,
            entry.session, json.dumps(entry.detail),
        )  # fmt: skip
        sql = f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        await self.db.run(lambda connection: connection.execute(sql, row))

    async def audit_page(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        def read(connection: sqlite3.Connection) -> tuple[list[tuple], int]:
            sql = f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT ? OFFSET ?"
            rows = connection.execute(sql, (limit, offset)).fetchall()
            return rows, connection.execute(AUDIT_TOTAL).fetchone()[0]

        rows, total = await self.db.run(read)
        return [_audit_entry(row) for row in rows], total

    async def audit_range(
        self, limit: int, before: str | None = None, after: str | None = None
    ) -> AuditPage:
        """By id (the order entries were written in): each page is one indexed range of at most
        ``limit + 1`` rows, however deep in the trail."""
        if before is not None and after is not None:
            raise BadCursor("before and after together")
        if after is not None:  # the oldest entries newer than the cursor, then newest first
            sql = f"SELECT id, {AUDIT_COLUMNS} FROM audit WHERE id > ? ORDER BY id LIMIT ?"
            arguments: tuple = (_audit_id(after) if after else 0, limit + 1)
        elif before:
            sql = f"SELECT id, {AUDIT_COLUMNS} FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?"
            arguments = (_audit_id(before), limit + 1)
        else:
            sql = f"SELECT id, {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?"
            arguments = (limit + 1,)
        rows = await self.db.run(lambda connection: connection.execute(sql, arguments).fetchall())
        more, rows = len(rows) > limit, rows[:limit]
        if after is not None:
            rows.reverse()
        entries = [_audit_entry(row[1:]) for row in rows]
        cursors = (str(rows[0][0]), str(rows[-1][0])) if rows else ("", "")
        return AuditPage.sought(entries, cursors, more, before, after)

    async def prune_audit(self, older_than: float | None, keep: int | None, limit: int) -> int:
        def prune(connection: sqlite3.Connection) -> int:
            removed = 0
            if older_than is not None:
                sql = (
                    "DELETE FROM audit WHERE id IN "
                    "(SELECT id FROM audit WHERE at < ? ORDER BY at LIMIT ?)"
                )
                removed = connection.execute(sql, (older_than, limit)).rowcount
            if keep is not None and removed < limit:
                total = connection.execute(AUDIT_TOTAL).fetchone()[0]
                excess = min(total - keep, limit - removed)
                if excess > 0:
                    sql = "DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY id LIMIT ?)"
                    removed += connection.execute(sql, (excess,)).rowcount
            return removed

        return await self.db.run(prune)

    async def ping(self) -> None:
        await self.db.run(lambda connection: connection.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self.db.close()
