"""Where the notes live: in the users' MongoDB database, or in a SQLite file next to theirs."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from tornado_auth import Settings, StoreUnavailable

T = TypeVar("T")
LIMIT = 200  # notes shown at once
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author TEXT NOT NULL,
    colour TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_created ON notes (created_at);
"""


@dataclass(frozen=True, slots=True)
class Note:
    id: str
    text: str
    author_id: str  # "" for the notes the app writes itself (the welcome note)
    author: str
    colour: str
    created_at: float

    @classmethod
    def new(cls, text: str, author_id: str, author: str, colour: str) -> Note:
        return cls(uuid.uuid4().hex, text, author_id, author, colour, time.time())

    def public(self) -> dict[str, Any]:
        """The note as the API and the socket show it."""
        return {
            "id": self.id,
            "text": self.text,
            "authorId": self.author_id,
            "author": self.author,
            "colour": self.colour,
            "createdAt": self.created_at,
        }


FIELDS = [field.name for field in dataclasses.fields(Note)]


class NotesStore(Protocol):
    async def start(self) -> None: ...

    async def add(self, note: Note) -> None: ...

    async def get(self, note_id: str) -> Note | None: ...

    async def remove(self, note_id: str) -> bool:
        """Whether the note was there."""
        ...

    async def latest(self, newest_first: bool) -> list[Note]:
        """The most recent notes (at most LIMIT), in the order asked for."""
        ...

    async def count_by_author(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


class SQLiteNotes:
    """Notes in a SQLite file, every call on one worker thread so the loop never blocks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notes")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._closed:  # queued before close, run after it
                raise StoreUnavailable("notes", f"sqlite {self.path}: closed")
            if self._connection is None:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._connection = sqlite3.connect(self.path, isolation_level=None)
                self._connection.executescript(SQLITE_SCHEMA)
            try:
                return work(self._connection)
            except sqlite3.OperationalError as error:
                raise StoreUnavailable("notes", f"sqlite {self.path}: {error}") from error

        if self._closed:
            raise StoreUnavailable("notes", f"sqlite {self.path}: closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def start(self) -> None:
        await self._run(lambda db: None)

    async def add(self, note: Note) -> None:
        row = (note.id, note.text, note.author_id, note.author, note.colour, note.created_at)
        await self._run(lambda db: db.execute("INSERT INTO notes VALUES (?, ?, ?, ?, ?, ?)", row))

    async def get(self, note_id: str) -> Note | None:
        sql = "SELECT * FROM notes WHERE id = ?"
        row = await self._run(lambda db: db.execute(sql, (note_id,)).fetchone())
        return Note(*row) if row else None

    async def remove(self, note_id: str) -> bool:
        sql = "DELETE FROM notes WHERE id = ?"
        return await self._run(lambda db: db.execute(sql, (note_id,)).rowcount) > 0

    async def latest(self, newest_first: bool) -> list[Note]:
        sql = "SELECT * FROM notes ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (LIMIT,)).fetchall())
        notes = [Note(*row) for row in rows]
        return notes if newest_first else notes[::-1]

    async def count_by_author(self) -> dict[str, int]:
        sql = "SELECT author, COUNT(*) FROM notes GROUP BY author"
        return dict(await self._run(lambda db: db.execute(sql).fetchall()))

    async def close(self) -> None:
        if self._closed:
            return

        def shut() -> None:
            if self._connection is not None:
                self._connection.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._closed = True
        self._executor.shutdown()


class MongoNotes:
    """Notes in the ``notes`` collection of the users' MongoDB database."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def start(self) -> None:
        # Created here, inside the running loop; fail fast while the server is down.
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.url, serverSelectionTimeoutMS=3000
        )
        self.notes = self.client.get_default_database("notes").notes
        async with unavailable():
            await self.notes.create_index("created_at")

    async def add(self, note: Note) -> None:
        async with unavailable():
            await self.notes.insert_one(_document(note))

    async def get(self, note_id: str) -> Note | None:
        async with unavailable():
            doc = await self.notes.find_one({"_id": note_id})
        return _note(doc) if doc else None

    async def remove(self, note_id: str) -> bool:
        async with unavailable():
            result = await self.notes.delete_one({"_id": note_id})
        return result.deleted_count > 0

    async def latest(self, newest_first: bool) -> list[Note]:
        cursor = self.notes.find().sort([("created_at", -1), ("_id", -1)]).limit(LIMIT)
        async with unavailable():
            notes = [_note(doc) async for doc in cursor]
        return notes if newest_first else notes[::-1]

    async def count_by_author(self) -> dict[str, int]:
        pipeline = [{"$group": {"_id": "$author", "count": {"$sum": 1}}}]
        async with unavailable():
            cursor = await self.notes.aggregate(pipeline)
            return {doc["_id"]: doc["count"] async for doc in cursor}

    async def close(self) -> None:
        await self.client.close()


@asynccontextmanager
async def unavailable() -> AsyncIterator[None]:
    """MongoDB errors become StoreUnavailable: the client gets a 503, never a traceback."""
    try:
        yield
    except PyMongoError as error:
        raise StoreUnavailable("notes", f"mongodb: {error}") from error


def _document(note: Note) -> dict[str, Any]:
    doc = dataclasses.asdict(note)
    doc["_id"] = doc.pop("id")
    return doc


def _note(doc: dict[str, Any]) -> Note:
    return Note(id=doc["_id"], **{name: doc[name] for name in FIELDS if name != "id"})


def notes_store(settings: Settings) -> NotesStore:
    """The users' MongoDB database when users live in MongoDB, else ``notes.db`` next to the
    users' SQLite file."""
    users = settings["users.url"]
    if users.startswith(("mongodb://", "mongodb+srv://")):
        return MongoNotes(users)
    path = users.removeprefix("sqlite://").removeprefix("/")  # sqlite:////abs: /abs
    return SQLiteNotes(str(Path(path).with_name("notes.db")))
