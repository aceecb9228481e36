"""The JSON API of DESIGN.md, endpoint by endpoint, on every session backend."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from tornado_auth import accounts
from tornado_auth.handlers.responses import to_json
from tornado_auth.users import passwords

from .conftest import (
    PASSWORD,
    body,
    serving,
    settings_for,
)
from .helpers import signed_in


def session_cookie_header(response) -> str:
    headers = [h for h in response.headers.get_list("Set-Cookie") if h.startswith("session=")]
    assert len(headers) == 1, response.headers.get_list("Set-Cookie")
    return headers[0]


# -- login, logout, dashboard -------------------------------------------------------------------


@pytest.mark.user_stores
async def test_login_returns_user_and_sets_httponly_session_cookie(server):
    user = await server.add_user("ann@example.com", PASSWORD, name="Ann")
    response = await server.client().login("Ann@Example.com ", PASSWORD)
    assert response.code == 200
    assert body(response) == {
        "message": "Logged in successfully",
        "user": {"id": user.id, "email": "ann@example.com", "name": "Ann", "role": "user"},
    }
    cookie = session_cookie_header(response)
    assert "HttpOnly" in cookie and "Path=/" in cookie and "SameSite=Lax" in cookie
    assert "Max-Age=86400" in cookie  # 24 hours without remember me


async def test_remember_me_gives_a_30_day_cookie_and_session(server):
    await server.add_user("ann@example.com", PASSWORD)
    client = server.client()
    response = await client.login("ann@example.com", PASSWORD, remember_me=True)
    assert "Max-Age=2592000" in session_cookie_header(response)
    [record] = await server.services.sessions.list_user(body(response)["user"]["id"])
    assert record.expires_at - record.created_at == pytest.approx(30 * 86400)


async def test_session_holds_id_email_role_and_never_the_password(server):
    client = await signed_in(server)
    user = await server.services.users.by_email("ann@example.com")
    [record] = await server.services.sessions.list_user(user.id)
    assert record.user_id == user.id
    assert record.data["email"] == "ann@example.com" and record.data["role"] == "user"
    text = repr(record)
    assert PASSWORD not in text and user.password_hash not in text
    assert (await client.get("/api/dashboard")).code == 200


async def test_login_regenerates_session_token(server):
    client = await signed_in(server)
    first = dict(client.cookies)
    assert (await client.login("ann@example.com", PASSWORD)).code == 200
    assert client.cookies["session"] != first["session"]
    stale = server.client()
    stale.cookies = first
    assert (await stale.get("/api/dashboard")).code == 401


@pytest.mark.user_stores
async def test_wrong_password_and_unknown_email_get_the_same_401(server):
    await server.add_user("ann@example.com", PASSWORD)
    wrong = await server.client().login("ann@example.com", "not the password")
    unknown = await server.client().login("nobody@example.com", PASSWORD)
    assert wrong.code == unknown.code == 401
    assert body(wrong) == body(unknown) == {"error": "Invalid credentials"}
    assert "Set-Cookie" not in wrong.headers


@pytest.mark.user_stores
async def test_an_address_with_a_nul_gets_the_401_of_an_unknown_one_and_is_audited(server):
    """A NUL reaches neither the user look-up nor the audit trail as it is (FerretDB on
    PostgreSQL refuses it, which answered 500)."""
    await server.add_user("ann@example.com", PASSWORD)
    response = await server.client().login("ann\x00@example.com", PASSWORD)
    assert response.code == 401 and body(response) == {"error": "Invalid credentials"}
    entries, _ = await server.services.users.audit_page(0, 10)
    assert [e.email for e in entries if e.event == "signin_failed"] == ["ann\ufffd@example.com"]


@pytest.mark.store_independent
async def test_dashboard_requires_a_session(server):
    response = await server.client().get("/api/dashboard")
    assert response.code == 401
    assert body(response) == {"error": "Not authenticated"}


async def test_dashboard_greets_the_signed_in_user(server):
    client = await signed_in(server)
    response = await client.get("/api/dashboard")
    user = await server.services.users.by_email("ann@example.com")
    assert body(response) == {
        "message": "Welcome to dashboard",
        "userId": user.id,
        "email": "ann@example.com",
    }


async def test_logout_destroys_the_session_and_clears_the_cookie(server):
    client = await signed_in(server)
    old_cookies = dict(client.cookies)
    response = await client.post("/api/logout")
    assert response.code == 200
    assert body(response) == {"message": "Logged out successfully"}
    assert "expires=" in session_cookie_header(response).lower()
    replay = server.client()
    replay.cookies = old_cookies
    assert (await replay.get("/api/dashboard")).code == 401
    user = await server.services.users.by_email("ann@example.com")
    assert await server.services.sessions.list_user(user.id) == []


@pytest.mark.store_independent
async def test_logout_without_a_session_is_fine(server):
    response = await server.client().post("/api/logout")
    assert response.code == 200


@pytest.mark.user_stores
async def test_profile_reads_the_user_store_without_password_fields(server):
    client = await signed_in(server)
    response = await client.get("/api/profile")
    assert response.code == 200
    profile = body(response)
    assert profile["email"] == "ann@example.com" and profile["role"] == "user"
    assert not any("password" in key.lower() for key in profile)
    assert (await server.client().get("/api/profile")).code == 401


# -- register and password ----------------------------------------------------------------------


async def test_register_creates_user_and_signs_in(server):
    client = server.client()
    response = await client.post(
        "/api/register", {"email": "new@example.com", "password": PASSWORD, "name": "New"}
    )
    assert response.code == 201
    assert body(response)["user"]["email"] == "new@example.com"
    assert body(response)["user"]["role"] == "user"
    assert (await client.get("/api/dashboard")).code == 200


@pytest.mark.user_stores
async def test_register_taken_email_is_409(server):
    await server.add_user("ann@example.com", PASSWORD)
    response = await server.client().post(
        "/api/register", {"email": "ANN@example.com", "password": PASSWORD, "name": "Other"}
    )
    assert response.code == 409
    assert body(response) == {"error": "Email already registered"}


async def test_password_change_revokes_other_sessions_and_regenerates_this_one(server):
    phone = await signed_in(server)
    laptop = server.client()
    await laptop.login("ann@example.com", PASSWORD)
    before = dict(laptop.cookies)
    response = await laptop.post(
        "/api/password", {"currentPassword": PASSWORD, "newPassword": "a brand new secret"}
    )
    assert response.code == 200
    assert laptop.cookies["session"] != before["session"]
    assert (await laptop.get("/api/dashboard")).code == 200
    assert (await phone.get("/api/dashboard")).code == 401
    stale = server.client()
    stale.cookies = before
    assert (await stale.get("/api/dashboard")).code == 401
    assert (await server.client().login("ann@example.com", PASSWORD)).code == 401
    assert (await server.client().login("ann@example.com", "a brand new secret")).code == 200


@pytest.mark.user_stores
async def test_password_change_with_wrong_current_password_is_401_and_changes_nothing(server):
    client = await signed_in(server)
    response = await client.post(
        "/api/password", {"currentPassword": "wrong one!", "newPassword": "another secret"}
    )
    assert response.code == 401
    assert (await client.get("/api/dashboard")).code == 200
    assert (await server.client().login("ann@example.com", PASSWORD)).code == 200


@pytest.mark.store_independent
async def test_password_change_needs_a_session_and_a_valid_new_password(server):
    anonymous = await server.client().post(
        "/api/password", {"currentPassword": PASSWORD, "newPassword": "another secret"}
    )
    assert anonymous.code == 401
    client = await signed_in(server)
    short = await client.post(
        "/api/password", {"currentPassword": PASSWORD, "newPassword": "short"}
    )
    assert short.code == 400
    assert body(short) == {"error": "New password must be 8 to 1024 characters"}


# -- the user's sessions ------------------------------------------------------------------------


async def test_sessions_lists_devices_and_marks_the_current_one(server):
    phone = await signed_in(server)
    laptop = server.client()
    await laptop.login("ann@example.com", PASSWORD)
    response = await phone.get("/api/sessions", headers={"User-Agent": "Phone/1.0"})
    sessions = body(response)["sessions"]
    assert len(sessions) == 2
    assert sorted(s["current"] for s in sessions) == [False, True]
    keys = {"id", "createdAt", "lastSeenAt", "expiresAt", "ip", "userAgent", "current"}
    keys |= {"device", "name"}  # readable device, and the name the user gave it
    assert all(set(s) == keys for s in sessions)
    assert all(s["ip"] == "127.0.0.1" for s in sessions)


async def test_delete_one_of_my_sessions(server):
    phone = await signed_in(server)
    laptop = server.client()
    await laptop.login("ann@example.com", PASSWORD)
    sessions = body(await phone.get("/api/sessions"))["sessions"]
    other = next(s for s in sessions if not s["current"])
    response = await phone.request("DELETE", f"/api/sessions/{other['id']}")
    assert response.code == 204
    assert (await laptop.get("/api/dashboard")).code == 401
    assert (await phone.get("/api/dashboard")).code == 200
    again = await phone.request("DELETE", f"/api/sessions/{other['id']}")
    assert again.code == 404


async def test_cannot_delete_someone_elses_session(server):
    ann = await signed_in(server)
    bob = await signed_in(server, "bob@example.com")
    bobs = body(await bob.get("/api/sessions"))["sessions"][0]["id"]
    response = await ann.request("DELETE", f"/api/sessions/{bobs}")
    assert response.code == 404
    assert (await bob.get("/api/dashboard")).code == 200


async def test_revoke_others_keeps_only_this_session(server):
    clients = [await signed_in(server)]
    for _ in range(2):
        other = server.client()
        await other.login("ann@example.com", PASSWORD)
        clients.append(other)
    response = await clients[0].post("/api/sessions/revoke-others")
    assert body(response) == {"revoked": 2}
    assert (await clients[0].get("/api/dashboard")).code == 200
    assert [(await c.get("/api/dashboard")).code for c in clients[1:]] == [401, 401]


# -- admin ---------------------------------------------------------------------------------------


@pytest.mark.store_independent
async def test_admin_users_needs_admin(server):
    assert (await server.client().get("/api/admin/users")).code == 401
    user = await signed_in(server)
    response = await user.get("/api/admin/users")
    assert response.code == 403
    assert body(response) == {"error": "Admin access required"}


@pytest.mark.user_stores
async def test_admin_lists_users_paginated_without_password_hashes(server):
    admin = await signed_in(server, "root@example.com", role="admin")
    for index in range(4):
        await server.add_user(f"user{index}@example.com")
    response = await admin.get("/api/admin/users?page=2&perPage=2")
    assert response.code == 200
    page = body(response)
    assert page["total"] == 5 and page["page"] == 2 and page["perPage"] == 2
    assert [u["email"] for u in page["users"]] == ["user1@example.com", "user2@example.com"]
    assert "password_hash" not in response.body.decode()
    assert (await admin.get("/api/admin/users?perPage=0")).code == 400


async def test_role_change_ends_the_users_sessions_at_once(server):
    admin = await signed_in(server, "root@example.com", role="admin")
    user = await signed_in(server)
    target = await server.services.users.by_email("ann@example.com")
    response = await admin.request("PATCH", f"/api/admin/users/{target.id}", {"role": "admin"})
    assert response.code == 200
    assert body(response)["role"] == "admin"
    assert (await user.get("/api/dashboard")).code == 401
    again = server.client()
    await again.login("ann@example.com", PASSWORD)
    assert (await again.get("/api/admin/users")).code == 200


async def test_demoted_admin_loses_admin_rights_immediately(server):
    root = await signed_in(server, "root@example.com", role="admin")
    other = await signed_in(server, "second@example.com", role="admin")
    target = await server.services.users.by_email("second@example.com")
    await root.request("PATCH", f"/api/admin/users/{target.id}", {"role": "user"})
    assert (await other.get("/api/admin/users")).code == 401


async def test_disabled_user_is_signed_out_and_cannot_sign_in(server):
    admin = await signed_in(server, "root@example.com", role="admin")
    user = await signed_in(server)
    target = await server.services.users.by_email("ann@example.com")
    response = await admin.request("PATCH", f"/api/admin/users/{target.id}", {"disabled": True})
    assert body(response)["disabled"] is True
    assert (await user.get("/api/dashboard")).code == 401
    assert (await server.client().login("ann@example.com", PASSWORD)).code == 401
    await admin.request("PATCH", f"/api/admin/users/{target.id}", {"disabled": False})
    assert (await server.client().login("ann@example.com", PASSWORD)).code == 200


async def test_a_disabled_account_is_told_so_only_after_the_right_password(server):
    admin = await signed_in(server, "root@example.com", role="admin")
    target = await server.add_user("ann@example.com", PASSWORD)
    await admin.request("PATCH", f"/api/admin/users/{target.id}", {"disabled": True})

    wrong = await server.client().login("ann@example.com", "not the password")
    unknown = await server.client().login("nobody@example.com", PASSWORD)
    right = await server.client().login("ann@example.com", PASSWORD)

    assert (wrong.code, body(wrong)) == (401, {"error": "Invalid credentials"})
    assert (unknown.code, body(unknown)) == (401, {"error": "Invalid credentials"})
    assert (right.code, body(right)) == (
        401,
        {"error": "Account disabled, ask an admin to enable it"},
    )
    assert not [h for h in right.headers.get_list("Set-Cookie") if h.startswith("session=")]
    assert await server.services.sessions.list_user(target.id) == []
    events = [(e.event, e.detail) for e in (await server.services.audit.page(0, 10))[0]]
    assert ("signin_failed", {"reason": "disabled"}) in events


@pytest.mark.user_stores
async def test_nobody_can_disable_or_demote_the_last_enabled_admin(server):
    root = await signed_in(server, "root@example.com", role="admin")
    second = await server.add_user("second@example.com", PASSWORD, "admin")
    changed = await root.request("PATCH", f"/api/admin/users/{second.id}", {"disabled": True})
    assert changed.code == 200  # root is still an enabled admin
    me = body(await root.get("/api/profile"))["id"]

    for change in ({"role": "user"}, {"disabled": True}, {"role": "user", "disabled": True}):
        refused = await root.request("PATCH", f"/api/admin/users/{me}", change)
        assert refused.code == 409
        assert body(refused) == {"error": "The last admin cannot be demoted or disabled"}
    root_now = await server.services.users.get(me)
    assert (root_now.role, root_now.disabled) == ("admin", False)
    assert (await root.get("/api/admin/users")).code == 200  # still signed in, still an admin


@pytest.mark.store_independent
@pytest.mark.parametrize(
    "patch",
    [{"role": "owner"}, {"disabled": "yes"}, {}, {"role": "admin", "email": "x@example.com"}],
)
async def test_admin_patch_rejects_bad_input(server, patch):
    admin = await signed_in(server, "root@example.com", role="admin")
    target = await server.add_user("ann@example.com")
    response = await admin.request("PATCH", f"/api/admin/users/{target.id}", patch)
    assert response.code == 400
    assert (await server.services.users.get(target.id)).role == "user"


@pytest.mark.user_stores
async def test_admin_patch_unknown_user_is_404_and_non_admin_403(server):
    admin = await signed_in(server, "root@example.com", role="admin")
    empty = await admin.request("PATCH", "/api/admin/users/000000000000000000000000", {})
    assert empty.code == 400  # an empty change is refused before the user is looked up
    assert body(empty) == {"error": "Role or disabled is required"}
    missing = await admin.request(
        "PATCH", "/api/admin/users/000000000000000000000000", {"role": "admin"}
    )
    assert missing.code == 404
    user = await signed_in(server)
    target = await server.services.users.by_email("root@example.com")
    forbidden = await user.request("PATCH", f"/api/admin/users/{target.id}", {"role": "user"})
    assert forbidden.code == 403


async def test_admin_revokes_all_sessions_of_a_user(server):
    admin = await signed_in(server, "root@example.com", role="admin")
    user = await signed_in(server)
    second = server.client()
    await second.login("ann@example.com", PASSWORD)
    target = await server.services.users.by_email("ann@example.com")
    response = await admin.request("DELETE", f"/api/admin/users/{target.id}/sessions")
    assert body(response) == {"revoked": 2}
    assert (await user.get("/api/dashboard")).code == 401
    assert (await second.get("/api/dashboard")).code == 401
    missing = await admin.request("DELETE", "/api/admin/users/000000000000000000000000/sessions")
    assert missing.code == 404
    assert (await user.request("DELETE", f"/api/admin/users/{target.id}/sessions")).code == 401


# -- cookie demo, health ---------------------------------------------------------------------


@pytest.mark.store_independent
async def test_cookie_demo_sets_and_reads_username(server):
    client = server.client()
    response = await client.get("/api/set-cookie")
    assert response.body == b"Cookie set"
    [header] = response.headers.get_list("Set-Cookie")
    assert header.startswith("username=john")
    for attribute in ("Max-Age=900", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in header
    assert "Secure" not in header  # development over plain http
    response = await client.get("/api/get-cookie")
    assert response.body == b"Username: john"


@pytest.mark.store_independent  # the process answers: no store is asked
async def test_health(server):
    assert body(await server.client().get("/healthz")) == {"status": "ok"}


async def test_readiness_asks_the_store(server):
    assert body(await server.client().get("/readyz")) == {"status": "ready"}


class HeldHashing:
    """Holds each password check in its bcrypt thread until ``release()`` (or 10 s), and counts
    the checks under way, so a test knows hashing has started and has not finished."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        self.started = asyncio.Event()
        self.running = 0
        self._lock, self._released = threading.Lock(), threading.Event()
        real_check = passwords._verify

        def held(password: str, stored: str) -> bool:
            with self._lock:
                self.running += 1
            loop.call_soon_threadsafe(self.started.set)
            try:
                self._released.wait(10)
                return real_check(password, stored)
            finally:
                with self._lock:
                    self.running -= 1

        monkeypatch.setattr(passwords, "_verify", held)

    def release(self) -> None:
        self._released.set()


