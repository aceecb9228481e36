"""The real ``python -m tornado_auth`` console entry, run as a subprocess on SQLite and MongoDB."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tornado_auth import __version__, load_settings, start_services
from tornado_auth.accounts import Origin
from tornado_auth.cli import COMMANDS, _parser
from tornado_auth.sessions import Session, SessionManager, backend_for_url

from .conftest import PASSWORD
from .helpers import LIFETIME, audit_events, cli, cli_environment, create_user, one_line_error

DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def listed(tmp_path: Path, **kwargs) -> dict[str, dict[str, str]]:
    """``list-users`` parsed: email -> {id, role, state, name}."""
    result = cli(tmp_path, "list-users", **kwargs)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split("\t") == ["ID", "EMAIL", "ROLE", "STATE", "NAME"]
    rows = {}
    for line in lines:
        user_id, email, role, state, name = line.split("\t")
        rows[email] = {"id": user_id, "role": role, "state": state, "name": name}
    return rows


async def _open_sessions(tmp_path: Path, user_ids: list[str]) -> list[str]:
    backend = backend_for_url(f"sqlite:///{tmp_path}/sessions.db")
    await backend.start()
    manager = SessionManager(backend.store, backend.events, LIFETIME)
    keys = []
    for user_id in user_ids:
        session = Session()
        session.login(user_id, {"email": "a@example.com"}, False, LIFETIME.ttl)
        await manager.commit(session)
        keys.append(session.key)
    await backend.close()
    return keys


async def _live_sessions(tmp_path: Path, keys: list[str]) -> list[str]:
    backend = backend_for_url(f"sqlite:///{tmp_path}/sessions.db")
    await backend.start()
    live = [key for key in keys if await backend.store.load(key) is not None]
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

    assert one_line_error(result, 1) == "tornado-auth: Password must be 8 to 1024 characters"
    assert "abc1234" not in result.stdout + result.stderr
    assert listed(tmp_path) == {}


def test_invalid_email_exits_1_and_creates_nobody(tmp_path: Path):
    result = create_user(tmp_path, "not-an-email")

    assert one_line_error(result, 1) == "tornado-auth: Email is not a valid address"
    assert listed(tmp_path) == {}


def test_duplicate_email_exits_1_and_keeps_the_first_user(tmp_path: Path):
    first = create_user(tmp_path)

    result = create_user(tmp_path, "A@Example.com")

    assert "a@example.com" in one_line_error(result, 1).lower()
    assert list(listed(tmp_path)) == ["a@example.com"]
    assert listed(tmp_path)["a@example.com"]["id"] in first.stdout


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


# -- help, version, --config anywhere ----------------------------------------------------------


def test_every_command_and_option_has_help():
    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {*COMMANDS, "serve"}
    explained = {a.dest: a.help for a in commands._choices_actions}
    for name, sub in commands.choices.items():
        assert explained[name], f"{name} has no help"
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
    for action in parser._actions:
        assert action.help or action is commands, f"{action.option_strings} has no help"


@pytest.mark.parametrize("command", [(), *((name,) for name in (*COMMANDS, "serve"))])
def test_help_shows_plain_text(tmp_path: Path, command: tuple[str, ...]):
    result = cli(tmp_path, *command, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tornado-auth")
    assert "``" not in result.stdout and ":class:" not in result.stdout
    assert "--config FILE" in result.stdout


def test_version(tmp_path: Path):
    result = cli(tmp_path, "--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tornado-auth {__version__}"


@pytest.mark.parametrize("command", [("list-users",), ("serve",)], ids=lambda c: c[0])
@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_config_is_read_before_or_after_the_command(
    tmp_path: Path, command: tuple[str, ...], before: bool
):
    config = tmp_path / "bad.yaml"
    config.write_text("sessions:\n  ttl: forever\n")
    option = ("--config", str(config))

    result = cli(tmp_path, *(option + command if before else command + option))

    assert "sessions.ttl" in one_line_error(result, 2)


def test_config_after_the_command_chooses_the_stores(tmp_path: Path):
    """The README's ``tornado-auth serve --config FILE`` form, for an admin command: the file's
    users.url is the store written and read."""
    other = tmp_path / "other"
    other.mkdir()
    config = tmp_path / "settings.yaml"
    config.write_text(f"users:\n  url: sqlite:///{other}/users.db\n")
    args = ("create-user", "--email", "c@example.com", "--name", "C", "--password-stdin")
    env: dict[str, str | None] = {"TORNADO_AUTH_USERS__URL": None}  # it would override the file

    created = cli(tmp_path, *args, "--config", str(config), stdin=PASSWORD + "\n", env=env)

    assert created.returncode == 0, created.stderr
    assert (other / "users.db").exists()
    assert not (tmp_path / "users.db").exists()
    assert list(listed(tmp_path, env={"TORNADO_AUTH_USERS__URL": f"sqlite:///{other}/users.db"}))


# -- list-users ----------------------------------------------------------------------------------


def test_list_users_json(tmp_path: Path):
    create_user(tmp_path)
    create_user(tmp_path, "b@example.com", "--role", "admin")
    assert cli(tmp_path, "disable", "--email", "a@example.com").returncode == 0

    result = cli(tmp_path, "list-users", "--json")

    assert result.returncode == 0, result.stderr
    users = {user["email"]: user for user in json.loads(result.stdout)}
    assert set(users) == {"a@example.com", "b@example.com"}
    assert (users["a@example.com"]["role"], users["a@example.com"]["disabled"]) == ("user", True)
    assert (users["b@example.com"]["role"], users["b@example.com"]["disabled"]) == ("admin", False)
    assert isinstance(users["a@example.com"]["createdAt"], float)
    assert not any("password" in key.lower() for user in users.values() for key in user)


def test_list_users_with_no_user_prints_the_header_or_an_empty_array(tmp_path: Path):
    assert listed(tmp_path) == {}
    result = cli(tmp_path, "list-users", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# -- misuse: never a traceback -------------------------------------------------------------------


def test_create_user_without_a_terminal_or_password_stdin_exits_2(tmp_path: Path):
    result = cli(tmp_path, "create-user", "--email", "a@example.com", "--name", "A")

    assert "--password-stdin" in one_line_error(result, 2)
    assert not (tmp_path / "users.db").exists()


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("list-users",), {"TORNADO_AUTH_USERS__URL": "sqlite:///{tmp}"}),  # a directory
        (("revoke-sessions", "--email", "a@example.com"), {"TORNADO_AUTH_SESSIONS__URL": DOWN}),
        (("disable", "--email", "a@example.com"), {"TORNADO_AUTH_SESSIONS__URL": DOWN}),
    ],
    ids=["users-store", "sessions-store-revoke", "sessions-store-disable"],
)
def test_a_store_that_is_down_exits_1_naming_it(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
):
    create_user(tmp_path)
    env = {key: value.format(tmp=tmp_path) for key, value in env.items()}

    result = cli(tmp_path, *args, env=env)

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tornado-auth: ") and "store unavailable" in last
    assert len(last) < 250
    assert result.stdout == ""


def test_demoting_the_last_admin_exits_1_and_changes_nothing(tmp_path: Path):
    create_user(tmp_path, "root@example.com", "--role", "admin")

    for args in (("set-role", "--role", "user"), ("disable",)):
        result = cli(tmp_path, args[0], "--email", "root@example.com", *args[1:])
        assert "last admin" in one_line_error(result, 1)

    row = listed(tmp_path)["root@example.com"]
    assert (row["role"], row["state"]) == ("admin", "active")


# -- the password prompt, on a real terminal -----------------------------------------------------


class Terminal:
    """``python -m tornado_auth ARGS`` on a pseudo-terminal of its own (its controlling tty)."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        environ = cli_environment(tmp_path)
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once, whatever happens
            try:
                # As a shell gives a foreground command: a runner started in the background
                # (``make test &``) passes SIGINT on ignored, and Ctrl-C would do nothing.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.chdir(tmp_path)
                os.execve(sys.executable, [sys.executable, "-m", "tornado_auth", *args], environ)
            finally:
                os._exit(127)
        self.pid, self.fd, self.output = pid, fd, b""
        self.reaped = False
        Terminal.started.append(self)

    started: list[Terminal] = []

    def kill(self) -> None:
        """End the command if a failed test left it running (it would wait at its prompt)."""
        if not self.reaped:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
            self.reaped = True

    def read_until(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {self.output!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                assert chunk, f"ended without {text!r}: {self.output!r}"
                self.output += chunk

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def exit_status(self, timeout: float = 30) -> int:
        """Read the rest of the output, then the exit status (within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"still running: {self.output!r}"
            if not select.select([self.fd], [], [], left)[0]:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.reaped = True
        return os.waitstatus_to_exitcode(status)


@pytest.fixture(autouse=True)
def no_terminal_left_running() -> Iterator[None]:
    yield
    while Terminal.started:
        Terminal.started.pop().kill()


CREATE = ("create-user", "--email", "a@example.com", "--name", "A")


def at_the_second_prompt(tmp_path: Path) -> Terminal:
    """``create-user`` on a terminal, the password typed once, asked to repeat it."""
    terminal = Terminal(tmp_path, *CREATE)
    terminal.read_until(b"Password: ")
    terminal.type(PASSWORD.encode() + b"\r")
    terminal.read_until(b"Repeat password: ")
    return terminal


def test_ctrl_c_at_the_password_prompt_exits_130_at_once(tmp_path: Path):
    terminal = Terminal(tmp_path, *CREATE)
    terminal.read_until(b"Password: ")

    terminal.type(b"\x03")

    assert terminal.exit_status(timeout=10) == 130
    assert b"Traceback" not in terminal.output
    assert not (tmp_path / "users.db").exists()


def test_ctrl_c_at_the_second_prompt_exits_130_at_once(tmp_path: Path):
    terminal = at_the_second_prompt(tmp_path)

    terminal.type(b"\x03")

    assert terminal.exit_status(timeout=10) == 130
    assert b"Traceback" not in terminal.output


def test_the_prompt_asks_twice_and_creates_the_user(tmp_path: Path):
    terminal = at_the_second_prompt(tmp_path)
    terminal.type(PASSWORD.encode() + b"\r")

    assert terminal.exit_status() == 0, terminal.output
    assert PASSWORD.encode() not in terminal.output  # not echoed
    assert list(listed(tmp_path)) == ["a@example.com"]


def test_two_different_passwords_at_the_prompt_exit_1(tmp_path: Path):
    terminal = at_the_second_prompt(tmp_path)
    terminal.type(b"something-else-entirely\r")

    assert terminal.exit_status() == 1
    assert b"passwords do not match" in terminal.output
    assert b"Traceback" not in terminal.output
    assert listed(tmp_path) == {}


async def _enrol_app(tmp_path: Path, email: str) -> None:
    """Turn on an authenticator app for ``email`` in the stores the CLI uses."""
    services = await start_services(load_settings(environ=cli_environment(tmp_path)))
    try:
        user = await services.users.by_email(email)
        assert user is not None
        secret = await services.mfa.begin_totp(user)
        assert await services.mfa.confirm_totp(user, pyotp.TOTP(secret).now(), Origin())
    finally:
        await services.close()


async def _has_app(tmp_path: Path, email: str) -> bool:
    services = await start_services(load_settings(environ=cli_environment(tmp_path)))
    try:
        user = await services.users.by_email(email)
        assert user is not None
        return (await services.mfa.status(user.id)).totp
    finally:
        await services.close()


def test_reset_mfa_removes_a_users_second_factors_and_says_so(tmp_path: Path):
    create_user(tmp_path)
    asyncio.run(_enrol_app(tmp_path, "a@example.com"))
    assert asyncio.run(_has_app(tmp_path, "a@example.com"))

    result = cli(tmp_path, "reset-mfa", "--email", "a@example.com")

    assert result.returncode == 0, result.stderr
    assert "reset the second factors of a@example.com" in result.stdout
    assert not asyncio.run(_has_app(tmp_path, "a@example.com"))
    assert ("mfa_reset", "a@example.com", "tornado-auth cli") in [
        event[:3] for event in audit_events(tmp_path)
    ]
    again = cli(tmp_path, "reset-mfa", "--email", "a@example.com")
    assert "has no second factor to reset" in again.stdout
