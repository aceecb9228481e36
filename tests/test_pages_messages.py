"""The pages' messages and rules, on SQLite and on Redis + MongoDB: throttled and disabled sign-ins,
flash messages after every action, confirmations, the last admin, the account page, admin search."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from tornado_auth.handlers.pages import duration, relative

from .conftest import (
    PASSWORD,
    Client,
    Server,
    Store,
    serving,
    settings_for,
)
from .helpers import signed_in, submit

pytestmark = pytest.mark.stores("sqlite", "redis")  # "redis": Redis sessions and MongoDB users


@pytest.fixture
async def site(store: Store) -> AsyncIterator[Server]:
    async with serving(settings_for(store, throttle__account_ip_failures=3)) as server:
        yield server


def flash_of(body: bytes) -> tuple[str, str] | None:
    found = re.search(rb'<p class="flash flash-(\w+)"[^>]*>([^<]*)</p>', body)
    return (found.group(1).decode(), found.group(2).decode()) if found else None


async def follow(client: Client, response) -> bytes:
    """The page a redirect leads to, as the browser shows it."""
    assert response.code == 302, response.body
    page = await client.get(response.headers["Location"])
    return page.body


def test_waits_and_times_read_as_words():
    assert duration(1) == "1 second"
    assert duration(59) == "59 seconds"
    assert duration(600) == "10 minutes"
    assert duration(3600) == "1 hour"
    assert relative(1000.0, 1010.0) == "just now"
    assert relative(1000.0, 1300.0) == "5 minutes ago"
    assert relative(1000.0 + 2 * 86400, 1000.0) == "in 2 days"


async def test_throttled_login_keeps_the_form_and_says_when_to_try_again(site):
    await site.add_user("ann@example.com", PASSWORD)
    client = site.client()
    for _ in range(3):
        await submit(client, "/login", {"email": "ann@example.com", "password": "wrong"})
    refused = await submit(client, "/login", {"email": "ann@example.com", "password": PASSWORD})
    assert refused.code == 429
    wait = int(refused.headers["Retry-After"])
    assert 0 < wait <= 600
    text = refused.body.decode()
    assert f"Try again in {duration(wait)}." in text
    assert 'name="password"' in text and 'value="ann@example.com"' in text  # the form stays


async def test_disabled_account_is_told_so_after_the_right_password_only(site):
    user = await site.add_user("ann@example.com", PASSWORD)
    await site.services.users.set(user.id, disabled=True)
    wrong = await submit(site.client(), "/login", {"email": "ann@example.com", "password": "nope"})
    assert wrong.code == 401 and b"Invalid email or password." in wrong.body
    assert b"disabled" not in wrong.body
    right = await submit(
        site.client(), "/login", {"email": "ann@example.com", "password": PASSWORD}
    )
    assert right.code == 403 and b"This account is disabled." in right.body
    assert "session=" not in right.headers.get("Set-Cookie", "")
    api = await site.client().login("ann@example.com", PASSWORD)
    assert api.code == 401  # the API's contract: one answer for every refused sign-in


@pytest.mark.store_independent  # refused before any store is asked
async def test_register_lists_every_problem_tied_to_its_field_and_keeps_what_was_typed(site):
    fields = {"name": "", "email": "not-an-address", "password": "short"}
    response = await submit(site.client(), "/register", fields)
    assert response.code == 400
    text = response.body.decode()
    assert "There are 3 problems" in text
    for field in ("name", "email", "password"):
        assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', text)
        assert re.search(rf'id="{field}"[^>]*aria-describedby="{field}-error', text)
        assert f'id="{field}-error"' in text
    assert 'value="not-an-address"' in text
    assert 'value="short"' not in text  # never a password
    assert ".." not in re.sub(r"<[^>]+>", "", text)


@pytest.mark.store_independent  # the message is in a cookie
async def test_deliberate_sign_out_says_so_and_forced_ones_are_warnings(site):
    client = await signed_in(site, form=True)
    body = await follow(client, await submit(client, "/logout", {}, page="/dashboard"))
    assert flash_of(body) == ("info", "You have signed out.")
    assert flash_of((await client.get("/login")).body) is None  # shown once
    ended = await site.client().get("/login?ended=revoked")
    assert b'class="flash flash-warning"' in ended.body


async def test_revoking_asks_first_then_reports(site):
    laptop = await signed_in(site, form=True)
    phone = site.client()
    await submit(phone, "/login", {"email": "ann@example.com", "password": PASSWORD})
    sessions = (await laptop.get("/sessions")).body.decode()
    ids = re.findall(r"/sessions/([0-9a-f]{32})/revoke", sessions)
    assert len(ids) == 2
    other = ids[1]  # the current device comes first
    assert sessions.index("This device") < sessions.index(f"/sessions/{other}/revoke")
    asked = await submit(laptop, f"/sessions/{other}/revoke", {}, page="/sessions")
    assert asked.code == 200 and b"Revoke this session?" in asked.body
    assert (await phone.get("/dashboard")).code == 200
    done = await submit(laptop, f"/sessions/{other}/revoke", {"confirm": "1"}, page="/sessions")
    assert flash_of(await follow(laptop, done))[0] == "success"
    assert (await phone.get("/dashboard")).code == 302


async def test_nobody_can_demote_or_disable_the_last_admin(site):
    admin = await signed_in(site, "root@example.com", role="admin", form=True)
    root = await site.services.users.by_email("root@example.com")
    for fields in ({"action": "role", "role": "user"}, {"action": "disable"}):
        asked = await submit(admin, f"/admin/users/{root.id}", fields, page="/admin")
        assert b"you are signed out at once" in asked.body.lower()  # it says what will happen
        response = await submit(
            admin, f"/admin/users/{root.id}", {**fields, "confirm": "1"}, page="/admin"
        )
        kind, text = flash_of(await follow(admin, response))
        assert kind == "error" and "last admin" in text
        stored = await site.services.users.get(root.id)
        assert stored.role == "admin" and not stored.disabled
    api = await admin.request("PATCH", f"/api/admin/users/{root.id}", {"role": "user"})
    assert api.code == 409


async def test_demoting_oneself_with_another_admin_signs_out_and_says_why(site):
    admin = await signed_in(site, "root@example.com", role="admin", form=True)
    await site.add_user("second@example.com", PASSWORD, role="admin")
    root = await site.services.users.by_email("root@example.com")
    fields = {"action": "role", "role": "user", "confirm": "1"}
    response = await submit(admin, f"/admin/users/{root.id}", fields, page="/admin")
    assert response.headers["Location"] == "/login"
    kind, text = flash_of(await follow(admin, response))
    assert kind == "warning" and "You are now a user" in text
    assert (await site.services.users.get(root.id)).role == "user"


async def test_admin_disables_another_user_and_is_told(site):
    admin = await signed_in(site, "root@example.com", role="admin", form=True)
    ann = await site.add_user("ann@example.com", PASSWORD)
    fields = {"action": "disable", "confirm": "1", "back": "/admin?q=ann"}
    response = await submit(admin, f"/admin/users/{ann.id}", fields, page="/admin")
    assert response.headers["Location"] == "/admin?q=ann"
    assert flash_of(await follow(admin, response)) == (
        "success",
        "ann@example.com was disabled and signed out everywhere.",
    )


async def test_account_page_changes_the_name_and_the_password(site):
    client = await signed_in(site, form=True)
    other = site.client()
    await submit(other, "/login", {"email": "ann@example.com", "password": PASSWORD})
    page = await client.get("/account")
    assert page.code == 200 and page.headers["Cache-Control"] == "no-store"
    renamed = await submit(client, "/account/name", {"name": "Ann Lee"}, page="/account")
    assert flash_of(await follow(client, renamed)) == ("success", "Your name was changed.")
    assert (await site.services.users.by_email("ann@example.com")).name == "Ann Lee"

    wrong = await submit(
        client, "/account/password", {"current": "nope", "new": "a new password"}, "/account"
    )
    assert wrong.code == 401 and b'id="current-error"' in wrong.body
    changed = await submit(
        client, "/account/password", {"current": PASSWORD, "new": "a new password"}, "/account"
    )
    kind, text = flash_of(await follow(client, changed))
    assert kind == "success" and "1 other session was signed out" in text
    assert (await other.get("/dashboard")).code == 302
    assert (await client.get("/dashboard")).code == 200
    again = await site.client().login("ann@example.com", "a new password")
    assert again.code == 200


async def test_admin_page_searches_filters_and_pages_in_the_store(site):
    admin = await signed_in(site, "root@example.com", role="admin", form=True)
    for index in range(25):
        await site.add_user(f"user{index:02}@example.com", PASSWORD, name=f"Person {index}")
    disabled = await site.services.users.by_email("user03@example.com")
    await site.services.users.set(disabled.id, disabled=True)

    def emails(body: bytes) -> list[str]:
        return re.findall(r'class="user-email">([^<]+)<', body.decode())

    first = await admin.get("/admin")
    assert len(emails(first.body)) == 20 and b"Page 1 of 2" in first.body
    second = await admin.get("/admin?page=2")
    assert len(emails(second.body)) == 6
    assert set(emails(first.body)).isdisjoint(emails(second.body))
    assert emails((await admin.get("/admin?q=PERSON%201")).body) == [
        "user01@example.com",
        *(f"user{n}@example.com" for n in range(10, 20)),
    ]
    assert emails((await admin.get("/admin?status=disabled")).body) == ["user03@example.com"]
    assert emails((await admin.get("/admin?role=admin")).body) == ["root@example.com"]
    filtered = await admin.get("/admin?q=user&status=active")
    assert b"page=2" in filtered.body and b"q=user" in filtered.body  # links keep the filters


async def test_activity_reads_who_did_what_to_whom(site):
    admin = await signed_in(site, "root@example.com", role="admin", form=True)
    ann = await site.add_user("ann@example.com", PASSWORD)
    fields = {"action": "disable", "confirm": "1"}
    await submit(admin, f"/admin/users/{ann.id}", fields, page="/admin")
    body = (await admin.get("/admin")).body.decode()
    assert "root@example.com disabled ann@example.com" in body
    assert "root@example.com signed in" in body
    assert "GET /api/admin/audit" not in body
