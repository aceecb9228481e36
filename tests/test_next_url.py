"""Where a sign-in goes next: only same-site relative paths, whatever text ``next`` holds."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from http.cookies import SimpleCookie

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tornado_auth.handlers.pages import safe_next

from .conftest import PASSWORD, Server, Store
from .helpers import LiveApp, Reply, session_cookie, signed_in, submit

SITE = "https://site.example/app/page?x=1"
HOSTILE = [
    "/\x7f/evil.com",
    "/\x80/evil.com",
    "/\x9b/evil.com",
    "/\u0101/evil.com",
    "/\u202e/evil.com",
    "/\t/evil.com",
    "/ /evil.com",
    "/\\evil.com",
    "/x\\..\\\\evil.com",
    "//evil.com",
    "https://evil.com/",
    "\x00/x",
]
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    # ``live`` is reset for each test, not for each example: the examples of one test share it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
OVER_HTTP = settings(PROPERTY, max_examples=40)
# Arbitrary text, and arbitrary text behind a "/" so that much of it gets past the first check.
next_values = st.one_of(st.text(), st.text().map("/".__add__), st.text().map("//".__add__))


def assert_same_site(target: str) -> None:
    """The target resolves, against any page of the site, to a page of that same site."""
    resolved = urllib.parse.urlsplit(urllib.parse.urljoin(SITE, target))
    assert (resolved.scheme, resolved.netloc) == ("https", "site.example"), target
    assert target.startswith("/") and not target.startswith("//"), target
    assert target.isascii() and target.isprintable() and " " not in target, target
    assert "\\" not in target, target  # browsers read "\" as "/": "/\evil.com" is off-site


@PROPERTY
@given(value=next_values)
def test_safe_next_returns_the_value_or_dashboard_and_always_a_same_site_path(value):
    chosen = safe_next(value)
    assert chosen in (value, "/dashboard")
    assert_same_site(chosen)


@pytest.mark.parametrize("value", HOSTILE)
def test_control_characters_backslashes_and_other_sites_fall_back_to_the_dashboard(value):
    assert safe_next(value) == "/dashboard"


def test_paths_this_app_sends_to_login_are_kept():
    for path in ("/sessions", "/admin?page=2", "/a%20b/%E2%82%AC?q=%7F#top", "/x/../y;z=1"):
        assert safe_next(path) == path


# -- over HTTP, on one store: no store has a say in where a sign-in goes next ----------------------


@pytest.mark.store_independent
@pytest.mark.parametrize("value", HOSTILE[:5])
async def test_a_signed_in_visit_to_login_with_a_hostile_next_goes_to_the_dashboard(
    server: Server, value: str
):
    client = await signed_in(server, form=True)
    response = await client.get("/login?next=" + urllib.parse.quote(value, safe=""))
    assert response.code == 302
    assert response.headers["Location"] == "/dashboard"


@pytest.mark.store_independent
async def test_a_correct_form_sign_in_with_a_hostile_next_signs_in_and_goes_to_the_dashboard(
    server: Server,
):
    await server.add_user("ann@example.com", PASSWORD)
    client = server.client()
    page = "/login?next=" + urllib.parse.quote("/\x7f/evil.com", safe="")
    shown = await client.get(page)
    assert shown.code == 200
    assert b'name="next" value="/dashboard"' in shown.body
    fields = {"email": "ann@example.com", "password": PASSWORD, "next": "/\x7f/evil.com"}
    response = await submit(client, "/login", fields, page=page)
    assert response.code == 302
    assert response.headers["Location"] == "/dashboard"
    assert (await client.get("/dashboard")).code == 200


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    app = LiveApp("sqlite", Store("sqlite", tmp_path_factory.mktemp("next")))
    try:
        app.start()
        yield app
    finally:
        app.stop()


def assert_redirected_within_the_site(reply: Reply) -> None:
    assert reply.status == 302, (reply.status, reply.body[:300])
    assert_same_site(reply.headers["Location"])


@OVER_HTTP
@given(value=next_values)
def test_any_next_on_a_signed_in_visit_to_login_redirects_within_the_site(live, value):
    query = urllib.parse.urlencode({"next": value})
    reply = live.send("GET", f"/login?{query}", {"Cookie": live.cookies["member"]})
    assert_redirected_within_the_site(reply)


@OVER_HTTP
@given(value=next_values)
def test_any_next_through_the_login_form_signs_in_and_redirects_within_the_site(live, value):
    page = live.send("GET", "/login")
    cookie = SimpleCookie(page.headers["Set-Cookie"])["_xsrf"].value
    token = re.search(rb'name="_xsrf" value="([^"]+)"', page.body).group(1).decode()
    fields = {"email": "member@fuzz.test", "password": PASSWORD, "next": value}
    body = urllib.parse.urlencode({**fields, "_xsrf": token})
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"_xsrf={cookie}"}
    reply = live.send("POST", "/login", headers, body.encode())
    assert_redirected_within_the_site(reply)
    signed_in_cookie = session_cookie(reply)
    assert live.send("GET", "/api/dashboard", {"Cookie": signed_in_cookie}).status == 200
