"""Token records in a collection beside the users' (FerretDB v1 has no TTL indexes: expired
records are removed as new ones are stored)."""

from __future__ import annotations

import logging
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from ..errors import StoreUnavailable
from ..mongo import MongoDatabase, available
from . import TokenRecord, TokenStore

log = logging.getLogger("tornado_auth")


def _document(record: TokenRecord) -> dict[str, Any]:
    return {
        "_id": record.key,
        "purpose": record.purpose,
        "user_id": record.user_id,
        "expires_at": record.expires_at,
        "data": record.data,
    }


def _record(doc: dict[str, Any]) -> TokenRecord:
    return TokenRecord(doc["_id"], doc["purpose"], doc["user_id"], doc["expires_at"], doc["data"])


class MongoTokenStore(TokenStore):
    def __init__(self, mongo: MongoDatabase, collection: str) -> None:
        self.mongo = mongo
        self.collection_name = collection

    @property
    def tokens(self) -> AsyncCollection[dict[str, Any]]:
        return self.mongo.db[self.collection_name]

    async def start(self) -> None:
        """Create the indexes (they only speed lookups up: a server that is down is not fatal)."""
        try:
            async with available("user"):
                await self.tokens.create_index([("user_id", ASCENDING), ("purpose", ASCENDING)])
                await self.tokens.create_index([("expires_at", ASCENDING)])
        except StoreUnavailable as error:
            log.warning("token indexes not created: %s", error)

    async def put(self, record: TokenRecord, now: float) -> None:
        doc = _document(record)
        async with available("user"):
            await self.tokens.delete_many({"expires_at": {"$lte": now}})
            await self.tokens.replace_one({"_id": record.key}, doc, upsert=True)

    async def take(self, key: str, purpose: str, now: float) -> TokenRecord | None:
        async with available("user"):
            doc = await self.tokens.find_one_and_delete({"_id": key, "purpose": purpose})
        record = _record(doc) if doc else None
        return record if record is not None and record.expires_at > now else None

    async def get(self, key: str, purpose: str, now: float) -> TokenRecord | None:
        query = {"_id": key, "purpose": purpose, "expires_at": {"$gt": now}}
        async with available("user"):
            doc = await self.tokens.find_one(query)
        return _record(doc) if doc else None

    async def drop_user(self, user_id: str, purpose: str) -> int:
        async with available("user"):
            result = await self.tokens.delete_many({"user_id": user_id, "purpose": purpose})
        return result.deleted_count

    async def add(self, record: TokenRecord, now: float) -> bool:
        async with available("user"):
            await self.tokens.delete_one({"_id": record.key, "expires_at": {"$lte": now}})
            try:
                await self.tokens.insert_one(_document(record))
            except DuplicateKeyError:
                return False
        return True

    async def count_user(self, user_id: str, purpose: str, now: float) -> int:
        query = {"user_id": user_id, "purpose": purpose, "expires_at": {"$gt": now}}
        async with available("user"):
            return await self.tokens.count_documents(query)
