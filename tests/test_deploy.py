"""nginx in front of two server processes (deploy/local): WebSocket upgrade, client addresses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from .conftest import (
    PASSWORD,
    REDIS_URL,
    Client,
    Store,
    body,
    free_port,
    free_ports_in_a_row,
    require_service,
)
from .helpers import add_sqlite_user, closed_within, next_event, open_socket

ROOT = Path(__file__).parent.parent


async def run(*args: str, env: dict[str, str], within: float = 60) -> None:
    process = await asyncio.create_subprocess_exec(*args, cwd=ROOT, env=env)
    assert await asyncio.wait_for(process.wait(), within) == 0, args


async def test_two_processes_behind_nginx_share_sessions_and_sockets(tmp_path):
    if shutil.which("nginx") is None:
        message = "nginx is not installed: scripts/test installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    require_service("redis")
    place = Store("redis", tmp_path)
    await add_sqlite_user(tmp_path)
    listen = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DEPLOY_STATE_DIR": str(tmp_path / "deploy"),
        "DEPLOY_LISTEN": listen,
        "DEPLOY_FIRST_PORT": str(free_ports_in_a_row(2)),  # one per process
        "TORNADO_AUTH_SESSIONS__URL": REDIS_URL,
        "TORNADO_AUTH_SESSIONS__KEY_PREFIX": place.prefix,
        "TORNADO_AUTH_USERS__URL": f"sqlite:///{tmp_path}/users.db",
        "TORNADO_AUTH_SECRETS__COOKIE_SECRET": "s" * 40,
        "TORNADO_AUTH_USERS__DEMO_USERS": "false",
        "DEPLOY_WAIT": "60",  # start returns once all answer /healthz: generous on a loaded machine
    }
    await run("deploy/local", "start", "2", env=env, within=90)
    try:
        holder = Client(f"http://{listen}")
        spoofed = {"X-Real-Ip": "203.0.113.66", "X-Forwarded-For": "203.0.113.66"}
        login = await holder.request(
            "POST", "/api/login", {"email": "ann@example.com", "password": PASSWORD}, spoofed
        )
        assert login.code == 200
        assert login.headers["Server"] == "nginx"  # answered through the proxy
        sessions = body(await holder.get("/api/sessions"))["sessions"]
        assert [s["ip"] for s in sessions] == ["127.0.0.1"]  # nginx's view, not the spoof

        socket = await open_socket(holder)  # the upgrade passes through nginx
        await next_event(socket, "hello")
        other = Client(f"http://{listen}")
        for _ in range(4):  # least_conn spreads these over both processes
            assert (await other.login("ann@example.com", PASSWORD)).code == 200
        assert json.loads(await asyncio.wait_for(socket.read_message(), 10))["type"] == "signin"
        assert (await other.post("/api/sessions/revoke-others")).code == 200
        code, reason = await closed_within(socket, 10)
        assert (code, reason) == (4001, "revoked")
    finally:
        await run("deploy/local", "stop", env=env)
        await place.cleanup()
