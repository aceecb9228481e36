"""The services that scripts/services provides really work, and it starts and stops them."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import DuplicateKeyError

from tools import probes, services

from .conftest import MONGO_URL, REDIS_URL, free_port, require_service

REPO = Path(__file__).resolve().parent.parent
URLS = (REDIS_URL, MONGO_URL)


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


def test_probes_speak_redis_and_the_mongodb_wire_protocol():
    require_service("redis")
    require_service("mongodb")
    redis_port, mongo_port = (int(url.rsplit(":", 1)[1].split("/")[0]) for url in URLS)
    key = f"test:smoke:{uuid.uuid4().hex}"
    assert probes.redis_command(redis_port, "SET", key, "value", "EX", 60) == "OK"
    assert probes.redis_command(redis_port, "GET", key) == "value"
    assert probes.redis_command(redis_port, "DEL", key) == 1
    with pytest.raises(probes.ServiceError, match="unknown command"):
        probes.redis_command(redis_port, "NOSUCHCOMMAND")
    hello = probes.mongo_command(mongo_port, {"hello": 1})
    assert hello["ok"] == 1 and hello["isWritablePrimary"] is True
    assert hello["maxWireVersion"] >= 6  # OP_MSG needs 6 (MongoDB 3.6)
    # each probe says no, quickly, to the other protocol and to a closed port
    closed = free_port()
    assert probes.redis_answers(redis_port) and probes.mongo_answers(mongo_port)
    assert not probes.redis_answers(mongo_port) and not probes.mongo_answers(redis_port)
    assert not probes.redis_answers(closed) and not probes.mongo_answers(closed)


def private_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 22700)  # below the ephemeral range, bus ports too
        if port not in ports and not any(probes.listening(p) for p in (port, port + 10000)):
            ports.append(port)
    return ports


def run_services(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "services"), command],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_up_starts_what_is_missing_reuses_what_answers_and_down_stops_only_its_own(tmp_path):
    redis, mongo, master, replica, *others = private_ports(9)
    cluster, sentinels = others[:3], others[3:]
    env = os.environ | {
        "REDIS_PORT": str(redis),
        "MONGO_PORT": str(mongo),
        "REDIS_CLUSTER_PORTS": " ".join(map(str, cluster)),
        "REDIS_SENTINEL_MASTER_PORT": str(master),
        "REDIS_SENTINEL_REPLICA_PORT": str(replica),
        "REDIS_SENTINEL_PORTS": " ".join(map(str, sentinels)),
        "TORNADO_AUTH_STATE_DIR": str(tmp_path / "state"),
    }
    # a Redis that someone else started: up must use it and down must leave it running
    theirs = services.redis_server(redis, tmp_path, tmp_path / "theirs.log")
    try:
        started = run_services("up", env)
        assert started.returncode == 0, started.stderr
        assert f"redis: reusing the server already answering on 127.0.0.1:{redis}" in started.stdout
        for name in ("mongodb", "redis-cluster", "redis-sentinel"):
            assert f"{name}: started" in started.stdout
        assert probes.mongo_answers(mongo) and probes.cluster_answers(cluster)
        assert probes.sentinel_answers(sentinels, "mymaster")
        assert probes.sentinel_master(sentinels, "mymaster") == master

        again = run_services("up", env)
        assert again.returncode == 0 and "mongodb: already running" in again.stdout

        status = run_services("status", env)
        assert status.returncode == 0
        assert status.stdout.count(" answers ") == 4, status.stdout

        stopped = run_services("down", env)
        assert stopped.returncode == 0, stopped.stderr
        assert not any(probes.listening(port) for port in (mongo, *cluster, master, *sentinels))
        assert probes.redis_answers(redis)  # not ours: still running
        assert not list((tmp_path / "state").glob("*.state"))
        status = run_services("status", env)
        assert status.returncode == 1 and "mongodb        127.0.0.1" in status.stdout
    finally:
        theirs.terminate()
        theirs.wait()
        run_services("down", env)


def test_under_ci_each_service_that_cannot_start_fails_the_run_and_is_named(tmp_path):
    port = private_ports(1)[0]  # a Redis: not a MongoDB, a cluster node or a sentinel
    redis = services.redis_server(port, tmp_path, tmp_path / "redis.log")
    names = ("REDIS_PORT", "MONGO_PORT", "REDIS_CLUSTER_PORTS", "REDIS_SENTINEL_PORTS")
    env = os.environ | dict.fromkeys(names, str(port))
    try:
        ci = run_services("up", env | {"CI": "true", "TORNADO_AUTH_STATE_DIR": str(tmp_path)})
        local = run_services("up", env | {"CI": "", "TORNADO_AUTH_STATE_DIR": str(tmp_path)})
    finally:
        redis.terminate()
        redis.wait()
    assert ci.returncode == 1 and local.returncode == 1  # MongoDB is needed everywhere
    for name in ("mongodb", "redis-cluster", "redis-sentinel"):
        assert f"services: {name} could not be started: port {port} is taken" in ci.stderr
    # outside CI the Cluster and Sentinel are optional: their tests skip
    assert "redis-cluster: its tests will skip" in local.stderr
    assert "its tests will skip" not in ci.stderr


def private_ferretdb(
    data: Path, backend: str, port: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    """The FerretDB runner on ``backend``, its data in ``data``, and its URL (skipped outside CI
    when it cannot be had, or when scripts/services would run mongod instead)."""
    if shutil.which("mongod"):
        pytest.skip("mongod is on PATH: scripts/services runs it, not FerretDB")
    port = port or free_port()
    try:
        process = services.mongodb_server(port, data, data.with_suffix(".log"), backend=backend)
    except probes.ServiceError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"FerretDB on {backend}: {error}")
    return process, f"mongodb://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


def cluster_processes(data: Path) -> list[int]:
    """The PostgreSQL processes whose command line names ``data``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            words = cmdline.read_bytes()
            if str(data).encode() in words and b"postgres" in words:
                found.append(int(cmdline.parent.name))
    return found


