"""The public API an app builds on: gates, mounting, templates, hooks, extra fields, settings."""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web
import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest

import tornado_auth
from tornado_auth import (
    ApiHandler,
    BaseHandler,
    Hook,
    Origin,
    SessionWebSocket,
    SettingsError,
    auth_routes,
    auth_settings,
    load_settings,
    requires,
    role_required,
    start_services,
)

from .conftest import (
    PASSWORD,
    Client,
    Server,
    Store,
    body,
    serving,
    settings_for,
    stop_server,
)
from .helpers import signed_in

REPO = Path(__file__).resolve().parent.parent
real_stores = pytest.mark.parametrize("store", ["sqlite", "redis", "mongodb"], indirect=True)


@asynccontextmanager
async def app_on(store: Store, **app: Any) -> AsyncIterator[Server]:
    """make_app with the app's arguments, served on an unused port."""
    async with serving(settings_for(store), **app) as server:
        yield server


async def handshake(client: Client, path: str) -> tornado.websocket.WebSocketClientConnection:
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    url = client.base_url.replace("http://", "ws://") + path
    return await tornado.websocket.websocket_connect(HTTPRequest(url, headers={"Cookie": cookie}))


# -- the names -----------------------------------------------------------------------------------


def test_every_public_name_is_importable_from_the_package():
    namespace: dict[str, Any] = {}
    exec("from tornado_auth import *", namespace)
    for name in tornado_auth.__all__:
        assert namespace.get(name) is getattr(tornado_auth, name), name
    assert len(set(tornado_auth.__all__)) == len(tornado_auth.__all__)


def test_readme_lists_every_public_name():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it in your own app", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)`", section, re.MULTILINE))
    assert listed == set(tornado_auth.__all__)


def test_readme_code_is_the_examples_code():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it in your own app", 1)[1].split("\n## ", 1)[0]
    source = "\n".join(path.read_text() for path in (REPO / "examples" / "notes").glob("*.py"))
    lines = {line.strip() for line in source.splitlines()}
    snippets = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(snippets) >= 6
    for snippet in snippets:
        for line in filter(str.strip, snippet.splitlines()):
            assert line.strip() in lines, f"README line not in examples/notes: {line!r}"


# -- gates on the app's own handlers -------------------------------------------------------------


def staff(user: Any) -> bool:
    return user.email.endswith("@staff.example.com")


class StaffReport(ApiHandler):
    @requires(staff, "Staff only")
    def get(self) -> None:
        self.send_json({"report": "ok", "by": self.current_user.email})


class AdminPage(BaseHandler):
    @role_required("admin")
    def get(self) -> None:
        self.write("the admin page")


class AdminSocket(SessionWebSocket):
    @role_required("admin")
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await super().get(*args, **kwargs)

    def opened(self) -> None:
        self.write_json({"hello": self.current_user.email})


GATED = [(r"/report", StaffReport), (r"/admin-page", AdminPage), (r"/ws/admin", AdminSocket)]


@pytest.mark.store_independent
async def test_requires_on_an_api_handler_answers_401_and_403_as_json(store):
    async with app_on(store, routes=GATED, prefix="/auth") as server:
        anonymous = await server.client().get("/report")
        assert (anonymous.code, body(anonymous)) == (401, {"error": "Not authenticated"})
        user = await signed_in(server, "ann@example.com", prefix="/auth")
        refused = await user.get("/report")
        assert (refused.code, body(refused)) == (403, {"error": "Staff only"})
        member = await signed_in(server, "sam@staff.example.com", prefix="/auth")
        allowed = await member.get("/report")
        assert body(allowed) == {"report": "ok", "by": "sam@staff.example.com"}


@pytest.mark.store_independent
async def test_role_required_on_a_page_redirects_to_the_mounted_login_with_next(store):
    async with app_on(store, routes=GATED, prefix="/auth") as server:
        anonymous = await server.client().get("/admin-page?tab=users")
        assert anonymous.code == 302
        location = urllib.parse.urlsplit(anonymous.headers["Location"])
        assert location.path == "/auth/login"
        assert urllib.parse.parse_qs(location.query) == {"next": ["/admin-page?tab=users"]}
        user = await signed_in(server, "ann@example.com", prefix="/auth")
        refused = await user.get("/admin-page")
        assert refused.code == 403
        assert refused.headers["Content-Type"].startswith("text/html")
        admin = await signed_in(server, "root@example.com", role="admin", prefix="/auth")
        assert (await admin.get("/admin-page")).body == b"the admin page"


@pytest.mark.store_independent
async def test_role_required_on_a_socket_gates_the_handshake(store):
    async with app_on(store, routes=GATED, prefix="/auth") as server:
        for client, status in [
            (server.client(), 401),
            (await signed_in(server, "ann@example.com", prefix="/auth"), 403),
        ]:
            with pytest.raises(HTTPClientError) as refused:
                await handshake(client, "/ws/admin")
            assert refused.value.code == status
        admin = await signed_in(server, "root@example.com", role="admin", prefix="/auth")
        socket = await handshake(admin, "/ws/admin")
        assert await socket.read_message() == '{"hello": "root@example.com"}'
        socket.close()


