"""Sessions in MongoDB: one document per session, a TTL index where the server has one, a sweep.

Counters are documents of a second collection. Events stay in this process: other processes
over the same database learn of ended sessions by checking (``live.check_interval``).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.write_concern import WriteConcern

from ..mongo import MongoDatabase, available
from .store import Backend, LocalEventBus, SessionRecord, SessionStore

log = logging.getLogger("tornado_auth.sessions")
NOT_IMPLEMENTED = 238
MAJORITY = WriteConcern(w="majority")


def _date(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _end(seconds: float) -> datetime:
    """A session's end as a date, rounded up to the millisecond a BSON date holds: the sweep,
    which compares it with the moment rounded down, never removes a session before its end."""
    return _date(math.ceil(seconds * 1000) / 1000)


def document(record: SessionRecord) -> dict[str, Any]:
    """The stored form of a session record."""
    return {
        "_id": record.key,
        "user_id": record.user_id,
        "created_at": record.created_at,
        "last_seen_at": record.last_seen_at,
        "expires": record.expires_at,
        # the session's end, as a date: the TTL index's field, and the one the count and the
        # sweep find through that index
        "expires_at": _end(min(record.expires_at, record.absolute_expires_at)),
        "absolute_expires_at": record.absolute_expires_at,
        "ttl": record.ttl,
        "ip": record.ip,
        "user_agent": record.user_agent,
        "data": record.data,
    }


def _record(doc: dict[str, Any]) -> SessionRecord:
    return SessionRecord(
        key=doc["_id"],
        created_at=doc["created_at"],
        last_seen_at=doc["last_seen_at"],
        expires_at=doc["expires"],
        absolute_expires_at=doc["absolute_expires_at"],
        ttl=doc["ttl"],
        user_id=doc.get("user_id"),
        ip=doc.get("ip", ""),
        user_agent=doc.get("user_agent", ""),
        data=doc.get("data", {}),
    )


def _of_user(user_id: str, keys: list[str]) -> dict[str, Any]:
    """These sessions of this user. The user is redundant for MongoDB (the _id index finds the
    keys), but FerretDB runs no $in in its backend: by the user, its backend's index narrows the
    delete to the user's few sessions instead of reading every session."""
    return {"user_id": user_id, "_id": {"$in": keys}}


