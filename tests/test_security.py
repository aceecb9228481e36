"""Security policy: throttling, cookies, cross-site refusal, headers, key rotation, audit trail.

Throttling counts in the session store: on every session store. The audit trail is kept by the
user store: on each user store. Cookies, cross-site refusal, headers and key rotation (a cookie
signed with a removed key is refused before any store is asked) are decided by the HTTP handling
whichever store is behind it: on one store."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest
import tornado.web
from tornado import httputil
from tornado.web import decode_signed_value

from tornado_auth.handlers.headers import CSP, SecurityHeaders

from .conftest import (
    PASSWORD,
    Client,
    Server,
    Store,
    body,
    serving,
    settings_for,
    start_server,
    stop_server,
)
from .helpers import submit

SECRET = "x" * 40


@pytest.fixture
async def proxied(store: Store):
    """The app behind a trusted proxy, so tests can speak from several client addresses."""
    async with serving(
        settings_for(store, server__xheaders=True, throttle__ip_failures=15)
    ) as server:
        yield server


def from_ip(client: Client, ip: str) -> Client:
    original = client.request

    async def request(method, path, body=None, headers=None, raw=None):
        return await original(method, path, body, {"X-Real-Ip": ip, **(headers or {})}, raw)

    client.request = request
    return client


async def fail(client: Client, email: str, times: int) -> list[int]:
    return [(await client.login(email, "wrong password")).code for _ in range(times)]


# -- throttling ------------------------------------------------------------------------------------


async def test_ten_failures_for_one_account_from_one_ip_get_429_with_retry_after(proxied: Server):
    await proxied.add_user("ann@example.com", PASSWORD)
    attacker = from_ip(proxied.client(), "198.51.100.1")
    assert await fail(attacker, "ann@example.com", 10) == [401] * 10
    blocked = await attacker.login("ann@example.com", PASSWORD)  # even the right password
    assert blocked.code == 429
    wait = int(blocked.headers["Retry-After"])
    assert body(blocked) == {"error": f"Too many failed sign-ins, try again in {wait} s"}
    assert 0 < wait <= 600


async def test_an_attacker_elsewhere_cannot_lock_the_real_user_out(proxied: Server):
    await proxied.add_user("ann@example.com", PASSWORD)
    attacker = from_ip(proxied.client(), "198.51.100.1")
    await fail(attacker, "ann@example.com", 12)
    ann = from_ip(proxied.client(), "203.0.113.9")
    assert (await ann.login("ann@example.com", PASSWORD)).code == 200


async def test_success_resets_the_account_ip_counter(proxied: Server):
    await proxied.add_user("ann@example.com", PASSWORD)
    ann = from_ip(proxied.client(), "203.0.113.9")
    assert await fail(ann, "ann@example.com", 9) == [401] * 9
    assert (await ann.login("ann@example.com", PASSWORD)).code == 200
    assert await fail(ann, "ann@example.com", 5) == [401] * 5


async def test_one_ip_is_capped_across_accounts(proxied: Server):
    sprayer = from_ip(proxied.client(), "198.51.100.7")
    codes = [
        (await sprayer.login(f"user{index}@example.com", "wrong password")).code
        for index in range(16)
    ]
    assert codes == [401] * 15 + [429]
    other = from_ip(proxied.client(), "198.51.100.8")
    assert (await other.login("user0@example.com", "wrong password")).code == 401


@pytest.mark.store_independent
async def test_login_form_is_throttled_too(proxied: Server):
    await proxied.add_user("ann@example.com", PASSWORD)
    attacker = from_ip(proxied.client(), "198.51.100.1")
    await fail(attacker, "ann@example.com", 10)
    response = await submit(attacker, "/login", {"email": "ann@example.com", "password": PASSWORD})
    assert response.code == 429
    assert "Retry-After" in response.headers


# -- cookies and headers -------------------------------------------------------------------------


@pytest.mark.store_independent
async def test_production_cookie_is_host_prefixed_secure_httponly_lax(store: Store):
    async with serving(
        settings_for(store, env="production", secrets__cookie_secret=SECRET)
    ) as server:
        await server.add_user("ann@example.com", PASSWORD)
        response = await server.client().login("ann@example.com", PASSWORD)
        [cookie] = response.headers.get_list("Set-Cookie")
        assert cookie.startswith("__Host-session=")
        for attribute in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
            assert attribute in cookie
        assert "Domain" not in cookie
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        demo = await server.client().get("/api/set-cookie")
        assert "Secure" in demo.headers["Set-Cookie"]


@pytest.mark.store_independent
async def test_samesite_strict_by_setting(store: Store):
    async with serving(settings_for(store, sessions__samesite="strict")) as server:
        await server.add_user("ann@example.com", PASSWORD)
        response = await server.client().login("ann@example.com", PASSWORD)
        assert "SameSite=Strict" in response.headers["Set-Cookie"]


@pytest.mark.store_independent
async def test_development_cookie_works_over_plain_http(server: Server):
    await server.add_user("ann@example.com", PASSWORD)
    client = server.client()
    response = await client.login("ann@example.com", PASSWORD)
    assert "Secure" not in response.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in response.headers
    assert (await client.get("/api/dashboard")).code == 200


@pytest.mark.store_independent
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://sub.example"},
    ],
)
async def test_cross_site_posts_are_refused(server: Server, headers):
    await server.add_user("ann@example.com", PASSWORD)
    client = server.client()
    await client.login("ann@example.com", PASSWORD)
    for path, payload in (("/api/logout", None), ("/api/sessions/revoke-others", None)):
        response = await client.request("POST", path, payload, headers=headers)
        assert response.code == 403
        assert body(response) == {"error": "Cross-site request refused"}
    login = await server.client().request(
        "POST", "/api/login", {"email": "ann@example.com", "password": PASSWORD}, headers
    )
    assert login.code == 403
    assert (await client.get("/api/dashboard")).code == 200  # nothing was changed


@pytest.mark.store_independent
async def test_same_origin_browser_posts_are_accepted(server: Server):
    await server.add_user("ann@example.com", PASSWORD)
    headers = {"Origin": server.base_url, "Sec-Fetch-Site": "same-origin"}
    body_ = {"email": "ann@example.com", "password": PASSWORD}
    assert (await server.client().request("POST", "/api/login", body_, headers)).code == 200


@pytest.mark.store_independent
@pytest.mark.parametrize(
    "path",
    ["/healthz", "/api/dashboard", "/api/nope", "/login", "/nowhere", "/static/css/app.css",
     "/static/nope.css", "/static/../settings.yaml"],
)  # fmt: skip
async def test_every_response_carries_the_security_headers(server: Server, path):
    response = await server.client().get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Request-Id"]
    assert "Server" not in response.headers


ALWAYS = ["Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
          "X-Frame-Options", "Cache-Control"]  # fmt: skip


@pytest.mark.store_independent
async def test_the_headers_of_an_answer_in_their_order(server: Server):
    response = await server.client().get("/healthz", headers={"X-Request-Id": "abc-1"})
    names = [name for name, _ in response.headers.get_all()]
    assert names[:8] == ["Content-Type", "Date", "X-Request-Id", *ALWAYS]
    assert set(names[8:]) <= {"Content-Length", "Connection"}
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert response.headers["X-Request-Id"] == "abc-1"
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["Date"].endswith(" GMT")


def handler(secure_cookies: bool) -> SecurityHeaders:
    class Connection:
        def set_close_callback(self, callback: Any) -> None:
            pass

    app = tornado.web.Application(secure_cookies=secure_cookies)
    start = httputil.RequestStartLine("GET", "/", "HTTP/1.1")
    request = httputil.HTTPServerRequest(
        start_line=start,
        headers=httputil.HTTPHeaders({"Host": "a", "X-Request-Id": "r-1"}),
        connection=Connection(),
    )
    return SecurityHeaders(app, request)


@pytest.mark.parametrize("secure_cookies", [False, True])
def test_clear_starts_a_response_as_tornados_clear_does_but_for_the_server_header(
    secure_cookies: bool,
):
    ours, tornados = handler(secure_cookies), handler(secure_cookies)
    tornado.web.RequestHandler.clear(tornados)  # Tornado's, then our set_default_headers
    tornados.clear_header("Server")
    assert vars(ours).keys() == vars(tornados).keys()
    for name in ("_write_buffer", "_status_code", "_reason"):
        assert getattr(ours, name) == getattr(tornados, name)
    for headers in (ours._headers, tornados._headers):  # made a moment apart: the same format
        assert headers["Date"] == httputil.format_timestamp(
            email.utils.parsedate_to_datetime(headers["Date"])
        )
    ours._headers["Date"] = tornados._headers["Date"]
    assert list(ours._headers.get_all()) == list(tornados._headers.get_all())
    hsts = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
    assert (hsts in ours._headers.get_all()) == secure_cookies


# -- key rotation --------------------------------------------------------------------------------


@pytest.mark.store_independent
async def test_removing_an_old_key_version_ends_sessions_only_it_signed(store: Store):
    old_only = {1: "a" * 40}
    first = await start_server(
        settings_for(store, secrets__cookie_secret=old_only, secrets__key_version=1)
    )
    await first.add_user("ann@example.com", PASSWORD)
    signed_by_1 = first.client()
    await signed_by_1.login("ann@example.com", PASSWORD)
    both = {1: "a" * 40, 2: "b" * 40}
    second = await start_server(
        first.services.settings, first.services, cookie_secret=both, key_version=2
    )
    signed_by_2 = second.client()
    await signed_by_2.login("ann@example.com", PASSWORD)
    only_new = {2: "b" * 40}
    third = await start_server(
        first.services.settings, first.services, cookie_secret=only_new, key_version=2
    )
    try:
        signed_by_1.base_url = signed_by_2.base_url = third.base_url
        ended = await signed_by_1.get("/api/dashboard")
        assert ended.code == 401
        assert "session=" in ended.headers["Set-Cookie"]  # the dead cookie is cleared
        assert (await signed_by_2.get("/api/dashboard")).code == 200
    finally:
        second.http.stop()
        third.http.stop()
        await stop_server(first)


# -- audit trail ---------------------------------------------------------------------------------


@pytest.mark.user_stores
async def test_audit_trail_records_who_what_where_without_tokens(server: Server):
    admin_user = await server.add_user("root@example.com", PASSWORD, role="admin")
    ann = await server.add_user("ann@example.com", PASSWORD)
    admin = server.client()
    await admin.login("root@example.com", PASSWORD)
    user = server.client()
    await user.request(
        "POST",
        "/api/login",
        {"email": "ann@example.com", "password": "wrong password"},
        headers={"User-Agent": "AuditProbe/1.0"},
    )
    await user.login("ann@example.com", PASSWORD)
    token = decode_signed_value(server.secret, "session", user.cookies["session"].strip('"'))
    await user.post(
        "/api/password", {"currentPassword": PASSWORD, "newPassword": "a brand new secret"}
    )
    await admin.request("PATCH", f"/api/admin/users/{ann.id}", {"role": "admin"})
    await admin.request("PATCH", f"/api/admin/users/{ann.id}", {"disabled": True})
    await admin.request("DELETE", f"/api/admin/users/{ann.id}/sessions")
    await admin.post("/api/logout")
    admin = server.client()
    await admin.login("root@example.com", PASSWORD)

    response = await admin.get("/api/admin/audit?perPage=100")
    assert response.code == 200
    entries = body(response)["entries"]
    events = [entry["event"] for entry in reversed(entries)]
    assert events == [
        "registered",
        "registered",
        "signin",
        "signin_failed",
        "signin",
        "password_changed",
        "role_changed",
        "user_disabled",
        "sessions_revoked",
        "logout",
        "signin",
    ]
    failed = next(e for e in entries if e["event"] == "signin_failed")
    assert failed["email"] == "ann@example.com" and failed["userAgent"] == "AuditProbe/1.0"
    assert failed["ip"] == "127.0.0.1" and failed["at"] > 0
    role = next(e for e in entries if e["event"] == "role_changed")
    assert role["userId"] == ann.id and role["detail"] == {"role": "admin", "by": admin_user.id}
    signin = next(e for e in entries if e["event"] == "signin" and e["userId"] == ann.id)
    assert len(signin["session"]) == 32
    text = response.body.decode()
    assert token.decode() not in text and PASSWORD not in text
    from tornado_auth.sessions import token_key

    assert token_key(token.decode()) not in text  # a keyed hash, not the store key


@pytest.mark.user_stores
async def test_audit_is_admin_only_and_paginated(server: Server):
    assert (await server.client().get("/api/admin/audit")).code == 401
    await server.add_user("ann@example.com", PASSWORD)
    user = server.client()
    await user.login("ann@example.com", PASSWORD)
    assert (await user.get("/api/admin/audit")).code == 403
    await server.add_user("root@example.com", PASSWORD, role="admin")
    admin = server.client()
    await admin.login("root@example.com", PASSWORD)
    page = body(await admin.get("/api/admin/audit?page=3&perPage=1"))
    # Newest first: root's sign-in and registration, then ann's sign-in and registration.
    assert page["total"] == 4 and page["page"] == 3 and len(page["entries"]) == 1
    assert page["entries"][0]["email"] == "ann@example.com"
    assert page["entries"][0]["event"] == "signin"