def test_ferretdb_on_postgresql_finds_by_index_writes_atomically_and_keeps_its_data(tmp_path):
    data = tmp_path / "mongo"
    process, url = private_ferretdb(data, "postgresql")
    try:
        assert services.mongodb_kind(process) == "ferretdb-postgresql"
        with MongoClient(url) as client:
            things = client.smoke.things
            things.create_index("owner")
            # enough documents for PostgreSQL to prefer an index to reading the table
            things.insert_many([{"_id": f"k{n}", "owner": f"o{n}", "n": 0} for n in range(5000)])
            # FerretDB's own btree indexes cannot serve its "@>" lookups: the runner's GIN
            # companions do, for _id and for each indexed field
            for query in ({"_id": "k7"}, {"owner": "o7"}):
                explain = client.smoke.command({"explain": {"find": "things", "filter": query}})
                assert explain["filterPushdown"] is True
                plan = str(explain["queryPlanner"])
                assert "Index Scan" in plan and "_gin" in plan, plan

            # the serialising proxy makes single-document updates atomic across connections
            def bump() -> None:
                own: MongoClient[dict[str, Any]]
                with MongoClient(url) as own:
                    for _ in range(20):
                        own.smoke.things.find_one_and_update({"_id": "k1"}, {"$inc": {"n": 1}})

            workers = [threading.Thread(target=bump) for _ in range(5)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            assert things.find_one({"_id": "k1"})["n"] == 100
    finally:
        stop(process)
    # the cluster stopped with the runner, and a runner on the same directory finds the data
    assert cluster_processes(data) == []
    port = int(url.rsplit(":", 1)[1])
    process, _ = private_ferretdb(data, "postgresql", port)
    try:
        with MongoClient(url) as client:
            assert client.smoke.things.count_documents({}) == 5000
    finally:
        stop(process)
    assert cluster_processes(data) == []


def test_ferretdb_on_sqlite_can_still_be_chosen(tmp_path):
    process, url = private_ferretdb(tmp_path / "mongo", "sqlite")
    try:
        assert services.mongodb_kind(process) == "ferretdb-sqlite"
        with MongoClient(url) as client:
            client.smoke.things.insert_one({"_id": "k"})
            assert client.smoke.things.find_one({"_id": "k"}) == {"_id": "k"}
        assert list((tmp_path / "mongo").glob("*.sqlite"))
    finally:
        stop(process)