# -- mounting ------------------------------------------------------------------------------------


@pytest.mark.store_independent
async def test_only_the_parts_asked_for_are_mounted_under_the_prefix(store):
    async with app_on(store, prefix="/auth", parts=("api",)) as server:
        client = await signed_in(server, "ann@example.com", prefix="/auth")
        assert (await client.get("/auth/api/profile")).code == 200
        assert (await client.get("/auth/healthz")).code == 200
        for path in ("/auth/login", "/auth/dashboard", "/auth/static/css/app.css", "/api/login"):
            assert (await client.get(path)).code == 404, path
        not_mounted = await client.get("/auth/api/set-cookie")  # the demo is a part of its own
        assert (not_mounted.code, body(not_mounted)) == (404, {"error": "Not found"})
        with pytest.raises(HTTPClientError) as refused:
            await handshake(client, "/auth/ws/dashboard")
        assert refused.value.code == 404


@pytest.mark.store_independent
async def test_auth_routes_and_settings_mount_into_a_plain_tornado_application(store):
    services = await start_services(settings_for(store))
    app = tornado.web.Application(
        [*GATED, *auth_routes("/auth", parts=("api",))], **auth_settings(services, prefix="/auth")
    )
    http = tornado.httpserver.HTTPServer(app)
    sock, port = tornado.testing.bind_unused_port()
    http.add_sockets([sock])
    try:
        server = Server(services, port, http)
        member = await signed_in(server, "sam@staff.example.com", prefix="/auth")
        assert body(await member.get("/auth/api/profile"))["email"] == "sam@staff.example.com"
        assert body(await member.get("/report"))["report"] == "ok"
        assert (await member.post("/auth/api/logout")).code == 200
        assert (await member.get("/report")).code == 401
    finally:
        await stop_server(server)


@pytest.mark.store_independent
async def test_the_session_cookie_follows_the_settings_of_the_application_it_is_mounted_in(
    store,
):
    services = await start_services(settings_for(store))
    own = {"secure_cookies": True, "samesite": "Strict"}  # the app's own, over ours
    app = tornado.web.Application(
        auth_routes("/auth", parts=("api",)), **(auth_settings(services, prefix="/auth") | own)
    )
    http = tornado.httpserver.HTTPServer(app)
    sock, port = tornado.testing.bind_unused_port()
    http.add_sockets([sock])
    try:
        server = Server(services, port, http)
        await server.add_user("ann@example.com", PASSWORD)
        body_ = {"email": "ann@example.com", "password": PASSWORD}
        response = await server.client().post("/auth/api/login", body_)
        assert response.code == 200
        [cookie] = [c for c in response.headers.get_list("Set-Cookie") if c.startswith("session=")]
        assert cookie.endswith("; SameSite=Strict; Secure"), cookie
    finally:
        await stop_server(server)


