"""Passkeys in a collection beside the users', keyed by credential id."""

from __future__ import annotations

import logging
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from ..errors import StoreUnavailable
from ..mongo import MongoDatabase, available
from . import Passkey, PasskeyStore

log = logging.getLogger("tornado_auth")


def _passkey(doc: dict[str, Any]) -> Passkey:
    return Passkey(
        credential_id=doc["_id"],
        user_id=doc["user_id"],
        name=doc["name"],
        public_key=bytes(doc["public_key"]),
        sign_count=doc["sign_count"],
        created_at=doc["created_at"],
        last_used_at=doc.get("last_used_at"),
        transports=list(doc.get("transports", [])),
    )


class MongoPasskeyStore(PasskeyStore):
    def __init__(self, mongo: MongoDatabase, collection: str) -> None:
        self.mongo = mongo
        self.collection_name = collection

    @property
    def passkeys(self) -> AsyncCollection[dict[str, Any]]:
        return self.mongo.db[self.collection_name]

    async def start(self) -> None:
        """Create the index (it only speeds listings up: a server that is down is not fatal)."""
        try:
            async with available("user"):
                order = [("user_id", ASCENDING), ("created_at", ASCENDING)]
                await self.passkeys.create_index(order)
        except StoreUnavailable as error:
            log.warning("passkey index not created: %s", error)

    async def add(self, passkey: Passkey) -> bool:
        doc = {
            "_id": passkey.credential_id,
            "user_id": passkey.user_id,
            "name": passkey.name,
            "public_key": passkey.public_key,
            "sign_count": passkey.sign_count,
            "created_at": passkey.created_at,
            "last_used_at": passkey.last_used_at,
            "transports": passkey.transports,
        }
        async with available("user"):
            try:
                await self.passkeys.insert_one(doc)
            except DuplicateKeyError:
                return False
        return True

    async def get(self, credential_id: str) -> Passkey | None:
        async with available("user"):
            doc = await self.passkeys.find_one({"_id": credential_id})
        return _passkey(doc) if doc else None

    async def list_user(self, user_id: str) -> list[Passkey]:
        async with available("user"):
            cursor = self.passkeys.find({"user_id": user_id}).sort("created_at", ASCENDING)
            return [_passkey(doc) async for doc in cursor]

    async def counts(self, user_ids: list[str]) -> dict[str, int]:
        if not user_ids:
            return {}
        pipeline: list[dict[str, Any]] = [
            {"$match": {"user_id": {"$in": user_ids}}},
            {"$group": {"_id": "$user_id", "count": {"$sum": 1}}},
        ]
        async with available("user"):
            cursor = await self.passkeys.aggregate(pipeline)
            return {doc["_id"]: doc["count"] async for doc in cursor}

    async def rename(self, credential_id: str, name: str) -> bool:
        async with available("user"):
            change = {"$set": {"name": name}}
            result = await self.passkeys.update_one({"_id": credential_id}, change)
        return result.matched_count > 0

    async def used(self, credential_id: str, expected: int, sign_count: int, at: float) -> bool:
        query = {"_id": credential_id, "sign_count": expected}
        change = {"$set": {"sign_count": sign_count, "last_used_at": at}}
        async with available("user"):
            result = await self.passkeys.update_one(query, change)
        return result.matched_count > 0

    async def remove(self, credential_id: str) -> bool:
        async with available("user"):
            result = await self.passkeys.delete_one({"_id": credential_id})
        return result.deleted_count > 0
