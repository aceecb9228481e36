"""The services that scripts/services provides really work: Redis answers, MongoDB stores."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from .conftest import MONGO_URL, REDIS_URL, require_service


async def test_redis_answers_and_stores():
    require_service("redis")
    client = aioredis.from_url(REDIS_URL)
    key = f"test:smoke:{uuid.uuid4().hex}"
    try:
        assert await client.ping() is True
        await client.set(key, "value", ex=60)
        assert await client.get(key) == b"value"
    finally:
        await client.delete(key)
        await client.aclose()


async def test_async_mongo_client_inserts_finds_and_enforces_unique_index():
    require_service("mongodb")
    client = AsyncMongoClient(MONGO_URL, serverSelectionTimeoutMS=3000)
    name = f"ta_smoke_{uuid.uuid4().hex[:12]}"
    try:
        collection = client[name]["things"]
        await collection.create_index("email", unique=True)
        await collection.insert_one({"email": "a@example.com", "n": 1})
        found = await collection.find_one({"email": "a@example.com"})
        assert found["n"] == 1
        with pytest.raises(DuplicateKeyError):
            await collection.insert_one({"email": "a@example.com", "n": 2})
        assert await collection.count_documents({}) == 1
    finally:
        await client.drop_database(name)
        await client.close()
