"""Store URLs are shown without their password: settings errors, logs, /readyz."""

from __future__ import annotations

import json
import logging

import pytest
from tornado.httpclient import AsyncHTTPClient

from tornado_auth.errors import StoreUnavailable
from tornado_auth.redact import redact, redact_url

from .conftest import (
    Store,
    free_port,
    serving,
    settings_for,
)
from .helpers import cli

SECRET = "s3cret-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:s3cret-Pa55@host:6379/0", "redis://u:***@host:6379/0"),
        ("rediss://:s3cret-Pa55@host/0", "rediss://:***@host/0"),
        ("redis+sentinel://u:s3cret-Pa55@a:1,b:2/m", "redis+sentinel://u:***@a:1,b:2/m"),
        ("mongodb://u:s3cret-Pa55@a:1,b:2/db?x=1", "mongodb://u:***@a:1,b:2/db?x=1"),
        ("mongodb+srv://u:s3cret%40Pa55@cluster/db", "mongodb+srv://u:***@cluster/db"),
        ("redis://u:s3cret/@Pa55@host/0", "redis://u:***@host/0"),  # unescaped "/" and "@"
        ("redis://user@host/0", "redis://user@host/0"),
        ("sqlite:///var/users.db", "sqlite:///var/users.db"),
    ],
)
def test_a_url_is_shown_with_its_password_masked(url, shown):
    assert redact_url(url) == shown
    assert redact(f"cannot use {url!r} now", url) == f"cannot use {shown!r} now"


def test_urls_inside_any_text_lose_their_password():
    text = "tried mongodb://ann:s3cret-Pa55@db:27017/x and redis://:s3cret-Pa55@cache/0 both"
    assert SECRET not in redact(text)
    assert "mongodb://ann:***@db:27017/x" in redact(text)
    error = StoreUnavailable("session", f"redis: cannot reach redis://:{SECRET}@cache/0")
    assert SECRET not in str(error)


def serve_with(name: str, url: str, tmp_path) -> tuple[int, list[str]]:
    """Start ``serve`` with one store URL set; return (exit status, stderr lines)."""
    stores = dict.fromkeys(["TORNADO_AUTH_USERS__URL", "TORNADO_AUTH_SESSIONS__URL"])
    rounds = {"TORNADO_AUTH_USERS__BCRYPT_ROUNDS": None}  # every store and setting as default
    secret = {"TORNADO_AUTH_SECRETS__SECRET_FILE": str(tmp_path / "secret")}
    result = cli(tmp_path, "serve", "--port", "0", env={**stores, **rounds, **secret, name: url})
    return result.returncode, result.stderr.strip().splitlines()


@pytest.mark.parametrize("key", ["sessions.url", "users.url"])
@pytest.mark.parametrize(
    "url",
    [
        f"redis://u:{SECRET}@host:notaport/0",
        f"redis://:{SECRET}@host:99999/0",
        f"redis+sentinel://u:{SECRET}@host:x/master",
        f"mongodb://u:{SECRET}@host:notaport/db",
        f"mongodb://u:{SECRET}@host/db?bogusOption=1",
        f"postgres://u:{SECRET}@host/db",
    ],
)
def test_a_malformed_store_url_exits_2_naming_the_key_without_the_password(key, url, tmp_path):
    name = "TORNADO_AUTH_" + key.upper().replace(".", "__")
    status, lines = serve_with(name, url, tmp_path)
    assert status == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"tornado-auth: invalid setting {key}: ")
    assert SECRET not in lines[0]


async def test_readyz_and_logs_never_show_a_store_password(tmp_path, caplog):
    closed = free_port()  # nothing answers there: both stores are down
    store = Store("sqlite", tmp_path)
    settings = settings_for(
        store,
        sessions__url=f"redis://u:{SECRET}@127.0.0.1:{closed}/0",
        users__url=f"mongodb://u:{SECRET}@127.0.0.1:{closed}/db"
        "?serverSelectionTimeoutMS=200&connectTimeoutMS=200",
    )
    caplog.set_level(logging.DEBUG)
    async with serving(settings) as server:
        response = await AsyncHTTPClient().fetch(server.base_url + "/readyz", raise_error=False)
        login = await server.client().login("ann@example.com", "whatever-password")
    assert response.code == 503
    assert json.loads(response.body)["down"] == ["session store (redis)", "user store (mongodb)"]
    assert login.code == 503
    assert "unavailable" in caplog.text  # the outage was logged ...
    assert SECRET not in response.body.decode() + login.body.decode() + caplog.text  # ... safely
