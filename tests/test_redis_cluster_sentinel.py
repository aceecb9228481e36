"""Redis Cluster and Sentinel: their URLs, keys spread over the masters, events across processes,
and a clear 503 when they cannot serve. The whole session conformance suite also runs on both
(``SESSION_BACKENDS``); the failover itself is in test_redis_failover.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from tornado_auth.sessions import Session, SessionManager, backend_for_url
from tornado_auth.sessions.redis import parse_url
from tornado_auth.settings import SettingsError, load_settings

from .conftest import (
    PASSWORD,
    Store,
    body,
    free_port,
    require_service,
    serving,
    settings_for,
)
from .helpers import LIFETIME, cli, one_line_error, two_processes_revocation

SERVICES = ("redis-cluster", "redis-sentinel")


# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            ([("127.0.0.1", 7000), ("127.0.0.1", 7001)], None, 0, {}),
        ),
        (
            "redis+cluster://app:p%40ss@cache:7000/?socket_timeout=1.5&socket_connect_timeout=1",
            (
                [("cache", 7000)],
                None,
                0,
                {
                    "username": "app",
                    "password": "p@ss",
                    "socket_timeout": 1.5,
                    "socket_connect_timeout": 1.0,
                },
            ),
        ),
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster",
            ([("s1", 26379), ("s2", 26380)], "mymaster", 0, {}),
        ),
        (
            "redis+sentinel://:secret@[::1]:26379/my%20master/3",
            ([("::1", 26379)], "my master", 3, {"username": None, "password": "secret"}),
        ),
    ],
)
def test_cluster_and_sentinel_urls(url, parsed):
    assert parse_url(url) == parsed
    assert load_settings(environ={}, overrides={"sessions.url": url})["sessions.url"] == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://cache", "host:port"),
        ("redis+cluster://cache:70000", "host:port"),
        ("redis+cluster://cache:7000,", "host:port"),
        ("redis+cluster://cache:7000/1", "no path"),
        ("redis+cluster://cache:7000?db=1", "unknown option 'db'"),
        ("redis+cluster://cache:7000?socket_timeout=soon", "not a number"),
        ("redis+sentinel://s1:26379", "<master-name>"),
        ("redis+sentinel://s1:26379/mymaster/zero", "<master-name>"),
        ("redis+sentinel://s1:26379/mymaster/0/extra", "<master-name>"),
    ],
)
def test_malformed_urls_are_settings_errors_naming_the_key(url, message):
    with pytest.raises(SettingsError, match=f"^sessions.url: .*{message}"):
        backend_for_url(url)


def test_serve_with_a_malformed_url_exits_2_with_one_line(tmp_path):
    env = {"TORNADO_AUTH_SESSIONS__URL": "redis+sentinel://127.0.0.1:26379"}
    line = one_line_error(cli(tmp_path, "serve", "--port", str(free_port()), env=env), 2)
    assert "sessions.url" in line and "<master-name>" in line


# -- Cluster: keys over every master ---------------------------------------------------------------


async def test_cluster_spreads_sessions_over_the_masters_and_still_lists_and_revokes(tmp_path):
    require_service("redis-cluster")
    place = Store("redis-cluster", tmp_path)
    opened = backend_for_url(place.session_url(), place.prefix)
    await opened.start()
    backend = opened.store
    manager = SessionManager(backend, opened.events, LIFETIME)
    try:
        await backend.client.initialize()
        masters = {node.name for node in backend.client.get_primaries()}
        assert len(masters) >= 3
        # one user whose index lives on each master
        users: dict[str, str] = {}
        for n in range(1000):
            node = backend.client.get_node_from_key(backend.index_entry(f"user{n}", "")[0]).name
            users.setdefault(node, f"user{n}")
            if len(users) == len(masters):
                break
        created: dict[str, set[str]] = {}
        for user in users.values():
            for _ in range(6):
                session = Session()
                session.login(user, {"email": f"{user}@example.com"}, False, LIFETIME.ttl)
                await manager.commit(session)
                created.setdefault(user, set()).add(session.key)

        stored = await place.redis_keys()
        assert len(stored) == len(masters)  # every master scanned
        holders = {m for m, keys in stored.items() if any(b":s:" in key for key in keys)}
        assert len(holders) >= 2, stored  # 24 session hashes: on one master with p = 3^-23
        indexes = {m for m, keys in stored.items() if any(b":ui:" in key for key in keys)}
        assert len(indexes) == len(masters)

        for user, keys in created.items():
            assert {record.key for record in await manager.list_user(user)} == keys
        first, second, *_ = users.values()
        assert await manager.revoke_user(first) == 6
        assert await manager.list_user(first) == []
        gone = next(iter(created[second]))
        await manager.revoke(gone)
        assert {r.key for r in await manager.list_user(second)} == created[second] - {gone}
        assert await backend.count(time.time()) == 6 * len(users) - 7

        left = [key for keys in (await place.redis_keys()).values() for key in keys]
        for key in created[first] | {gone}:
            assert backend.session_key(key) not in left
        bucket = backend.index_entry(first, "")[0]
        members = {member async for member, _ in backend.client.zscan_iter(bucket)}
        assert not members & {backend.index_entry(first, k)[1] for k in created[first]}
    finally:
        await opened.close()
        await place.cleanup()


# -- events --------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_events_resubscribe_and_resync_when_the_connection_drops(service, tmp_path):
    require_service(service)
    place = Store(service, tmp_path)
    backend = backend_for_url(place.session_url(), place.prefix)
    await backend.start()
    events: asyncio.Queue[dict] = asyncio.Queue()
    backend.events.subscribe(events.put_nowait)
    try:
        await asyncio.wait_for(backend.events.connected(), 10)
        await backend.events.publish({"type": "probe", "n": 1})
        assert await asyncio.wait_for(events.get(), 10) == {"type": "probe", "n": 1}
        killed = 0
        for master in await place.redis_masters():
            # the app's (unnamed) subscriber, not the sentinels' own (named) connections
            for entry in await master.client_list(_type="pubsub"):
                if not entry.get("name"):
                    killed += await master.client_kill_filter(_id=entry["id"])
            await master.aclose()
        assert killed >= 1
        assert await asyncio.wait_for(events.get(), 15) == {"type": "resync"}
        # live again once resubscribed and a PING came back through the new subscription
        await asyncio.wait_for(backend.events.connected(), 10)
        assert backend.events.live
        await backend.events.publish({"type": "probe", "n": 2})
        assert await asyncio.wait_for(events.get(), 10) == {"type": "probe", "n": 2}
    finally:
        await backend.close()
        await place.cleanup()


@pytest.mark.parametrize("service", SERVICES)
async def test_revocation_in_another_process_closes_the_socket(service, tmp_path):
    require_service(service)
    place = Store(service, tmp_path)
    env = {
        "TORNADO_AUTH_SESSIONS__URL": place.session_url(),
        "TORNADO_AUTH_SESSIONS__KEY_PREFIX": place.prefix,
    }
    try:
        await two_processes_revocation(tmp_path, 10, **env, expected_reason="revoked")
    finally:
        await place.cleanup()


# -- unavailable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:{port},127.0.0.1:{port}",  # no node answers
        "redis+sentinel://127.0.0.1:{port}/mymaster",  # no sentinel answers
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/{nosuchmaster}",  # none knows it
    ],
    ids=["cluster-down", "sentinels-down", "unknown-master"],
)
async def test_unreachable_cluster_or_sentinel_gives_503_not_500(url, tmp_path):
    if "nosuchmaster" in url:
        require_service("redis-sentinel")
    place = Store("sqlite", tmp_path)
    url = url.format(port=free_port(), nosuchmaster="nosuchmaster")
    async with serving(settings_for(place, sessions__url=url)) as server:
        await server.add_user("ann@example.com", PASSWORD)
        login = await server.client().login("ann@example.com", PASSWORD)
        assert login.code == 503
        assert body(login) == {"error": "Session store unavailable"}
        ready = await server.client().get("/readyz")
        assert ready.code == 503 and body(ready)["down"] == ["session store (redis)"]
