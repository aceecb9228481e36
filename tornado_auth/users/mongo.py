"""Users in MongoDB, unique by normalised email."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.write_concern import WriteConcern

from ..audit import AuditEntry, AuditPage, BadCursor
from ..mongo import MongoDatabase, available
from .base import EmailTaken, User, UserFilter, UserStore

MAJORITY = WriteConcern(w="majority")
AUDIT_ORDER = [("at", ASCENDING), ("_id", ASCENDING)]  # oldest first (its index serves pages too)
FERRETDB_DUPLICATE = ("UNIQUE constraint failed", "(SQLSTATE 23505)")
FIELDS = [field.name for field in dataclasses.fields(User) if field.name != "id"]


def _user(doc: dict[str, Any]) -> User:
    # Fields a document lacks keep their defaults: users stored by 0.2 have no generation.
    return User(id=doc["_id"], **{name: doc[name] for name in FIELDS if name in doc})


def document(user: User) -> dict[str, Any]:
    """The stored form of a user."""
    return {"_id": user.id, **{name: getattr(user, name) for name in FIELDS}}


def _query(where: UserFilter) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if where.search:
        pattern = {"$regex": re.escape(where.search), "$options": "i"}
        query["$or"] = [{"email": pattern}, {"name": pattern}]
    if where.role is not None:
        query["role"] = where.role
    if where.disabled is not None:
        query["disabled"] = where.disabled
    return query


AUDIT_FIELDS = [field.name for field in dataclasses.fields(AuditEntry)]


def _audit_entry(doc: dict[str, Any]) -> AuditEntry:
    # a field missing from an older document reads as None
    fields: dict[str, Any] = {name: doc.get(name) for name in AUDIT_FIELDS}
    return AuditEntry(**fields)


def _audit_cursor(doc: dict[str, Any]) -> str:
    return f"{float(doc['at'])!r}_{doc['_id']}"


def _audit_position(cursor: str) -> tuple[float, ObjectId]:
    """The (at, _id) an audit cursor of this store names."""
    at, _, _id = cursor.rpartition("_")
    try:
        when = float(at)
    except ValueError:
        raise BadCursor(cursor) from None
    if not math.isfinite(when) or not ObjectId.is_valid(_id) or len(_id) != 24:
        raise BadCursor(cursor)
    return when, ObjectId(_id)


class MongoUserStore(UserStore):
    name = "mongodb"

    def __init__(self, url: str, collection: str = "users") -> None:
        self.mongo = MongoDatabase(url, "user")
        self.collection_name = collection

    async def start(self) -> None:
        await self.mongo.start(self._create_indexes)

    @property
    def users(self) -> AsyncCollection[dict[str, Any]]:
        return self.mongo.db[self.collection_name]

    async def _create_indexes(self) -> None:
        async with available("user"):
            await self.users.create_index([("email", ASCENDING)], unique=True)
            await self.users.create_index([("created_at", ASCENDING)])
            await self.audit.create_index(AUDIT_ORDER)

    async def add(self, user: User) -> None:
        async with available("user"):
            try:
                await self.users.insert_one(document(user))
            except DuplicateKeyError:
                raise EmailTaken(user.email) from None

    async def get(self, user_id: str) -> User | None:
        async with available("user"):
            doc = await self.users.find_one({"_id": str(user_id)})
        return _user(doc) if doc else None

    async def by_email(self, email: str) -> User | None:
        if "\x00" in email:
            # No stored address holds a NUL (registration refuses control characters), and
            # FerretDB on PostgreSQL refuses to look one up: no such user.
            return None
        async with available("user"):
            doc = await self.users.find_one({"email": str(email)})
        return _user(doc) if doc else None

    async def page(
        self, offset: int, limit: int, where: UserFilter | None = None
    ) -> tuple[list[User], int]:
        query = _query(where or UserFilter())
        async with available("user"):
            order = [("created_at", ASCENDING), ("_id", ASCENDING)]  # unique: pages never overlap
            cursor = self.users.find(query).sort(order).skip(offset).limit(limit)
            docs = await cursor.to_list(None)
            total = await self.users.count_documents(query)
        return [_user(doc) for doc in docs], total

    async def set(
        self,
        user_id: str,
        *,
        expect_generation: int | None = None,
        new_generation: bool = False,
        **fields: Any,
    ) -> User | None:
        unknown = set(fields) - set(FIELDS) | ({"generation", "extra"} & set(fields))
        if unknown:
            raise ValueError(f"unknown user fields: {sorted(unknown)}")
        match: dict[str, Any] = {"_id": str(user_id)}
        if expect_generation is not None:
            # A user stored by 0.2 has no generation field: that is generation 0.
            match["generation"] = expect_generation if expect_generation else {"$in": [0, None]}
        change: dict[str, Any] = {"$set": fields} if fields else {}
        if new_generation:
            change["$inc"] = {"generation": 1}
        async with available("user"):
            try:  # role and disable changes must survive a failover: majority
                doc = await self.users.with_options(write_concern=MAJORITY).find_one_and_update(
                    match, change, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError:
                raise EmailTaken(fields.get("email", "")) from None
            except OperationFailure as error:
                # FerretDB v1 reports a unique-index violation in an update as code 1, with its
                # backend's message (SQLite's or PostgreSQL's).
                if not any(marker in str(error) for marker in FERRETDB_DUPLICATE):
                    raise
                raise EmailTaken(fields.get("email", "")) from None
        return _user(doc) if doc else None

    async def set_extra(self, user_id: str, values: dict[str, Any]) -> User | None:
        change: dict[str, Any] = {}
        for name, value in values.items():
            if value is None:
                change.setdefault("$unset", {})[f"extra.{name}"] = ""
            else:
                change.setdefault("$set", {})[f"extra.{name}"] = value
        if not change:
            return await self.get(user_id)
        async with available("user"):
            doc = await self.users.find_one_and_update(
                {"_id": str(user_id)}, change, return_document=ReturnDocument.AFTER
            )
        return _user(doc) if doc else None

    async def count_admins(self) -> int:
        async with available("user"):
            return await self.users.count_documents({"role": "admin", "disabled": False})

    @property
    def audit(self) -> AsyncCollection[dict[str, Any]]:
        return self.mongo.db[f"{self.collection_name}_audit"]

    async def record(self, entry: AuditEntry) -> None:
        async with available("user"):
            await self.audit.insert_one(dataclasses.asdict(entry))

    async def audit_page(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        order = [("at", DESCENDING), ("_id", DESCENDING)]
        async with available("user"):
            docs = await self.audit.find({}).sort(order).skip(offset).limit(limit).to_list(None)
            # the collection's metadata count: no scan (exact, but after an unclean shutdown)
            total = await self.audit.estimated_document_count()
        return [_audit_entry(doc) for doc in docs], total

    async def audit_range(
        self, limit: int, before: str | None = None, after: str | None = None
    ) -> AuditPage:
        """By (at, _id), the audit index's order: each page is one indexed range."""
        if before is not None and after is not None:
            raise BadCursor("before and after together")
        query: dict[str, Any] = {}
        cursor = before or after
        if cursor:
            at, _id = _audit_position(cursor)
            side = "$gt" if after is not None else "$lt"
            query = {"$or": [{"at": {side: at}}, {"at": at, "_id": {side: _id}}]}
        way = ASCENDING if after is not None else DESCENDING
        async with available("user"):
            found = self.audit.find(query).sort([("at", way), ("_id", way)]).limit(limit + 1)
            docs = await found.to_list(None)
        more, docs = len(docs) > limit, docs[:limit]
        if after is not None:
            docs.reverse()
        entries = [_audit_entry(doc) for doc in docs]
        cursors = (_audit_cursor(docs[0]), _audit_cursor(docs[-1])) if docs else ("", "")
        return AuditPage.sought(entries, cursors, more, before, after)

    async def prune_audit(self, older_than: float | None, keep: int | None, limit: int) -> int:
        removed = 0
        async with available("user"):
            if older_than is not None:
                removed = await self._delete_oldest(limit, {"at": {"$lt": older_than}})
            if keep is not None and removed < limit:
                # The collection's metadata count: no scan, and exact enough for a retention limit.
                excess = await self.audit.estimated_document_count() - keep
                if excess > 0:
                    removed += await self._delete_oldest(min(excess, limit - removed))
        return removed

    async def _delete_oldest(self, limit: int, query: dict[str, Any] | None = None) -> int:
        """Delete the ``limit`` oldest entries matching ``query``. delete_many takes no limit, so
        the delete is the (at, _id) range up to the limit-th oldest: one indexed range."""
        query = query or {}
        cursor = self.audit.find(query, {"at": 1}).sort(AUDIT_ORDER).skip(limit - 1).limit(1)
        last = await cursor.to_list(None)
        if last:
            at, _id = last[0]["at"], last[0]["_id"]
            up_to = {"$or": [{"at": {"$lt": at}}, {"at": at, "_id": {"$lte": _id}}]}
            query = {"$and": [query, up_to]}
        return (await self.audit.delete_many(query)).deleted_count

    async def ping(self) -> None:
        await self.mongo.ping()

    async def close(self) -> None:
        await self.mongo.close()
