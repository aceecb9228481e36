"""No page that shows or depends on the session may be kept by the browser; static assets are."""

from __future__ import annotations

import re

import pytest

from .conftest import Server
from .helpers import signed_in, submit

# the headers are set by the handlers whichever store is behind them
pytestmark = pytest.mark.store_independent


def assert_not_stored(response) -> None:
    assert response.headers.get("Cache-Control") == "no-store", (
        response.effective_url,
        response.code,
    )
    assert "Etag" not in response.headers  # nothing to revalidate, nothing to hash


async def test_every_page_of_a_signed_in_admin_is_sent_with_no_store(server: Server):
    admin = await signed_in(server, "root@example.com", role="admin", form=True)
    for path in ("/dashboard", "/sessions", "/admin", "/admin?page=2", "/login", "/"):
        assert_not_stored(await admin.get(path))
    dashboard = await admin.get("/dashboard")
    assert b"root@example.com" in dashboard.body  # the very page Back would show


async def test_anonymous_pages_redirects_and_error_pages_are_sent_with_no_store(server: Server):
    user = await signed_in(server, form=True)
    anonymous = server.client()
    responses = [
        await anonymous.get("/login"),
        await anonymous.get("/register"),
        await anonymous.get("/dashboard"),  # the redirect to /login
        await anonymous.get("/no-such-page"),  # the error page
        await user.get("/admin"),  # 403 error page for a signed-in user
        await submit(anonymous, "/register", {"name": "", "email": "x", "password": "x"}),
    ]
    assert [response.code for response in responses] == [200, 200, 302, 404, 403, 400]
    for response in responses:
        assert_not_stored(response)


async def test_sign_out_and_the_api_are_sent_with_no_store(server: Server):
    client = await signed_in(server, form=True)
    assert_not_stored(await client.get("/api/profile"))
    assert_not_stored(await server.client().get("/api/profile"))  # the 401
    signed_out = await submit(client, "/logout", {}, page="/dashboard")
    assert signed_out.code == 302
    assert_not_stored(signed_out)


async def test_static_assets_keep_their_long_lived_caching(server: Server):
    page = await server.client().get("/login")
    for asset in re.findall(rb'(?:href|src)="(/static/[^"]+)"', page.body):
        response = await server.client().get(asset.decode().replace("&amp;", "&"))
        assert response.code == 200, asset
        cache = response.headers.get("Cache-Control", "")
        assert "no-store" not in cache, asset
        assert "max-age=" in cache, (asset, cache)  # versioned URLs: cached, as Tornado does
