"""A Redis Sentinel failover under a serving app: no session is lost, no 500, no restart.

Runs on the Sentinel group that `scripts/services up` (or `sentinel-up`) starts: a master, one
replica and three sentinels watching `mymaster`. The test leaves the group whole, with the roles
of the two servers swapped.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from tornado_auth.sessions.redis import parse_url

from .conftest import PASSWORD, REDIS_SENTINEL_URL, Client, Server, body

SETTLE_SECONDS = 30  # Sentinel converts the old master about 10 s after the switch


async def until(condition, seconds: float, what: str):
    """Poll ``condition`` (bounded) until it returns something true; that value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := await condition():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds}s")


async def agreed_master(sentinels: list[aioredis.Redis], name: str) -> tuple[str, int] | None:
    """The master every sentinel names, with no failover in progress; else None."""
    masters = set()
    for sentinel in sentinels:
        state = await sentinel.sentinel_master(name)
        if state["flags"] != "master":
            return None
        masters.add((state["ip"], state["port"]))
    return masters.pop() if len(masters) == 1 else None


async def replicates(host: str, port: int, master_port: int) -> bool:
    """Whether the server at host:port is a replica of master_port with its link up."""
    server = aioredis.Redis(host=host, port=port, decode_responses=True)
    try:
        info = await server.info("replication")
    finally:
        await server.aclose()
    return (
        info["role"] == "slave"
        and info["master_port"] == master_port
        and info["master_link_status"] == "up"
    )


@pytest.mark.stores("redis-sentinel")  # the server fixture serves the app on this store
async def test_failover_loses_no_session_and_the_app_recovers_by_itself(server: Server):
    nodes, name, _, _ = parse_url(REDIS_SENTINEL_URL)
    sentinels = [aioredis.Redis(host=h, port=p, decode_responses=True) for h, p in nodes]
    events = server.services.backend.events
    resyncs = asyncio.Event()
    events.subscribe(lambda event: event["type"] == "resync" and resyncs.set())
    try:
        old = await until(lambda: agreed_master(sentinels, name), SETTLE_SECONDS, "a master")
        await server.add_user("ann@example.com", PASSWORD)
        client = server.client()
        assert (await client.login("ann@example.com", PASSWORD)).code == 200
        assert (await client.get("/api/dashboard")).code == 200

        # Replication is asynchronous: the master acknowledges a write before its replica has
        # it, and a replica promoted before it caught up would not have the session. WAIT blocks
        # until one replica acknowledged every write so far (at most 1 s), so the session
        # written by the sign-in is on the replica that is about to become the master.
        master = aioredis.Redis(host=old[0], port=old[1])
        try:
            assert await master.execute_command("WAIT", 1, 1000) == 1
        finally:
            await master.aclose()

        answers: list[tuple[int, bytes]] = []
        switching = True

        async def keep_requesting() -> None:
            while switching:
                response = await client.get("/api/dashboard")
                answers.append((response.code, response.body))
                await asyncio.sleep(0.02)  # a steady client, not a synchronisation

        requests = asyncio.create_task(keep_requesting())
        try:
            assert await sentinels[0].execute_command("SENTINEL FAILOVER", name)

            async def switched() -> tuple[str, int] | None:
                new = await agreed_master(sentinels, name)
                return new if new not in (None, old) else None

            new = await until(switched, SETTLE_SECONDS, "the switch to the replica")

            # Signed in right after the switch: the demoted master still accepts writes until
            # Sentinel converts it (and drops its data); the app must already write elsewhere.
            async def signed_in() -> Client | None:
                late = server.client()
                response = await late.login("ann@example.com", PASSWORD)
                assert response.code in (200, 503), response.body
                return late if response.code == 200 else None

            late = await until(signed_in, 10, "a sign-in after the switch")
            converted = "the old master converted to a replica"
            await until(lambda: replicates(*old, new[1]), SETTLE_SECONDS, converted)
            await until(
                lambda: asyncio.sleep(0, answers and answers[-1][0] == 200), 10, "a 200 again"
            )
        finally:
            switching = False
            await requests

        codes = {code for code, _ in answers}
        assert codes <= {200, 503}, answers  # never a 500, never signed out (401)
        for code, text in answers:
            if code == 503:
                assert json.loads(text) == {"error": "Session store unavailable"}
        # both sessions survived: the one from before the failover and the one from the switch
        for signed in (client, late):
            dashboard = await signed.get("/api/dashboard")
            assert dashboard.code == 200 and body(dashboard)["email"] == "ann@example.com"
        assert len(body(await client.get("/api/sessions"))["sessions"]) == 2
        revoked = await client.post("/api/sessions/revoke-others")
        assert revoked.code == 200 and body(revoked) == {"revoked": 1}
        assert (await late.get("/api/dashboard")).code == 401
        # the connections to the old master were closed: events resubscribed, caches told so
        await asyncio.wait_for(resyncs.wait(), 5)
        await asyncio.wait_for(events.connected(), 5)
    finally:
        for sentinel in sentinels:
            await sentinel.aclose()
