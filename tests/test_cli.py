"""The real ``python -m tornado_auth`` console entry, run as a subprocess on SQLite and MongoDB."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth.sessions import Lifetime, Session, SessionManager
from tornado_auth.sessions.sqlite import SQLiteSessionBackend
from tornado_auth.users.sqlite import SQLiteUserStore

from .conftest import Store, require_service

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "Tr0ub4dor&3-horse"
LIFETIME = Lifetime(ttl=3600, remember_me_ttl=86400, absolute_ttl=86400, touch_interval=60)


def cli(
    tmp_path: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tornado_auth ARGS`` with its stores under tmp_path."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TORNADO_AUTH_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ.update(
        {
            "TORNADO_AUTH_USERS__URL": f"sqlite:///{tmp_path}/users.db",
            "TORNADO_AUTH_SESSIONS__URL": f"sqlite:///{tmp_path}/sessions.db",
            "TORNADO_AUTH_USERS__BCRYPT_ROUNDS": "4",
            "TORNADO_AUTH_SECRETS__SECRET_FILE": f"{tmp_path}/secret",
        }
    )
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tornado_auth", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ,
        timeout=60,
        check=False,
    )


def create_user(
    tmp_path: Path, email: str = "a@example.com", *extra: str, **kwargs
) -> subprocess.CompletedProcess[str]:
    args = ("create-user", "--email", email, "--name", "A", "--password-stdin", *extra)
    return cli(tmp_path, *args, stdin=PASSWORD + "\n", **kwargs)


def listed(tmp_path: Path, **kwargs) -> dict[str, dict[str, str]]:
    """``list-users`` parsed: email -> {id, role, state, name}."""
    result = cli(tmp_path, "list-users", **kwargs)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        user_id, email, role, state, name = line.split("\t")
        rows[email] = {"id": user_id, "role": role, "state": state, "name": name}
    return rows


def one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def _open_sessions(tmp_path: Path, user_ids: list[str]) -> list[str]:
    manager = SessionManager(SQLiteSessionBackend(f"sqlite:///{tmp_path}/sessions.db"), LIFETIME)
    await manager.backend.start()
    keys = []
    for user_id in user_ids:
        session = Session()
        session.login(user_id, {"email": "a@example.com"}, False, LIFETIME.ttl)
        await manager.commit(session)
        keys.append(session.key)
    await manager.close()
    return keys


async def _live_sessions(tmp_path: Path, keys: list[str]) -> list[str]:
    backend = SQLiteSessionBackend(f"sqlite:///{tmp_path}/sessions.db")
    await backend.start()
    live = [key for key in keys if await backend.load(key) is not None]
    await backend.close()
    return live


def open_sessions(tmp_path: Path, *user_ids: str) -> list[str]:
    """Sign each user id in once, on the sessions.db the CLI uses; the store keys."""
    return asyncio.run(_open_sessions(tmp_path, list(user_ids)))


def live_sessions(tmp_path: Path, keys: list[str]) -> list[str]:
    return asyncio.run(_live_sessions(tmp_path, keys))


def test_create_user_reads_the_password_from_stdin_and_list_users_shows_it(tmp_path: Path):
    result = create_user(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "a@example.com" in result.stdout
    users = listed(tmp_path)
    assert list(users) == ["a@example.com"]
    assert users["a@example.com"]["role"] == "user"
    assert users["a@example.com"]["state"] == "active"
    assert users["a@example.com"]["name"] == "A"
    assert users["a@example.com"]["id"] in result.stdout


def test_create_user_can_make_an_admin(tmp_path: Path):
    assert create_user(tmp_path, "a@example.com", "--role", "admin").returncode == 0

    assert listed(tmp_path)["a@example.com"]["role"] == "admin"


def test_the_password_never_appears_in_the_output(tmp_path: Path):
    outputs = [create_user(tmp_path), cli(tmp_path, "list-users"), create_user(tmp_path)]

    for result in outputs:
        assert PASSWORD not in result.stdout + result.stderr
    assert PASSWORD.encode() not in (tmp_path / "users.db").read_bytes()


def test_too_short_password_exits_1_with_one_line_and_creates_nobody(tmp_path: Path):
    args = ("create-user", "--email", "a@example.com", "--name", "A", "--password-stdin")
    result = cli(tmp_path, *args, stdin="abc1234\n")

    assert "password" in one_line_error(result, 1)
    assert "abc1234" not in result.stdout + result.stderr
    assert listed(tmp_path) == {}


def test_invalid_email_exits_1_and_creates_nobody(tmp_path: Path):
    result = create_user(tmp_path, "not-an-email")

    assert "email" in one_line_error(result, 1)
    assert listed(tmp_path) == {}


def test_duplicate_email_exits_1_and_keeps_the_first_user(tmp_path: Path):
    first = create_user(tmp_path)

    result = create_user(tmp_path, "A@Example.com")

    assert "a@example.com" in one_line_error(result, 1).lower()
    assert list(listed(tmp_path)) == ["a@example.com"]
    assert listed(tmp_path)["a@example.com"]["id"] in first.stdout


async def _audit_events(tmp_path: Path) -> list[tuple[str, str | None, str, dict]]:
    store = SQLiteUserStore(f"sqlite:///{tmp_path}/users.db")
    await store.start()
    entries, _ = await store.audit_page(0, 100)
    await store.close()
    return [(e.event, e.email, e.user_agent, e.detail) for e in reversed(entries)]


def audit_events(tmp_path: Path) -> list[tuple[str, str | None, str, dict]]:
    """The audit trail, oldest first: (event, email, user agent, detail)."""
    return asyncio.run(_audit_events(tmp_path))


def test_admin_actions_from_the_cli_are_audited(tmp_path: Path):
    create_user(tmp_path, "root@example.com", "--role", "admin")  # so a@ is not the last admin
    create_user(tmp_path)
    user_id = listed(tmp_path)["a@example.com"]["id"]
    open_sessions(tmp_path, user_id, user_id)
    for args in (("set-role", "--role", "admin"), ("disable",), ("enable",), ("revoke-sessions",)):
        result = cli(tmp_path, args[0], "--email", "a@example.com", *args[1:])
        assert result.returncode == 0, result.stderr
    cli_agent = "tornado-auth cli"
    assert audit_events(tmp_path) == [
        ("registered", "root@example.com", cli_agent, {"by": "cli"}),
        ("registered", "a@example.com", cli_agent, {"by": "cli"}),
        ("role_changed", "a@example.com", cli_agent, {"role": "admin", "by": "cli"}),
        ("user_disabled", "a@example.com", cli_agent, {"by": "cli"}),
        ("user_enabled", "a@example.com", cli_agent, {"by": "cli"}),
        ("sessions_revoked", "a@example.com", cli_agent, {"count": 0, "by": "cli"}),
    ]


def test_set_role_makes_an_admin_and_ends_their_sessions(tmp_path: Path):
    create_user(tmp_path)
    user_id = listed(tmp_path)["a@example.com"]["id"]
    keys = open_sessions(tmp_path, user_id)

    result = cli(tmp_path, "set-role", "--email", "a@example.com", "--role", "admin")

    assert result.returncode == 0, result.stderr
    assert listed(tmp_path)["a@example.com"]["role"] == "admin"
    assert live_sessions(tmp_path, keys) == []


def test_disable_then_enable_a_user(tmp_path: Path):
    create_user(tmp_path)
    user_id = listed(tmp_path)["a@example.com"]["id"]
    keys = open_sessions(tmp_path, user_id)

    disabled = cli(tmp_path, "disable", "--email", "a@example.com")

    assert disabled.returncode == 0, disabled.stderr
    assert listed(tmp_path)["a@example.com"]["state"] == "disabled"
    assert live_sessions(tmp_path, keys) == []

    enabled = cli(tmp_path, "enable", "--email", "a@example.com")

    assert enabled.returncode == 0, enabled.stderr
    assert listed(tmp_path)["a@example.com"]["state"] == "active"


def test_revoke_sessions_ends_every_session_of_that_user_only(tmp_path: Path):
    create_user(tmp_path)
    create_user(tmp_path, "b@example.com")
    users = listed(tmp_path)
    ann, bob = users["a@example.com"]["id"], users["b@example.com"]["id"]
    *ann_keys, bob_key = open_sessions(tmp_path, ann, ann, bob)

    result = cli(tmp_path, "revoke-sessions", "--email", "a@example.com")

    assert result.returncode == 0, result.stderr
    assert "revoked 2 session(s)" in result.stdout
    assert live_sessions(tmp_path, [*ann_keys, bob_key]) == [bob_key]

    again = cli(tmp_path, "revoke-sessions", "--email", "a@example.com")
    assert "revoked 0 session(s)" in again.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("set-role", "--role", "admin"),
        ("disable",),
        ("enable",),
        ("revoke-sessions",),
    ],
    ids=lambda args: args[0],
)
def test_unknown_email_exits_1_with_one_line(tmp_path: Path, args: tuple[str, ...]):
    create_user(tmp_path)

    result = cli(tmp_path, args[0], "--email", "nobody@example.com", *args[1:])

    assert "nobody@example.com" in one_line_error(result, 1)
    row = listed(tmp_path)["a@example.com"]
    assert (row["role"], row["state"]) == ("user", "active")


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("frobnicate",),
        ("create-user", "--name", "A"),
        ("create-user", "--email", "a@example.com"),
        ("set-role", "--role", "admin"),
        ("set-role", "--email", "a@example.com", "--role", "root"),
        ("disable",),
        ("revoke-sessions",),
        ("serve", "--port", "eighty"),
    ],
    ids=[
        "no-command",
        "unknown-command",
        "create-without-email",
        "create-without-name",
        "set-role-without-email",
        "set-role-unknown-role",
        "disable-without-email",
        "revoke-without-email",
        "serve-port-not-a-number",
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, args: tuple[str, ...]):
    result = cli(tmp_path, *args)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "users.db").exists()


@pytest.mark.parametrize(
    ("args", "env", "key"),
    [
        (("serve",), {"TORNADO_AUTH_SERVER__PORT": "abc"}, "server.port"),
        (("serve", "--port", "70000"), {}, "server.port"),
        (("list-users",), {"TORNADO_AUTH_SESSIONS__TTL": "forever"}, "sessions.ttl"),
        (("list-users",), {"TORNADO_AUTH_USERS__URL": "memory://"}, "users.url"),
        (("list-users",), {"TORNADO_AUTH_SERVER__PROT": "80"}, "server.prot"),
        (("--config", "missing.yaml", "list-users"), {}, "config"),
    ],
    ids=["env-port", "flag-port", "env-ttl", "users-url", "unknown-env", "missing-config"],
)
def test_invalid_setting_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], key: str
):
    result = cli(tmp_path, *args, env=env)

    line = one_line_error(result, 2)
    assert key in line.lower()
    assert result.stdout == ""


@pytest.fixture
async def mongo_users_url(tmp_path: Path) -> AsyncIterator[str]:
    """A unique MongoDB database for users, dropped afterwards."""
    require_service("mongodb")
    place = Store("mongodb", tmp_path)
    yield place.user_url()
    await place.cleanup()


def test_create_user_and_list_users_on_mongodb(tmp_path: Path, mongo_users_url: str):
    env = {"TORNADO_AUTH_USERS__URL": mongo_users_url}

    created = create_user(tmp_path, env=env)
    duplicate = create_user(tmp_path, "A@example.com", env=env)
    users = listed(tmp_path, env=env)

    assert created.returncode == 0, created.stderr
    assert PASSWORD not in created.stdout + created.stderr
    assert duplicate.returncode == 1
    assert list(users) == ["a@example.com"]
    assert users["a@example.com"]["id"] in created.stdout
    assert not (tmp_path / "users.db").exists()
