"""One PyMongo async client per process, created inside the running loop (after any fork)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from .errors import StoreUnavailable

DEFAULT_DATABASE = "tornado_auth"


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
        self.database_name = parse_uri(url).get("database") or DEFAULT_DATABASE
        self.client: AsyncMongoClient | None = None
        self.db: AsyncDatabase

    async def start(self) -> None:
        self.client = AsyncMongoClient(
            self.url,
            serverSelectionTimeoutMS=3000,
            connectTimeoutMS=3000,
            tz_aware=True,
        )
        self.db = self.client[self.database_name]

    async def ping(self) -> None:
        async with available(self.store):
            await self.db.command("ping")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