@pytest.mark.store_independent
async def test_signing_in_on_the_mounted_pages_lands_on_the_mounted_dashboard(store):
    async with app_on(store, prefix="/auth", parts=("api", "pages")) as server:
        await server.add_user("ann@example.com", PASSWORD)
        browser = server.client()
        form = (await browser.get("/auth/login")).body
        token = re.search(rb'name="_xsrf" value="([^"]+)"', form).group(1).decode()
        fields = {"email": "ann@example.com", "password": PASSWORD, "_xsrf": token}
        signed_in = await browser.request(
            "POST",
            "/auth/login",
            raw=urllib.parse.urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert signed_in.headers["Location"] == "/auth/dashboard"
        again = await browser.get("/auth/login")  # already signed in
        assert again.headers["Location"] == "/auth/dashboard"
        assert (await browser.get("/auth/dashboard")).code == 200


@pytest.mark.store_independent
async def test_a_base_template_in_template_path_restyles_every_page(store, tmp_path):
    own = tmp_path / "templates"
    own.mkdir()
    (own / "base.html").write_text(
        '<!doctype html><title>{% block title %}{% end %}</title><p id="our-app">Our app</p>'
        "<main>{% block main %}{% end %}</main>{% block scripts %}{% end %}"
    )
    async with app_on(store, prefix="/auth", template_path=own) as server:
        client = server.client()
        for path, own_content in [
            ("/auth/login", b"Sign in"),
            ("/auth/register", b"Create"),
            ("/auth/no-such-page", b"Not found"),
        ]:
            page = await client.get(path)
            assert b'<p id="our-app">Our app</p>' in page.body, path
            assert own_content in page.body, path
    async with app_on(store, prefix="/auth") as server:
        assert b"our-app" not in (await server.client().get("/auth/login")).body


# -- hooks ---------------------------------------------------------------------------------------


@real_stores
async def test_sync_and_async_hooks_run_and_a_raising_one_is_only_logged(store, caplog):
    async with app_on(store, prefix="/auth") as server:
        hooks = server.services.accounts.hooks
        seen: list[tuple[str, str]] = []
        ended = asyncio.Event()

        def remember_sign_in(user: Any, origin: Origin) -> None:
            seen.append(("signed_in", user.email))

        async def remember_sign_in_later(user: Any, origin: Origin) -> None:
            await asyncio.sleep(0)
            seen.append(("signed_in async", origin.ip))

        def broken(user: Any, origin: Origin) -> None:
            raise RuntimeError("the hook is broken")

        @hooks.on("registered")
        async def remember_registration(user: Any, origin: Origin) -> None:
            seen.append(("registered", user.name))

        hooks.add("signed_in", remember_sign_in)
        hooks.add(Hook.SIGNED_IN, broken)
        hooks.add("signed_in", remember_sign_in_later)
        hooks.add("signed_out", lambda user_id, origin: seen.append(("signed_out", user_id)))
        hooks.add("session_ended", lambda user_id, reason: ended.set())

        client = server.client()
        registered = await client.post(
            "/auth/api/register", {"email": "ann@example.com", "password": PASSWORD, "name": "Ann"}
        )
        user_id = body(registered)["user"]["id"]
        with caplog.at_level(logging.ERROR, logger="tornado_auth.hooks"):
            signed_in = await client.post(
                "/auth/api/login", {"email": "ann@example.com", "password": PASSWORD}
            )
        assert signed_in.code == 200
        assert "signed_in hook broken failed" in caplog.text
        assert "the hook is broken" in caplog.text and PASSWORD not in caplog.text
        assert (await client.post("/auth/api/logout")).code == 200
        await asyncio.wait_for(ended.wait(), 2.0)
        assert seen == [
            ("registered", "Ann"),
            ("signed_in", "ann@example.com"),
            ("signed_in async", "127.0.0.1"),
            ("signed_out", user_id),
        ]


# -- extra user fields ---------------------------------------------------------------------------


@pytest.mark.user_stores
async def test_extra_user_fields_round_trip(store):
    async with app_on(store, prefix="/auth") as server:
        accounts, users = server.services.accounts, server.services.users
        user = await server.add_user("ann@example.com", PASSWORD)
        assert user.extra == {}

        added = await accounts.set_extra(user.id, colour="#aa0000", languages=["en", "fr"])
        assert added.extra == {"colour": "#aa0000", "languages": ["en", "fr"]}
        updated = await accounts.set_extra(user.id, colour="#00aa00")
        assert updated.extra == {"colour": "#00aa00", "languages": ["en", "fr"]}
        removed = await accounts.set_extra(user.id, languages=None)
        assert removed.extra == {"colour": "#00aa00"}
        assert (await users.get(user.id)).extra == {"colour": "#00aa00"}

        for bad in [
            {"1st": 1},
            {"a.b": 1},
            {"$set": 1},
            {"with space": 1},
            {"x" * 65: 1},
            {"blob": object()},
            {"big": "x" * 20000},
        ]:
            with pytest.raises(ValueError):
                await accounts.set_extra(user.id, **bad)
        assert (await users.get(user.id)).extra == {"colour": "#00aa00"}
        assert await accounts.set_extra("0" * 24, colour="#000000") is None

        client = await signed_in(server, "ann@example.com", prefix="/auth")
        assert body(await client.get("/auth/api/profile"))["extra"] == {"colour": "#00aa00"}


# -- settings ------------------------------------------------------------------------------------


def test_load_settings_from_a_nested_or_dotted_dict():
    settings = load_settings(
        environ={},
        overrides={"sessions": {"ttl": "12h", "url": "memory://"}, "users.bcrypt_rounds": 5},
    )
    assert settings["sessions.ttl"] == 12 * 3600
    assert settings["sessions.url"] == "memory://"
    assert settings["users.bcrypt_rounds"] == 5
    assert settings["sessions.remember_me_ttl"] == 30 * 86400  # the rest keep their defaults


def test_load_settings_from_a_file_then_the_environment_then_overrides(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("sessions:\n  ttl: 2h\n  cookie_name: sid\nserver:\n  port: 9000\n")
    environ = {"TORNADO_AUTH_SESSIONS__TTL": "3h", "TORNADO_AUTH_SERVER__PORT": "9100"}
    settings = load_settings(config, environ=environ, overrides={"server": {"port": 9200}})
    assert settings["sessions.cookie_name"] == "sid"  # the file
    assert settings["sessions.ttl"] == 3 * 3600  # the environment over the file
    assert settings["server.port"] == 9200  # overrides over both
    named = load_settings(environ={"TORNADO_AUTH_CONFIG": str(config)})
    assert named["sessions.ttl"] == 2 * 3600


@pytest.mark.parametrize(
    ("config", "environ", "overrides", "key"),
    [
        (None, {}, {"sessions": {"ttl": "soon"}}, "sessions.ttl"),
        (None, {}, {"sessions.colour": "red"}, "sessions.colour"),
        (None, {"TORNADO_AUTH_SERVER__PORT": "99999"}, None, "server.port"),
        ("missing.yaml", {}, None, "config"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path, config, environ, overrides, key):
    with pytest.raises(SettingsError, match=re.escape(key)):
        load_settings(config and tmp_path / config, environ=environ, overrides=overrides)