class MongoSessionStore(SessionStore):
    name = "mongodb"

    def __init__(self, mongo: MongoDatabase, collection: str = "sessions") -> None:
        self.mongo = mongo
        self.collection_name = collection
        self.native_ttl = False

    async def start(self) -> None:
        await self.mongo.start(self._create_indexes)

    async def close(self) -> None:
        await self.mongo.close()

    async def ping(self) -> None:
        await self.mongo.ping()

    @property
    def sessions(self) -> AsyncCollection[dict[str, Any]]:
        return self.mongo.db[self.collection_name]

    @property
    def revocations(self) -> AsyncCollection[dict[str, Any]]:
        """The sessions, for deletes: acknowledged by a majority, so no failover undoes one."""
        return self.sessions.with_options(write_concern=MAJORITY)

    async def _create_indexes(self) -> None:
        async with available("session"):
            await self.sessions.create_index([("user_id", ASCENDING)])
            try:
                await self.sessions.create_index("expires_at", expireAfterSeconds=0)
                self.native_ttl = True
            except OperationFailure as error:
                if error.code != NOT_IMPLEMENTED:
                    raise
                log.info("mongodb has no TTL indexes: expired sessions go in the periodic sweep")
                await self.sessions.create_index("expires_at")

    async def load(self, key: str) -> SessionRecord | None:
        async with available("session"):
            doc = await self.sessions.find_one({"_id": key})
        return _record(doc) if doc else None

    async def create(self, record: SessionRecord) -> None:
        async with available("session"):
            await self.sessions.replace_one({"_id": record.key}, document(record), upsert=True)

    async def update(
        self,
        key: str,
        changed: dict[str, Any],
        removed: set[str],
        last_seen_at: float,
        expires_at: float,
    ) -> bool:
        update: dict[str, Any] = {
            # $max: a late write of an older expiry never moves it back
            "$max": {
                "last_seen_at": last_seen_at,
                "expires": expires_at,
                "expires_at": _end(expires_at),
            }
        }
        if changed:
            update["$set"] = {f"data.{name}": value for name, value in changed.items()}
        if removed:
            update["$unset"] = {f"data.{name}": "" for name in removed}
        async with available("session"):
            result = await self.sessions.update_one({"_id": key}, update)
        return result.matched_count == 1

    async def delete(self, key: str) -> bool:
        async with available("session"):
            result = await self.revocations.delete_one({"_id": key})
        return result.deleted_count == 1

    async def list_user(self, user_id: str) -> list[SessionRecord]:
        async with available("session"):
            docs = await self.sessions.find({"user_id": user_id}).to_list(None)
        return [_record(doc) for doc in docs]

    async def delete_user(self, user_id: str, keep: str | None = None) -> list[str]:
        query = {"user_id": user_id, "_id": {"$ne": keep}}
        async with available("session"):
            keys = [doc["_id"] for doc in await self.sessions.find(query, {"_id": 1}).to_list(None)]
            if keys:
                await self.revocations.delete_many(_of_user(user_id, keys))
        return keys

    async def trim_user(self, user_id: str, keep: int, now: float) -> list[str]:
        query = {"user_id": user_id, "expires": {"$gt": now}, "absolute_expires_at": {"$gt": now}}
        newest_first = [("created_at", -1), ("_id", 1)]
        async with available("session"):
            cursor = self.sessions.find(query, {"_id": 1}).sort(newest_first).skip(keep)
            keys = [doc["_id"] for doc in await cursor.to_list(None)]
            if keys:
                await self.revocations.delete_many(_of_user(user_id, keys))
        return keys

    async def sweep(self, now: float) -> int:
        """The sessions ended, found through the ``expires_at`` index (a MongoDB server with TTL
        indexes has removed most of them by itself)."""
        async with available("session"):
            result = await self.sessions.delete_many({"expires_at": {"$lte": _date(now)}})
        return result.deleted_count

    async def count(self, now: float) -> int:
        """The sessions not ended: a count of the ``expires_at`` index's range, which MongoDB
        answers from the index alone (FerretDB reads every session)."""
        async with available("session"):
            return await self.sessions.count_documents({"expires_at": {"$gt": _date(now)}})


class MongoCounters:
    def __init__(self, mongo: MongoDatabase, collection: str = "sessions_counters") -> None:
        self.mongo = mongo
        self.collection_name = collection

    @property
    def counters(self) -> AsyncCollection[dict[str, Any]]:
        return self.mongo.db[self.collection_name]

    async def hit(self, name: str, window: float, now: float) -> tuple[int, float]:
        async with available("session"):
            while True:
                doc = await self.counters.find_one_and_update(
                    {"_id": name, "ends_at": {"$gt": now}},
                    {"$inc": {"count": 1}},
                    return_document=ReturnDocument.AFTER,
                )
                if doc is not None:
                    return doc["count"], doc["ends_at"]
                # No open window: start one, unless a concurrent hit just did (then count in it).
                ends_at = now + window
                fresh = {"_id": name, "count": 1, "ends_at": ends_at}
                replaced = await self.counters.replace_one(
                    {"_id": name, "ends_at": {"$lte": now}}, fresh
                )
                if replaced.matched_count:
                    return 1, ends_at
                try:
                    await self.counters.insert_one(fresh)
                except DuplicateKeyError:
                    continue
                return 1, ends_at

    async def peek(self, name: str, now: float) -> tuple[int, float]:
        async with available("session"):
            doc = await self.counters.find_one({"_id": name, "ends_at": {"$gt": now}})
        return (doc["count"], doc["ends_at"]) if doc else (0, now)

    async def release(self, name: str, now: float) -> None:
        async with available("session"):
            await self.counters.update_one(
                {"_id": name, "ends_at": {"$gt": now}, "count": {"$gt": 0}}, {"$inc": {"count": -1}}
            )

    async def clear(self, name: str) -> None:
        async with available("session"):
            await self.counters.delete_one({"_id": name})

    async def sweep(self, now: float) -> int:
        async with available("session"):
            result = await self.counters.delete_many({"ends_at": {"$lte": now}})
        return result.deleted_count


def mongo_backend(url: str) -> Backend:
    mongo = MongoDatabase(url, "session")
    return Backend(MongoSessionStore(mongo), MongoCounters(mongo), LocalEventBus(shared=False))
