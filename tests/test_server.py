"""The server process: serve, graceful shutdown on SIGTERM, access logs without secrets."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from tornado_auth.users.passwords import BCRYPT_NICENESS

from .conftest import Client, free_port


async def serve(tmp_path: Path, port: int, *extra: str, **env: str) -> asyncio.subprocess.Process:
    environment = {
        **os.environ,
        "TORNADO_AUTH_USERS__URL": f"sqlite:///{tmp_path}/users.db",
        "TORNADO_AUTH_SESSIONS__URL": f"sqlite:///{tmp_path}/sessions.db",
        "TORNADO_AUTH_SECRETS__SECRET_FILE": f"{tmp_path}/secret",
        "TORNADO_AUTH_USERS__DEMO_USERS": "true",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tornado_auth", "serve", "--port", str(port), *extra),
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return process


async def read_until(stream: asyncio.StreamReader, text: str) -> list[str]:
    """Lines up to and including the first that contains ``text``."""
    lines = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), 30)).decode()
        if not line:
            raise AssertionError(f"stream ended before {text!r}: {lines}")
        lines.append(line)
        if text in line:
            return lines


def bcrypt_cpu_ticks(pid: int) -> int:
    """CPU time (in clock ticks) the process's bcrypt threads have used so far: the threads
    at the lowest priority (niceness 19), where only hashing runs."""
    ticks = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended
            continue
        if int(fields[16]) == BCRYPT_NICENESS:  # stat's field 19, nice
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15, utime and stime
    return ticks


async def test_serve_prints_url_and_demo_users_then_drains_on_sigterm(tmp_path):
    port = free_port()
    process = await serve(tmp_path, port, TORNADO_AUTH_USERS__BCRYPT_ROUNDS="12")
    try:
        lines = await read_until(process.stdout, "listening on")
        assert any(f"http://127.0.0.1:{port} (uvloop)" in line for line in lines)  # by default
        demo = next(line for line in lines if line.startswith("demo user:"))
        password = demo.rsplit(" ", 1)[1].strip()
        client = Client(f"http://127.0.0.1:{port}")
        await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz")  # started: hashed its
        hashed_before = bcrypt_cpu_ticks(process.pid)  # dummy hash, and hashes nothing now
        login = asyncio.ensure_future(client.login("user@example.com", password))
        deadline = time.monotonic() + 30
        while bcrypt_cpu_ticks(process.pid) == hashed_before:  # until its bcrypt thread runs
            assert time.monotonic() < deadline, "the sign-in never reached a bcrypt thread"
            await asyncio.sleep(0.01)
        health = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz")
        hashed_when_answered = bcrypt_cpu_ticks(process.pid)
        assert health.code == 200 and not login.done()
        process.send_signal(signal.SIGTERM)
        response = await login
        assert response.code == 200  # the in-flight request finished
        # The hash went on after the health check was answered: the answer did not wait for it.
        assert bcrypt_cpu_ticks(process.pid) > hashed_when_answered
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = (await process.stderr.read()).decode()
    assert "Traceback" not in stderr
    assert password not in stderr


async def test_access_log_never_contains_cookies_tokens_or_passwords(tmp_path):
    port = free_port()
    process = await serve(tmp_path, port, TORNADO_AUTH_USERS__BCRYPT_ROUNDS="4",
                          TORNADO_AUTH_SERVER__EVENT_LOOP="asyncio")  # fmt: skip
    try:
        lines = await read_until(process.stdout, "listening on")
        assert lines[-1].rstrip().endswith("(asyncio)")
        demo = next(line for line in lines if line.startswith("demo user:"))
        password = demo.rsplit(" ", 1)[1].strip()
        client = Client(f"http://127.0.0.1:{port}")
        assert (await client.login("user@example.com", password)).code == 200
        cookie = client.cookies["session"]
        assert (await client.get("/api/dashboard?token=secret-in-query")).code == 200
        assert (await client.post("/api/logout")).code == 200
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = (await process.stderr.read()).decode()
    assert "POST /api/login" in log and "GET /api/dashboard" in log
    for secret in (password, cookie, cookie.strip('"'), "secret-in-query"):
        assert secret not in log


async def test_invalid_setting_exits_2_with_one_line(tmp_path):
    process = await serve(tmp_path, 0, TORNADO_AUTH_SESSIONS__TTL="forever")
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "sessions.ttl" in lines[0]


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def children_of(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()} if path.exists() else set()


async def test_several_worker_processes_serve_restart_and_stop_together(tmp_path):
    port = free_port()
    process = await serve(tmp_path, port, "--processes", "2")
    try:
        lines = await read_until(process.stdout, "listening on")
        assert "with 2 worker processes" in lines[-1]
        workers = children_of(process.pid)
        assert len(workers) == 2
        client = Client(f"http://127.0.0.1:{port}")
        assert all([(await client.get("/healthz")).code == 200 for _ in range(20)])

        os.kill(workers.pop(), signal.SIGKILL)  # a worker dies: the supervisor replaces it
        await read_until(process.stderr, "restarted")
        assert len(children_of(process.pid)) == 2
        assert (await client.get("/healthz")).code == 200

        everyone = children_of(process.pid)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert not alive(everyone)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_the_event_loop_is_uvloop_when_installed_and_asked_for_only_then(monkeypatch):
    import uvloop

    from tornado_auth import load_settings
    from tornado_auth.server import event_loop
    from tornado_auth.settings import SettingsError

    def loop(choice: str) -> tuple[str, object]:
        return event_loop(load_settings(environ={}, overrides={"server.event_loop": choice}))

    assert loop("auto") == ("uvloop", uvloop.new_event_loop)
    assert loop("uvloop") == ("uvloop", uvloop.new_event_loop)
    assert loop("asyncio") == ("asyncio", asyncio.new_event_loop)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed
    assert loop("auto") == ("asyncio", asyncio.new_event_loop)
    with pytest.raises(SettingsError, match=r"^server\.event_loop: uvloop is not installed"):
        loop("uvloop")
