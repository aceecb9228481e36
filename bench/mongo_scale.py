"""The MongoDB session and user stores as they grow: each operation's latency with 10^3, 10^4
and 10^5 sessions in one database, and the plan the server chose for every query they sent.

    .venv/bin/python -m bench.mongo_scale [--sizes 1000,10000,100000] [--ops 200]
        [--backend postgresql|sqlite] --json F

With ``BENCH_MONGO_URL`` set it fills that server (and leaves its database behind); otherwise it
starts a private one on a free port as ``scripts/services`` would (``mongod`` when it is on
PATH, else the FerretDB runner on ``--backend``) and stops it at the end.

At each size the sessions belong to ``size / 4`` users (four each), and the users are in the
same database. The stores are filled with documents of the stores' own form (``insert_many``:
10^5 sign-ins one by one would take long and measure nothing more), then each operation runs
``--ops`` times one call at a time (at most ``--budget`` seconds: a full scan of 10^5 sessions
may take seconds a call) on random sessions and users, after a tenth as many untimed calls.
The plans: every command the stores send for one call of each operation is recorded, and the
query part of each (its filter, sort, skip and limit) explained as a ``find``: FerretDB explains
nothing else, and MongoDB runs an update's or a delete's query with the same plan.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson.int64 import Int64
from pymongo import AsyncMongoClient, monitoring

from bench import _common as common
from tools import services
from tornado_auth.sessions import SessionRecord, backend_for_url
from tornado_auth.sessions.mongo import MongoSessionStore
from tornado_auth.sessions.mongo import document as session_document
from tornado_auth.users import User, store_for_url
from tornado_auth.users.mongo import MongoUserStore
from tornado_auth.users.mongo import document as user_document

SIZES = (1000, 10_000, 100_000)
PER_USER = 4  # sessions of each user
TTL = 86400.0
USER_AGENT = common.USER_AGENT
BATCH = 1000  # documents per insert_many
# A server that runs one command at a time (the FerretDB runner) holds the driver's heartbeat
# behind a scan of 10^5 documents for longer than the stores' 3 s, and the driver then drops its
# connections: wait longer here, to measure the scan.
PATIENT: dict[str, Any] = {"connecttimeoutms": 120_000, "serverselectiontimeoutms": 120_000}
QUERIES = ("find", "update", "delete", "findAndModify", "count", "aggregate", "distinct")


class Recorder(monitoring.CommandListener):
    """The commands a client sends while ``recording`` is on."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] | None = None

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        self.commands = []
        try:
            yield self.commands
        finally:
            self.commands = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.commands is not None and event.command_name in QUERIES:
            self.commands.append((event.database_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def as_finds(command: dict[str, Any]) -> list[dict[str, Any]]:
    """The query part of a command, as the ``find`` commands that run it."""
    name = next(iter(command))
    collection = command[name]
    if name == "find":
        keep = ("filter", "sort", "projection")
        find = {"find": collection, **{k: command[k] for k in keep if k in command}}
        # explain wants skip and limit as 64-bit integers (FerretDB insists)
        return [find | {k: Int64(command[k]) for k in ("skip", "limit") if k in command}]
    if name in ("update", "delete"):
        key = "updates" if name == "update" else "deletes"
        return [{"find": collection, "filter": each["q"]} for each in command.get(key, [])]
    if name == "findAndModify":
        found = {"find": collection, "filter": command.get("query", {}), "limit": Int64(1)}
        return [found | ({"sort": command["sort"]} if "sort" in command else {})]
    if name in ("count", "distinct"):
        return [{"find": collection, "filter": command.get("query", {})}]
    if name == "aggregate":
        stages = command.get("pipeline", [])
        match = stages[0]["$match"] if stages and "$match" in stages[0] else {}
        return [{"find": collection, "filter": match}]
    return []


def plan_summary(explain: dict[str, Any]) -> dict[str, Any]:
    """What the server does for a query: FerretDB's pushdown and its backend's plan, or
    MongoDB's winning plan, in one line."""
    if "filterPushdown" in explain:  # FerretDB
        planner = explain.get("queryPlanner", {})
        plan = planner.get("Plan")
        if isinstance(plan, list):  # SQLite: EXPLAIN QUERY PLAN rows
            text = "; ".join(str(row).split("detail=", 1)[-1] for row in plan)
        else:  # PostgreSQL: EXPLAIN (FORMAT JSON)
            text = _pg_nodes(plan or {})
        return {"pushdown": bool(explain["filterPushdown"]), "plan": text}
    winning = explain.get("queryPlanner", {}).get("winningPlan", {})
    return {"plan": _mongo_stages(winning.get("queryPlan", winning))}


def _pg_nodes(node: dict[str, Any]) -> str:
    what = node.get("Node Type", "?")
    if "Index Name" in node:
        what += f" using {node['Index Name']}"
    elif "Relation Name" in node:
        what += f" on {node['Relation Name']}"
    children = [_pg_nodes(child) for child in node.get("Plans", [])]
    return f"{what} <- ({', '.join(children)})" if children else what


def _mongo_stages(stage: dict[str, Any]) -> str:
    what = stage.get("stage", "?")
    if "indexName" in stage:
        what += f" {stage['indexName']}"
    children = [stage["inputStage"]] if "inputStage" in stage else stage.get("inputStages", [])
    inner = [_mongo_stages(child) for child in children]
    return f"{what} <- ({', '.join(inner)})" if inner else what


async def explain_all(
    client: AsyncMongoClient[dict[str, Any]], recorded: list[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Each recorded command's queries with their plans."""
    plans = []
    for database, command in recorded:
        for find in as_finds(command):
            answer = await client[database].command({"explain": find, "verbosity": "queryPlanner"})
            plans.append(
                {
                    "command": next(iter(command)),
                    "collection": find["find"],
                    "filter": _shape(find.get("filter", {})),
                    **({"sort": _shape(find["sort"])} if "sort" in find else {}),
                    **plan_summary(answer),
                }
            )
    return plans


def _shape(value: Any) -> Any:
    """A filter with its values replaced by their type: the query's shape, not its data."""
    if isinstance(value, dict):
        return {key: _shape(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_shape(inner) for inner in value]
    return value if type(value) is int else "<value>"  # sort directions stay


@dataclass
class Op:
    """One operation measured: ``call`` is timed, ``prepare`` (when given) runs untimed before
    each call; both take a number (negative while warming up)."""

    call: Callable[[int], Awaitable[Any]]
    prepare: Callable[[int], Awaitable[Any]] | None = None


async def timed(op: Op, count: int, budget: float) -> dict[str, Any]:
    """p50, p99 and mean ms of up to ``count`` calls one at a time (fewer, but at least 5, when
    they take longer than ``budget`` seconds in all), after a tenth as many untimed (fewer, but
    at least one, past a tenth of the budget)."""
    deadline = time.monotonic() + budget / 10
    for number in range(max(1, count // 10)):
        if op.prepare:
            await op.prepare(-1 - number)
        await op.call(-1 - number)
        if time.monotonic() > deadline:
            break
    durations: list[float] = []
    deadline = time.monotonic() + budget
    for number in range(count):
        if op.prepare:
            await op.prepare(number)
        start = time.perf_counter()
        await op.call(number)
        durations.append(1000 * (time.perf_counter() - start))
        if len(durations) >= 5 and time.monotonic() > deadline:
            break
    durations.sort()
    n = len(durations)
    p50, p99 = (durations[round(q * (n - 1))] for q in (0.5, 0.99))
    return {"n": n, "p50_ms": p50, "p99_ms": p99, "mean_ms": sum(durations) / n}


class Population:
    """The sessions and users put in the stores so far."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.keys: list[str] = []
        self.users: list[User] = []

    def record(self, number: int, user: User) -> SessionRecord:
        """A session as a sign-in makes it, for ``user``."""
        return SessionRecord(
            key=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
            created_at=self.now - number % 3600,
            last_seen_at=self.now,
            expires_at=self.now + TTL,
            absolute_expires_at=self.now + 30 * TTL,
            ttl=TTL,
            user_id=user.id,
            ip=f"10.{number % 250}.{number // 250 % 250}.1",
            user_agent=USER_AGENT,
            data={"email": user.email, "role": "user", "remember_me": False, "amr": ["pwd"]},
        )

    async def grow(self, store: MongoSessionStore, users: MongoUserStore, size: int) -> None:
        """Add sessions (and their users) until there are ``size``."""
        first_user = len(self.users)
        for number in range(first_user, size // PER_USER):
            self.users.append(
                User(
                    id=f"{number:024x}",
                    email=f"user{number}@scale.example",
                    name=f"User {number}",
                    role="user",
                    password_hash="$2b$04$" + "x" * 53,
                    created_at=self.now - number,
                )
            )
        fresh = [user_document(user) for user in self.users[first_user:]]
        for start in range(0, len(fresh), BATCH):
            await users.users.insert_many(fresh[start : start + BATCH], ordered=False)
        first = len(self.keys)
        records = [self.record(n, self.users[n // PER_USER]) for n in range(first, size)]
        for start in range(0, len(records), BATCH):
            batch = records[start : start + BATCH]
            await store.sessions.insert_many([session_document(r) for r in batch], ordered=False)
        self.keys += [record.key for record in records]


def operations(
    store: MongoSessionStore, users: MongoUserStore, people: Population
) -> dict[str, Op]:
    """Each operation measured, on random sessions and users. The size stays: ``delete`` and
    ``delete_user`` remove only what their preparation added."""
    pick = random.Random(7)
    created: list[str] = []
    spare = User(
        id="f" * 24,
        email="spare@scale.example",
        name="Spare",
        role="user",
        password_hash="",
        created_at=people.now,
    )

    def key() -> str:
        return pick.choice(people.keys)

    def user() -> User:
        return pick.choice(people.users)

    async def load(number: int) -> None:
        assert await store.load(key()) is not None

    async def touch(number: int) -> None:
        now = time.time()
        assert await store.update(key(), {}, set(), now, now + TTL)

    async def save(number: int) -> None:
        now = time.time()
        assert await store.update(key(), {"counter": number}, set(), now, now + TTL)

    async def create(number: int) -> None:
        record = people.record(number, user())
        await store.create(record)
        created.append(record.key)

    async def one_more(number: int) -> None:
        if not created:
            await create(number)

    async def delete(number: int) -> None:  # a sign-out
        assert await store.delete(created.pop())

    async def spare_sessions(number: int) -> None:
        documents = [session_document(people.record(number, spare)) for _ in range(PER_USER)]
        await store.sessions.insert_many(documents)

    async def delete_user(number: int) -> None:  # a password change: every other session
        assert len(await store.delete_user(spare.id)) == PER_USER

    async def list_user(number: int) -> None:
        assert len(await store.list_user(user().id)) >= PER_USER

    async def trim_user(number: int) -> None:  # at each sign-in (sessions.max_per_user)
        await store.trim_user(user().id, 10, time.time())

    async def user_get(number: int) -> None:
        assert await users.get(user().id) is not None

    async def user_by_email(number: int) -> None:
        assert await users.by_email(user().email) is not None

    async def count(number: int) -> None:  # the live sessions gauge, every 5 s
        await store.count(time.time())

    return {
        "load": Op(load), "touch": Op(touch), "save": Op(save), "create": Op(create),
        "delete": Op(delete, one_more), "list_user": Op(list_user),
        "delete_user": Op(delete_user, spare_sessions), "trim_user": Op(trim_user),
        "user_get": Op(user_get), "user_by_email": Op(user_by_email), "count": Op(count),
    }  # fmt: skip


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    database = f"ta_scale_{secrets.token_hex(4)}"
    recorder = Recorder()
    backend = backend_for_url(f"{url}/{database}")
    store = backend.store
    users = store_for_url(f"{url}/{database}")
    assert isinstance(store, MongoSessionStore) and isinstance(users, MongoUserStore)
    for mongo in (store.mongo, users.mongo):
        mongo.options |= PATIENT | {"event_listeners": [recorder]}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, **PATIENT)
    build = await client.admin.command("buildInfo")
    results: dict[str, Any] = {
        "command": common.command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "server": {
            "version": build.get("version"),
            "ferretdb": build.get("ferretdbVersion"),
            "backend": args.backend_used,
        },
        "params": {"ops": args.ops, "budget_s": args.budget, "sessions_per_user": PER_USER},
        "sizes": {},
    }
    people = Population(time.time())
    await backend.start()
    await users.start()
    try:
        for size in args.sizes:
            began = time.monotonic()
            await people.grow(store, users, size)
            filled = time.monotonic() - began
            print(f"mongo_scale: {size} sessions ({filled:.1f} s to fill)", flush=True)
            ops = operations(store, users, people)
            row: dict[str, Any] = {"fill_s": round(filled, 1), "ops": {}, "plans": {}}
            async with common.quiet() as row["cpu"]:
                for name, op in ops.items():
                    row["ops"][name] = figures = await timed(op, args.ops, args.budget)
                    print(
                        f"  {name:14} p50 {figures['p50_ms']:9.2f} ms  p99 "
                        f"{figures['p99_ms']:9.2f} ms  (n={figures['n']})",
                        flush=True,
                    )
            for name, op in ops.items():
                if op.prepare:
                    await op.prepare(0)
                with recorder.recording() as recorded:
                    await op.call(0)
                row["plans"][name] = await explain_all(client, recorded)
            row["sessions"] = await store.sessions.estimated_document_count()
            row["users"] = await users.users.estimated_document_count()
            results["sizes"][str(size)] = row
    finally:
        await backend.close()
        await users.close()
        if not os.environ.get("BENCH_MONGO_URL"):
            await client.drop_database(database)
        await client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="session counts, comma-separated, ascending",
    )
    parser.add_argument("--ops", type=int, default=200, help="calls per operation and size")
    parser.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds per operation and size, at most (at least 5 calls)",
    )
    parser.add_argument(
        "--backend",
        choices=services.FERRETDB_BACKENDS,
        help="FerretDB's backing store, for a private server (default: "
        "$FERRETDB_BACKEND, else postgresql when it can be had)",
    )
    parser.add_argument("--json", type=Path, required=True, help="the figures' file")
    args = parser.parse_args()
    args.sizes = sorted(int(size) for size in args.sizes.split(","))
    url = os.environ.get("BENCH_MONGO_URL", "")
    if url:
        args.backend_used = "given"
        common.write_json(args.json, asyncio.run(measure(url, args)))
        return
    services.exit_on_sigterm()
    common.OUT.mkdir(parents=True, exist_ok=True)
    port = services.free_ports(1)[0]
    root = Path(tempfile.mkdtemp(prefix="ta-mongo-scale-"))
    log = common.OUT / "mongo_scale-mongodb.log"
    process = services.mongodb_server(port, root / "mongo", log, backend=args.backend)
    try:
        args.backend_used = services.mongodb_kind(process)
        results = asyncio.run(measure(f"mongodb://127.0.0.1:{port}", args))
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    common.write_json(args.json, results)
    print(
        json.dumps(
            {
                size: {name: round(figures["p50_ms"], 2) for name, figures in row["ops"].items()}
                for size, row in results["sizes"].items()
            }
        )
    )


if __name__ == "__main__":
    main()
