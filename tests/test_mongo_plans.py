"""Every query the MongoDB session and user stores send on a request's path is served by an
index of the test's MongoDB wire-protocol server (mongod when present, else FerretDB on
PostgreSQL, whose plans are PostgreSQL's): their latency stays flat as the collections grow
(bench/mongo_scale.py measures it). The sweep and the live count read every session by nature,
and are left out."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from bench.mongo_scale import PER_USER, Population, Recorder, as_finds, plan_summary
from tornado_auth.sessions import backend_for_url
from tornado_auth.sessions.mongo import MongoSessionStore
from tornado_auth.users import store_for_url
from tornado_auth.users.mongo import MongoUserStore

from .conftest import MONGO_URL, require_service

SESSIONS = 4000
INDEXED = ("IXSCAN", "IDHACK", "EXPRESS", "Index Scan")  # mongod's stages, PostgreSQL's nodes


class Stores:
    def __init__(self, sessions: MongoSessionStore, users: MongoUserStore, people: Population):
        self.sessions, self.users, self.people = sessions, users, people
        self.recorder = Recorder()
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)

    async def plans(self, call: Callable[[], Awaitable[Any]]) -> list[dict[str, Any]]:
        """The plan of each query ``call`` sends."""
        with self.recorder.recording() as recorded:
            await call()
        assert recorded, "no query sent"
        plans = []
        for database, command in recorded:
            for find in as_finds(command):
                explain = await self.client[database].command({"explain": find})
                if isinstance(explain.get("queryPlanner", {}).get("Plan"), list):
                    pytest.skip("FerretDB on SQLite: none of its indexes serves its queries")
                plans.append({"command": command} | plan_summary(explain))
        return plans


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    require_service("mongodb")
    url = f"{MONGO_URL}/ta_test_plans_{uuid.uuid4().hex[:12]}"
    backend = backend_for_url(url)
    users = store_for_url(url)
    assert isinstance(backend.store, MongoSessionStore) and isinstance(users, MongoUserStore)
    people = Population(time.time())
    found = Stores(backend.store, users, people)
    for store in (backend.store, users):
        store.mongo.options["event_listeners"] = [found.recorder]
    await backend.start()
    await users.start()
    try:
        await people.grow(backend.store, users, SESSIONS)
        if "ferretdbVersion" in await found.client.admin.command("buildInfo"):
            # statistics for PostgreSQL's planner now, as autovacuum would make them soon
            # (FerretDB's compact is VACUUM ANALYZE)
            for collection in (backend.store.sessions, users.users):
                await collection.database.command("compact", collection.name)
        yield found
    finally:
        await backend.close()
        await users.close()
        await found.client.drop_database(url.rsplit("/", 1)[1])
        await found.client.close()


async def test_the_stores_queries_on_a_requests_path_are_served_by_indexes(stores: Stores):
    sessions, users, people = stores.sessions, stores.users, stores.people
    key, user = people.keys[7], people.users[7]
    now = time.time()
    sign_in = people.record(0, user)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "load": lambda: sessions.load(key),
        "touch": lambda: sessions.update(key, {}, set(), now, now + 60),
        "save": lambda: sessions.update(key, {"n": 1}, set(), now, now + 60),
        "create": lambda: sessions.create(sign_in),
        "trim_user": lambda: sessions.trim_user(user.id, 1, now),  # ends all but one
        "list_user": lambda: sessions.list_user(user.id),
        "delete_user": lambda: sessions.delete_user(people.users[8].id, people.keys[32]),
        "delete": lambda: sessions.delete(key),
        "user_get": lambda: users.get(user.id),
        "user_by_email": lambda: users.by_email(user.email),
        "user_set": lambda: users.set(user.id, name="Renamed", expect_generation=0),
    }
    scans = {}
    for name, call in calls.items():
        for plan in await stores.plans(call):
            if not any(stage in plan["plan"] for stage in INDEXED):
                scans[name] = plan
    assert not scans, scans
    assert len(await sessions.list_user(user.id)) == 1
    assert [r.key for r in await sessions.list_user(people.users[8].id)] == [people.keys[32]]
    assert PER_USER == 4  # the keys above: user n holds keys 4n to 4n + 3
