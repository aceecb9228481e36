"""One SQLite database file served by one worker thread, so the event loop never blocks on it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .errors import StoreUnavailable

T = TypeVar("T")
# SQLite's page cache per connection, in KiB (SQLite's default is 2,000). Enough to keep the
# inner pages of every index of a million sessions, so that a look-up or a sweep reads from the
# file only the leaf pages it changes: a sweep of 1,000 expired sessions among a million reads
# about 1,100 pages instead of 4,200. It fills only as the file is read.
CACHE_KIB = 16384


def sqlite_path(url: str) -> str:
    """``sqlite:///var/x.db``: relative; ``sqlite:////abs/x.db``: absolute; else memory."""
    path = url.removeprefix("sqlite://")
    if path in ("", "/", "/:memory:"):
        return ":memory:"
    return path[1:] if path.startswith("/") else path


class SQLiteDatabase:
    def __init__(self, url: str, schema: str, store: str) -> None:
        self.store = store
        self.path = sqlite_path(url)
        self.schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA busy_timeout = 10000")
            if self.path != ":memory:":
                connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # REPLACE fires delete triggers too, so that counts kept by triggers stay exact
            connection.execute("PRAGMA recursive_triggers = ON")
            try:
                connection.executescript(self.schema)
            except BaseException:
                connection.close()  # no transaction of a half-run schema left holding the lock
                raise
            self._connection = connection
        return self._connection

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the database thread; errors become StoreUnavailable."""

        def call() -> T:
            self._refuse_if_closed()  # queued before close, run after it
            try:
                return work(self._connect())
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as error:
                raise StoreUnavailable(self.store, f"sqlite {self.path}: {error}") from error

        self._refuse_if_closed()
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise StoreUnavailable(self.store, f"sqlite {self.path}: closed")

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` inside BEGIN IMMEDIATE ... COMMIT, so read-modify-write is atomic."""

        def atomic(connection: sqlite3.Connection) -> T:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

        return await self.run(atomic)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)
