"""What the CLI prints of user-chosen text can never drive the operator's terminal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth.cli import shown
from tornado_auth.users import User, new_user_id, store_for_url

from .conftest import PASSWORD, USER_STORES, Store, require_service
from .helpers import cli

# name as registered -> as list-users must show it
NAMES = {
    "Eve\x1b[2J\x1b[HAdmin": "Eve\\x1b[2J\\x1b[HAdmin",  # clear the screen, cursor home
    "ok\rroot": "ok\\rroot",  # carriage return: overwrite the line
    "C1\x9b31mred": "C1\\x9b31mred",  # the one-byte CSI
    "gpj.\u202eexe": "gpj.\\u202eexe",  # right-to-left override
    "iso\u2066late\u2069": "iso\\u2066late\\u2069",
    "zero\u200bwidth": "zero\\u200bwidth",
    "tab\tsplit": "tab\\tsplit",  # would forge a column
    "line\u2028break": "line\\u2028break",
    "not\\x1b an escape": "not\\\\x1b an escape",  # a backslash cannot pass for an escape
    "Zoë 中文 😀": "Zoë 中文 😀",  # printable text is left alone
}
EMAIL = "eve\x1b]0;pwned\x07@example.com"
EMAIL_SHOWN = "eve\\x1b]0;pwned\\x07@example.com"


@pytest.fixture(params=USER_STORES)
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """The CLI's environment: users in SQLite under tmp_path, or in a fresh MongoDB database."""
    if request.param == "sqlite":
        yield {}
        return
    require_service("mongodb")
    place = Store("mongodb", tmp_path)
    yield {"TORNADO_AUTH_USERS__URL": place.user_url()}
    await place.cleanup()


def create(tmp_path: Path, env: dict[str, str], email: str, name: str):
    args = ("create-user", "--email", email, "--name", name, "--password-stdin")
    return cli(tmp_path, *args, stdin=PASSWORD + "\n", env=env)


def assert_inert(output: str) -> None:
    """Only printable characters, and newlines and tabs as the output's own structure."""
    assert all(character.isprintable() or character in "\n\t" for character in output), output


async def store_users(
    tmp_path: Path, env: dict[str, str], names: list[str], email: str | None = None
) -> None:
    """Users as an older version or an import left them: registration now refuses control
    characters in names and emails, but what is stored must still print inert. With ``email``,
    one more user, "Eve", has that address."""
    users = store_for_url(env.get("TORNADO_AUTH_USERS__URL", f"sqlite:///{tmp_path}/users.db"))
    await users.start()
    for n, name in enumerate(names):
        user = User(new_user_id(), f"u{n}@example.com", name, "user", "x", float(n))
        await users.add(user)
    if email is not None:
        await users.add(User(new_user_id(), email, "Eve", "user", "x", float(len(names))))
    await users.close()


async def test_list_users_escapes_every_control_bidi_and_format_character(tmp_path: Path, env):
    await store_users(tmp_path, env, list(NAMES), EMAIL)

    listing = cli(tmp_path, "list-users", env=env)

    assert listing.returncode == 0, listing.stderr
    assert_inert(listing.stdout)
    rows = [line.split("\t") for line in listing.stdout.splitlines()[1:]]
    assert len(rows) == len(NAMES) + 1 and all(len(row) == 5 for row in rows)
    assert sorted(row[4] for row in rows) == sorted([*NAMES.values(), "Eve"])
    assert EMAIL_SHOWN in [row[1] for row in rows]

    as_json = cli(tmp_path, "list-users", "--json", env=env)

    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout.isascii()
    assert_inert(as_json.stdout)
    users = json.loads(as_json.stdout)
    assert sorted(user["name"] for user in users) == sorted([*NAMES, "Eve"])
    assert EMAIL in [user["email"] for user in users]


async def test_every_command_escapes_the_email_it_prints(tmp_path: Path, env):
    await store_users(tmp_path, env, [], EMAIL)
    outputs = [
        create(tmp_path, env, EMAIL, "Eve"),  # refused now: the error on stderr
        create(tmp_path, env, EMAIL.replace("\x1b", "x").replace("\x07", "y"), "Eve"),
        cli(tmp_path, "disable", "--email", EMAIL, env=env),
        cli(tmp_path, "enable", "--email", EMAIL, env=env),
        cli(tmp_path, "revoke-sessions", "--email", EMAIL, env=env),
        cli(tmp_path, "set-role", "--email", EMAIL, "--role", "admin", env=env),
        cli(tmp_path, "disable", "--email", "nobody\x1b[2J@example.com", env=env),  # unknown
    ]
    assert [result.returncode for result in outputs] == [1, 0, 0, 0, 0, 0, 1]
    for result in outputs:
        assert_inert(result.stdout + result.stderr)
    assert "Email is not a valid address" in outputs[0].stderr
    assert all(EMAIL_SHOWN in result.stdout for result in outputs[2:6])
    assert "nobody\\x1b[2J@example.com" in outputs[6].stderr


@pytest.mark.parametrize(("text", "expected"), list(NAMES.items()))
def test_shown_escapes_exactly_what_is_not_printable(text: str, expected: str):
    assert shown(text) == expected
