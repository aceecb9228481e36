"""Browser pages over HTTP: redirects, XSRF-protected forms, no inline script. What a page does
with the sessions (listing and revoking them, signing out, a role change ending them) runs on
every session store; the forms, redirects and headers, which no store decides, on one."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from tornado_auth.handlers.pages import safe_next

from .conftest import PASSWORD
from .helpers import signed_in, submit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/sessions", "/sessions"),
        ("/admin?page=2", "/admin?page=2"),
        ("//evil.example/x", "/dashboard"),
        ("/\\evil.example", "/dashboard"),
        ("https://evil.example/", "/dashboard"),
        ("javascript:alert(1)", "/dashboard"),
        ("/ok\r\nSet-Cookie: x=1", "/dashboard"),
        ("", "/dashboard"),
        (None, "/dashboard"),
    ],
)
def test_next_accepts_only_same_site_relative_paths(value, expected):
    assert safe_next(value) == expected


@pytest.mark.store_independent
async def test_anonymous_page_redirects_to_login_with_next(server):
    response = await server.client().get("/sessions")
    assert response.code == 302
    assert response.headers["Location"] == "/login?next=/sessions"
    assert (await server.client().get("/")).headers["Location"] == "/dashboard"


@pytest.mark.store_independent
async def test_login_form_signs_in_and_goes_to_next(server):
    await server.add_user("ann@example.com", PASSWORD)
    client = server.client()
    fields = {"email": "ann@example.com", "password": PASSWORD, "next": "/sessions"}
    response = await submit(client, "/login", fields, page="/login?next=/sessions")
    assert response.code == 302
    assert response.headers["Location"] == "/sessions"
    dashboard = await client.get("/dashboard")
    assert dashboard.code == 200
    assert b"ann@example.com" in dashboard.body


@pytest.mark.store_independent
async def test_login_form_refuses_an_offsite_next(server):
    await server.add_user("ann@example.com", PASSWORD)
    fields = {"email": "ann@example.com", "password": PASSWORD, "next": "//evil.example/"}
    response = await submit(server.client(), "/login", fields)
    assert response.headers["Location"] == "/dashboard"


@pytest.mark.store_independent
async def test_login_form_with_wrong_password_shows_an_error(server):
    await server.add_user("ann@example.com", PASSWORD)
    response = await submit(
        server.client(), "/login", {"email": "ann@example.com", "password": "nope"}
    )
    assert response.code == 401
    assert b"Invalid email or password" in response.body
    assert b'value="ann@example.com"' in response.body


@pytest.mark.store_independent
async def test_form_post_without_xsrf_token_is_refused(server):
    await server.add_user("ann@example.com", PASSWORD)
    body = urllib.parse.urlencode({"email": "ann@example.com", "password": PASSWORD})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await server.client().request("POST", "/login", raw=body, headers=headers)
    assert response.code == 403
    assert "Set-Cookie" not in response.headers or "session=" not in response.headers["Set-Cookie"]


@pytest.mark.store_independent
async def test_register_form_creates_account_and_signs_in(server):
    client = server.client()
    fields = {"name": "New", "email": "new@example.com", "password": PASSWORD}
    response = await submit(client, "/register", fields)
    assert response.code == 302
    assert (await client.get("/dashboard")).code == 200
    again = await submit(server.client(), "/register", fields)
    assert again.code == 409
    short = await submit(server.client(), "/register", {**fields, "password": "short"})
    assert short.code == 400


async def test_sessions_page_revokes_other_devices(server):
    laptop = await signed_in(server, form=True)
    phone = server.client()
    await submit(phone, "/login", {"email": "ann@example.com", "password": PASSWORD})
    page = await laptop.get("/sessions")
    assert page.code == 200
    assert page.body.count(b"/revoke") >= 2
    asked = await submit(laptop, "/sessions/revoke-others", {}, page="/sessions")
    assert asked.code == 200 and b"Sign out everywhere else?" in asked.body
    assert (await phone.get("/dashboard")).code == 200  # nothing is done before the answer
    fields = {"confirm": "1"}
    response = await submit(laptop, "/sessions/revoke-others", fields, page="/sessions")
    assert response.headers["Location"] == "/sessions"
    assert (await phone.get("/dashboard")).code == 302
    assert (await laptop.get("/dashboard")).code == 200


async def test_logout_form_ends_the_session(server):
    client = await signed_in(server, form=True)
    response = await submit(client, "/logout", {}, page="/dashboard")
    assert response.headers["Location"] == "/login"
    assert (await client.get("/dashboard")).code == 302


async def test_admin_page_is_for_admins_and_changes_roles(server):
    user = await signed_in(server, form=True)
    assert (await user.get("/admin")).code == 403
    admin = await signed_in(server, "root@example.com", role="admin", form=True)
    page = await admin.get("/admin")
    assert page.code == 200 and b"ann@example.com" in page.body
    target = await server.services.users.by_email("ann@example.com")
    fields = {"action": "role", "role": "admin"}
    asked = await submit(admin, f"/admin/users/{target.id}", fields, page="/admin")
    assert asked.code == 200 and b"Make ann@example.com an admin?" in asked.body
    assert (await server.services.users.get(target.id)).role == "user"
    fields["confirm"] = "1"
    response = await submit(admin, f"/admin/users/{target.id}", fields, page="/admin")
    assert response.code == 302
    assert (await server.services.users.get(target.id)).role == "admin"
    assert (await user.get("/dashboard")).code == 302  # that session ended with the role change


@pytest.mark.store_independent
@pytest.mark.parametrize(
    "path", ["/login", "/register", "/dashboard", "/sessions", "/account", "/admin"]
)
async def test_pages_have_strict_csp_and_no_inline_script_or_style(server, path):
    admin = await signed_in(server, "root@example.com", role="admin", form=True)
    client = server.client() if path in ("/login", "/register") else admin
    response = await client.get(path)
    assert response.code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    for tag in re.findall(rb"<script[^>]*>", response.body):
        assert b"src=" in tag
    assert not re.search(rb"<[^>]+\son[a-z]+\s*=", response.body)  # no inline handlers
    assert b"<style" not in response.body and b" style=" not in response.body


@pytest.mark.store_independent
async def test_unknown_page_is_an_html_404(server):
    response = await server.client().get("/nowhere")
    assert response.code == 404
    assert response.headers["Content-Type"].startswith("text/html")