@pytest.mark.store_independent  # the event loop, not the store
async def test_healthz_answers_while_cost_12_logins_are_computed(store, monkeypatch):
    async with serving(settings_for(store, users__bcrypt_rounds=12)) as running:
        await running.add_user("ann@example.com", PASSWORD)
        hashing = HeldHashing(monkeypatch)
        logins = [
            asyncio.ensure_future(running.client().login("ann@example.com", PASSWORD))
            for _ in range(4)
        ]
        await asyncio.wait_for(hashing.started.wait(), 30)  # the sign-ins are hashing now
        health = await running.client().get("/healthz")
        hashing_when_answered = hashing.running
        hashing.release()
        assert health.code == 200
        assert hashing_when_answered > 0  # answered while hashing went on
        assert [(await login).code for login in logins] == [200] * 4


class CountedChecks:
    """Counts password checks asked for (queued) and computed (run by a bcrypt thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.queued = self.computed = 0
        self._waiters: dict[int, asyncio.Event] = {}
        real_verify, real_check = accounts.verify_password, passwords._verify

        async def verify(password: str, stored: str) -> bool:
            self.queued += 1
            for count, event in self._waiters.items():
                if self.queued >= count:
                    event.set()
            return await real_verify(password, stored)

        def check(password: str, stored: str) -> bool:
            self.computed += 1  # in a bcrypt thread
            return real_check(password, stored)

        monkeypatch.setattr(accounts, "verify_password", verify)
        monkeypatch.setattr(passwords, "_verify", check)

    async def queued_at_least(self, count: int) -> None:
        event = self._waiters.setdefault(count, asyncio.Event())
        if self.queued >= count:
            event.set()
        await event.wait()


@pytest.mark.store_independent  # HTTP handling: any store
async def test_a_sign_in_whose_client_left_is_never_hashed(store, monkeypatch):
    async with serving(settings_for(store, users__bcrypt_rounds=12)) as running:
        await running.add_user("ann@example.com", PASSWORD)
        checks = CountedChecks(monkeypatch)
        threads = passwords.pool()._max_workers
        busy = [  # one cost-12 check per bcrypt thread: the next one has to queue
            asyncio.ensure_future(running.client().login("ann@example.com", PASSWORD))
            for _ in range(threads)
        ]
        await checks.queued_at_least(threads)
        login = json.dumps({"email": "ann@example.com", "password": PASSWORD}).encode()
        _, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(
            b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(login)}\r\n\r\n".encode()
            + login
        )
        await checks.queued_at_least(threads + 1)  # its check waits for a thread...
        writer.close()  # ...when the client gives up
        await writer.wait_closed()
        assert [(await login).code for login in busy] == [200] * threads
        # A later sign-in queues behind the abandoned one: had that stayed queued, it ran first.
        assert (await running.client().login("ann@example.com", PASSWORD)).code == 200
        assert checks.queued == threads + 2
        assert checks.computed == threads + 1  # every check but the abandoned one


@pytest.mark.store_independent
async def test_unknown_api_path_is_json_404(server):
    response = await server.client().get("/api/nope")
    assert response.code == 404
    assert body(response) == {"error": "Not found"}


JSON_PAYLOADS = [
    {"message": "Welcome to dashboard", "userId": "abc", "email": "ann@example.com"},
    {"name": "Zoë", "city": "東京"},  # non-ASCII: \\u escapes
    {"ASCII but DEL": "".join(map(chr, range(127)))},
    {"every ASCII character": "".join(map(chr, range(128))), "key\x7f": 1},
    {"ok": True, "none": None, "count": -(2**63), "big": 2**70},
    {"small": 1e-05, "tiny": 2.5e-07, "nan": float("nan"), "time": 1764766000.123456},
    {1: "integer key"},
    {True: "boolean key", None: "null key"},
    {"nested": {"a": [1, "b", None]}},
    {},
    [1, "two"],
]


@pytest.mark.parametrize("payload", JSON_PAYLOADS)
def test_json_answers_are_written_as_the_standard_library_writes_them(payload):
    text = to_json(payload)
    text = text.decode() if isinstance(text, bytes) else text
    assert text == json.dumps(payload, separators=(",", ":"))
