"""One PyMongo async client per store, created inside the running loop (after any fork)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from .errors import StoreUnavailable

log = logging.getLogger("tornado_auth")
DEFAULT_DATABASE = "tornado_auth"
# Fail fast when the server is down; options given in the URL win.
DEFAULT_OPTIONS: dict[str, Any] = {"serverselectiontimeoutms": 3000, "connecttimeoutms": 3000}
RETRY_SECONDS = 5


@asynccontextmanager
async def available(store: str) -> AsyncIterator[None]:
    """Turn an unreachable server into StoreUnavailable for the ``session`` or ``user`` store."""
    try:
        yield
    except (ConnectionFailure, ServerSelectionTimeoutError, AutoReconnect) as error:
        raise StoreUnavailable(store, f"mongodb: {error}") from error


class MongoDatabase:
    """The database named in the URL's path (default ``tornado_auth``)."""

    def __init__(self, url: str, store: str) -> None:
        self.store = store
        self.url = url
        parsed = parse_uri(url)
        self.database_name = parsed.get("database") or DEFAULT_DATABASE
        given = {name.lower() for name in parsed["options"]}
        self.options = {k: v for k, v in DEFAULT_OPTIONS.items() if k not in given}
        self.client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]] | None = None
        self._unavailable = "mongodb: not started"  # why there is no database
        self._setup: asyncio.Task[None] | None = None

    async def start(self, setup: Callable[[], Awaitable[None]]) -> None:
        """Connect and run ``setup`` (indexes); while the server is down, retry in background."""
        self.client = AsyncMongoClient(self.url, tz_aware=True, **self.options)
        self._db = self.client[self.database_name]
        try:
            await setup()
        except StoreUnavailable as error:
            log.warning("%s; indexes will be created when it answers", error)
            self._setup = asyncio.create_task(self._retry(setup))

    async def _retry(self, setup: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await setup()
                log.info("%s store (mongodb) is back: indexes ready", self.store)
                return
            except StoreUnavailable:
                continue

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        """The database; before start or after close, the store is unavailable (a late call,
        such as a request cut at shutdown, must not reconnect)."""
        if self._db is None:
            raise StoreUnavailable(self.store, self._unavailable)
        return self._db

    async def ping(self) -> None:
        async with available(self.store):
            await self.db.command("ping")

    async def close(self) -> None:
        if self._setup is not None:
            self._setup.cancel()
        self._unavailable = "mongodb: closed"
        if self.client is not None:
            client, self.client, self._db = self.client, None, None
            await client.close()
