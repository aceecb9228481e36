"""Prometheus metrics: the values after known traffic, summed over ``serve --processes 2``;
/metrics on the main port only for the allowed networks, or not at all."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from tornado_auth import Settings, SettingsError, load_settings, metrics, tasks

from .conftest import PASSWORD, Client, Store, free_port, serving, settings_for
from .helpers import add_sqlite_user, next_event, open_socket, stop_process

Samples = dict[tuple[str, frozenset], float]
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str) -> Samples:
    response = await AsyncHTTPClient().fetch(url, raise_error=False)
    assert response.code == 200, response.code
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.body.decode())


async def scraped_until(url: str, holds: Callable[[Samples], bool], within: float = 20) -> Samples:
    """Scrape another process until ``holds`` (a worker records a request just after answering
    it, and counts the live sessions every few seconds)."""
    deadline = time.monotonic() + within
    while True:
        found = await scrape(url)
        if holds(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)  # polling an external process, against the deadline above


async def test_metrics_add_up_over_two_processes(tmp_path: Path):
    await add_sqlite_user(tmp_path)
    port, metrics_port = free_port(), free_port()
    values_dir = tmp_path / "metrics"
    values_dir.mkdir()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TORNADO_AUTH_")},
        "TORNADO_AUTH_USERS__URL": f"sqlite:///{tmp_path}/users.db",
        "TORNADO_AUTH_SESSIONS__URL": f"sqlite:///{tmp_path}/sessions.db",
        "TORNADO_AUTH_SECRETS__COOKIE_SECRET": "s" * 40,
        "TORNADO_AUTH_USERS__DEMO_USERS": "false",
        "TORNADO_AUTH_LOGGING__ACCESS_LOG": "false",
        "TORNADO_AUTH_METRICS__LISTEN": f"127.0.0.1:{metrics_port}",
        "TORNADO_AUTH_THROTTLE__ACCOUNT_IP_FAILURES": "3",
        "PROMETHEUS_MULTIPROC_DIR": str(values_dir),
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tornado_auth", "serve", "--port", str(port), "--processes", "2"),
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    base, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        assert b"2 worker processes" in await asyncio.wait_for(process.stdout.readline(), 30)
        # Known traffic, each request on a connection of its own, so both workers serve some.
        people = [Client(base) for _ in range(6)]
        logins = [await person.login("ann@example.com", PASSWORD) for person in people]
        assert [r.code for r in logins] == [200] * 6
        failed = [await Client(base).login("ann@example.com", "wrong password") for _ in range(3)]
        throttled = await Client(base).login("ann@example.com", "wrong password")
        assert [r.code for r in failed] + [throttled.code] == [401, 401, 401, 429]
        for person in people:
            assert (await person.get("/api/dashboard")).code == 200
        revoke = await people[0].request("DELETE", "/api/sessions/no-such-session")
        assert revoke.code == 404
        assert (await people[5].post("/api/logout")).code == 200
        socket = await open_socket(people[1])
        await next_event(socket, "hello")

        def counted(found: Samples) -> bool:
            dashboards = value(
                found,
                "tornado_auth_http_requests_total",
                method="GET",
                route="/api/dashboard",
                status="200",
            )
            return dashboards == 6 and value(found, "tornado_auth_sessions_live") == 5

        found = await scraped_until(metrics_url, counted)
        socket.close()
    finally:
        assert await stop_process(process) == 0

    requests = "tornado_auth_http_requests_total"
    assert value(found, requests, method="GET", route="/api/dashboard", status="200") == 6
    assert value(found, requests, method="POST", route="/api/login", status="200") == 6
    assert value(found, requests, method="POST", route="/api/login", status="401") == 3
    assert value(found, requests, method="POST", route="/api/login", status="429") == 1
    # the route's pattern, never the raw path
    assert value(found, requests, method="DELETE", route="/api/sessions/{}", status="404") == 1
    assert not any("no-such-session" in str(labels) for _, labels in found)
    histogram = "tornado_auth_http_request_duration_seconds_count"
    assert value(found, histogram, method="POST", route="/api/login", status="200") == 6
    signins = "tornado_auth_signins_total"
    assert value(found, signins, outcome="ok") == 6
    assert value(found, signins, outcome="failed") == 3
    assert value(found, signins, outcome="throttled") == 1
    assert value(found, "tornado_auth_sessions_created_total") == 6
    assert value(found, "tornado_auth_sessions_ended_total", reason="logout") == 1
    assert value(found, "tornado_auth_sessions_live") == 5
    assert value(found, "tornado_auth_websockets_open") == 1
    # HTTP connections being served (a WebSocket leaves this count once upgraded)
    assert ("tornado_auth_http_connections_open", frozenset()) in found
    creates = "tornado_auth_store_operation_duration_seconds_count"
    assert value(found, creates, store="sessions", backend="sqlite", operation="create") == 6
    assert value(found, creates, store="users", backend="sqlite", operation="by_email") == 10
    assert value(found, "tornado_auth_bcrypt_wait_seconds_count") >= 9  # one check a sign-in
    assert value(found, "tornado_auth_bcrypt_queue_length") == 0
    # the values came from the supervisor (stores prepared) and both workers
    pids = {name.rsplit("_", 1)[1] for name in os.listdir(values_dir) if name.endswith(".db")}
    assert len(pids) >= 3


def main_port_settings(tmp_path: Path, allow: list[str]) -> Settings:
    return settings_for(Store("memory", tmp_path), metrics__listen="main", metrics__allow=allow)


async def test_main_port_metrics_for_an_allowed_network(tmp_path: Path):
    settings = main_port_settings(tmp_path, ["127.0.0.0/8"])
    async with serving(settings) as server:
        await server.add_user("ann@example.com", PASSWORD)
        client = server.client()
        assert (await client.login("ann@example.com", PASSWORD)).code == 200
        assert (await client.get("/api/sessions")).code == 200

        found = await scrape(f"{server.base_url}/metrics")

    requests = "tornado_auth_http_requests_total"
    assert value(found, requests, method="GET", route="/api/sessions", status="200") == 1
    assert value(found, "tornado_auth_signins_total", outcome="ok") == 1
    assert value(found, "tornado_auth_sessions_created_total") == 1


async def test_main_port_metrics_are_a_404_to_other_networks(tmp_path: Path):
    settings = main_port_settings(tmp_path, ["10.0.0.0/8", "2001:db8::/32"])
    async with serving(settings) as server:
        response = await server.client().get("/metrics")

    assert response.code == 404
    assert b"tornado_auth" not in response.body


@pytest.mark.parametrize("listen", ["off", "127.0.0.1:9"])
async def test_no_metrics_on_the_main_port_unless_asked(tmp_path: Path, listen: str):
    async with serving(settings_for(Store("memory", tmp_path), metrics__listen=listen)) as server:
        response = await server.client().get("/metrics")

    assert response.code == 404


@pytest.mark.parametrize(
    ("key", "bad"),
    [("metrics.listen", "everywhere"), ("metrics.listen", "host:99999"), ("metrics.allow", "x")],
)
def test_bad_metrics_settings_name_the_key(key: str, bad: str):
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(environ={}, overrides={key: bad})


def test_the_grafana_dashboard_uses_only_metrics_we_export():
    from tornado_auth.metrics import Metrics

    registry = Metrics().registry
    exported = {
        sample_name
        for family in registry.collect()
        for sample_name in (family.name, *(f"{family.name}{s}" for s in SUFFIXES))
    }
    dashboard = (Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"tornado_auth_\w+", dashboard))

    assert len(used) >= 10
    assert used <= exported, used - exported


def test_a_values_file_another_process_is_creating_is_skipped(tmp_path: Path, monkeypatch):
    from prometheus_client import generate_latest

    from tornado_auth.metrics import collected

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_4242.db").write_bytes(b"")  # created, not yet sized

    assert generate_latest(collected()) == b""


async def test_a_slow_count_of_the_live_sessions_waits_longer_before_the_next(monkeypatch, caplog):
    """A count that takes 2 s (a store that reads every session to count them, as FerretDB
    does) is followed by a wait of 18 s, not 5: the counts keep at most a tenth of the store's
    time. A count that stalled for 10 minutes waits 5 minutes, not 90: the figure is never
    left stale for long. A count that fails is logged and the counts go on; a quick one waits
    the usual 5 s again."""
    clock = [1000.0]
    runs = iter([(2.0, 7), (600.0, 8), (0.1, RuntimeError("no count")), (0.1, 9)])
    counted_at: list[float] = []
    waits: list[float] = []
    waited = asyncio.Event()

    async def count(now: float) -> int:
        counted_at.append(now)
        took, answer = next(runs)
        clock[0] += took
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds
        if len(waits) == 4:
            waited.set()
            await asyncio.Future()  # until the loop is cancelled

    fake_time = SimpleNamespace(monotonic=lambda: clock[0], time=lambda: clock[0])
    fake_asyncio = SimpleNamespace(
        sleep=sleep, create_task=asyncio.create_task, CancelledError=asyncio.CancelledError
    )
    monkeypatch.setattr(metrics, "time", fake_time)
    monkeypatch.setattr(metrics, "asyncio", fake_asyncio)
    collected = metrics.Metrics()
    collected.count_live_sessions(count)
    await waited.wait()
    await collected.close()
    interval = metrics.LIVE_SESSIONS_INTERVAL
    assert waits == [18.0, tasks.PERIODIC_MAX_PAUSE, interval, interval]
    assert counted_at == [1000.0, 1020.0, 1920.0, 1925.1]
    assert collected.sessions_live._value.get() == 9
    assert "the count of live sessions failed" in caplog.text
