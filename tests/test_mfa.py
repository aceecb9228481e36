"""Second factors through the API, on SQLite and on Redis sessions with MongoDB users: TOTP
enrolment and the two-step sign-in (codes computed with pyotp, replays, clock skew, throttling),
recovery codes, the pending state's scope, management behind re-authentication, an admin's reset,
``security.require_mfa_for_admins`` and the ``mfa_required`` gate for apps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pyotp
import pytest
from pymongo import AsyncMongoClient

from tornado_auth import ApiHandler, Origin, mfa_required
from tornado_auth.mfa import PENDING

from .conftest import (
    MONGO_URL,
    PASSWORD,
    Client,
    Clock,
    Server,
    Store,
    body,
    serving,
    settings_for,
)
from .helpers import open_socket, signed_in, submit
from .mailbox import outbox, text

pytestmark = pytest.mark.stores("sqlite", "redis")

ANN = "ann@example.com"


@pytest.fixture
async def app(store: Store) -> AsyncIterator[Server]:
    async with serve(store) as running:
        yield running


@asynccontextmanager
async def serve(
    store: Store, app: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Server]:
    """The app on ``store`` (``make_app`` given ``app``), with ``overrides`` of its settings and
    an MFA clock the test moves, for a ``with`` block."""
    async with serving(settings_for(store, **overrides), **(app or {})) as server:
        server.services.mfa.clock = Clock()
        yield server


def clock(server: Server) -> Clock:
    found = server.services.mfa.clock
    assert isinstance(found, Clock)
    return found


def code_at(secret: str, when: float) -> str:
    return pyotp.TOTP(secret).at(when)


async def enrolled(server: Server, email: str = ANN, role: str = "user") -> tuple[str, list[str]]:
    """A user with an authenticator app: its secret and the recovery codes."""
    await server.add_user(email, PASSWORD, role=role)
    client = await signed_in(server, email)
    secret, recovery = await enrol(server, client)
    return secret, recovery


async def enrol(server: Server, client: Client) -> tuple[str, list[str]]:
    started = await client.post("/api/mfa/totp", {})
    assert started.code == 200, started.body
    secret = body(started)["secret"]
    assert body(started)["otpauthUri"].startswith("otpauth://totp/")
    code = code_at(secret, clock(server)())
    confirmed = await client.post("/api/mfa/totp/confirm", {"code": code})
    assert confirmed.code == 200, confirmed.body
    clock(server).now += 30  # the confirming code is used: the next one is of a later step
    return secret, body(confirmed)["recoveryCodes"]


async def first_step(server: Server, email: str = ANN, remember_me: bool = False) -> Client:
    client = server.client()
    response = await client.login(email, PASSWORD, remember_me)
    assert response.code == 200, response.body
    assert body(response)["mfaRequired"] is True
    return client


async def second_step(client: Client, **given: Any) -> Any:
    return await client.post("/api/login/mfa", given)


async def audit_events(server: Server) -> list[str]:
    entries, _ = await server.services.audit.page(0, 200)
    return [entry.event for entry in entries]


async def user_store_text(store: Store) -> str:
    """Everything in the user store (where factors live), raw, as text."""
    if store.kind == "sqlite":
        return await store.dump()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        database = client[store.database]
        names = await database.list_collection_names()
        return "\n".join([repr(doc) for name in names async for doc in database[name].find({})])
    finally:
        await client.close()


# -- enrolment ------------------------------------------------------------------------------------


async def test_totp_takes_effect_only_after_a_correct_code(app: Server):
    await app.add_user(ANN, PASSWORD)
    client = await signed_in(app)
    started = await client.post("/api/mfa/totp", {})
    secret = body(started)["secret"]
    wrong = await client.post("/api/mfa/totp/confirm", {"code": "000000"})
    if wrong.code == 200:  # the one time in a million 000000 is the code
        pytest.skip("000000 happened to be the code")
    assert (wrong.code, body(wrong)) == (400, {"error": "Invalid code"})
    assert body(await client.get("/api/mfa"))["totp"] is False
    assert "mfaRequired" not in body(await app.client().login(ANN, PASSWORD))
    code = code_at(secret, clock(app)())
    confirmed = await client.post("/api/mfa/totp/confirm", {"code": code})
    assert confirmed.code == 200
    recovery = body(confirmed)["recoveryCodes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    status = body(await client.get("/api/mfa"))
    assert status["totp"] is True and status["recoveryCodesLeft"] == 10
    assert status["methods"] == ["totp", "recovery"] and status["signedInWithMfa"] is True
    assert "mfa_enabled" in await audit_events(app)


async def test_confirming_without_an_enrolment_is_409(app: Server):
    await app.add_user(ANN, PASSWORD)
    client = await signed_in(app)
    response = await client.post("/api/mfa/totp/confirm", {"code": "123456"})
    assert response.code == 409


async def test_the_secret_and_recovery_codes_are_never_stored_in_clear(app: Server, store: Store):
    secret, recovery = await enrolled(app)
    pending = await first_step(app)
    assert (await second_step(pending, code=code_at(secret, clock(app)()))).code == 200
    stored = await user_store_text(store)
    assert "mfa_totp" in stored  # the record is there, sealed
    for shown in (secret, secret.lower(), *recovery, *(c.replace("-", "") for c in recovery)):
        assert shown not in stored


# -- the two-step sign-in -------------------------------------------------------------------------


async def test_a_right_password_asks_for_the_second_step_and_grants_nothing_else(app: Server):
    secret, _ = await enrolled(app)
    client = app.client()
    response = await client.login(ANN, PASSWORD)
    assert body(response) == {"mfaRequired": True, "methods": ["totp", "recovery"]}
    assert "session" not in client.cookies and "auth_mfa" in client.cookies
    for path in ("/api/profile", "/api/dashboard", "/api/sessions", "/api/mfa"):
        assert (await client.get(path)).code == 401
    user = await app.services.users.by_email(ANN)
    assert len(await app.services.sessions.list_user(user.id)) == 1  # the one that enrolled
    done = await second_step(client, code=code_at(secret, clock(app)()))
    assert done.code == 200 and body(done)["user"]["email"] == ANN
    assert "auth_mfa" not in client.cookies and "session" in client.cookies
    assert (await client.get("/api/profile")).code == 200
    assert body(await client.get("/api/mfa"))["signedInWithMfa"] is True
    records = await app.services.sessions.list_user(user.id)
    assert [r.data["amr"] for r in records] == [["pwd", "otp"]] * 2  # enrolled, signed in
    assert "signin" in await audit_events(app)


async def test_a_code_is_refused_the_second_time(app: Server):
    secret, _ = await enrolled(app)
    code = code_at(secret, clock(app)())
    assert (await second_step(await first_step(app), code=code)).code == 200
    again = await second_step(await first_step(app), code=code)
    assert (again.code, body(again)) == (401, {"error": "Invalid code"})


async def test_one_code_sent_by_concurrent_second_steps_signs_in_once(app: Server):
    secret, _ = await enrolled(app)
    clients = [await first_step(app) for _ in range(5)]
    code = code_at(secret, clock(app)())
    answers = await asyncio.gather(*(second_step(client, code=code) for client in clients))
    assert sorted(answer.code for answer in answers) == [200, 401, 401, 401, 401]


async def test_codes_one_step_off_are_accepted_two_steps_off_refused(app: Server):
    secret, _ = await enrolled(app)
    clock(app).now += 90  # well past the step of the code that confirmed the app
    now = clock(app)()
    for refused in (now - 60, now + 60):
        answer = await second_step(await first_step(app), code=code_at(secret, refused))
        assert answer.code == 401
    for accepted in (now - 30, now + 30):
        answer = await second_step(await first_step(app), code=code_at(secret, accepted))
        assert answer.code == 200


async def test_a_code_older_than_a_used_one_is_refused(app: Server):
    secret, _ = await enrolled(app)
    now = clock(app)()
    assert (await second_step(await first_step(app), code=code_at(secret, now))).code == 200
    older = await second_step(await first_step(app), code=code_at(secret, now - 30))
    assert older.code == 401


async def test_a_right_password_does_not_forgive_wrong_codes(store: Store):
    """Whoever holds the password gets no more code guesses by entering it again."""
    async with serve(store, throttle__account_ip_failures=3) as server:
        secret, _ = await enrolled(server)
        for _ in range(3):  # a fresh first step (a right password) before each wrong code
            client = await first_step(server)
            assert (await second_step(client, code="999999")).code == 401
        client = await first_step(server)
        refused = await second_step(client, code=code_at(secret, clock(server)()))
        assert refused.code == 429


async def test_wrong_codes_count_toward_the_sign_in_throttle(store: Store):
    async with serve(store, throttle__account_ip_failures=3) as server:
        secret, _ = await enrolled(server)
        client = await first_step(server)
        for _ in range(3):
            assert (await second_step(client, code="999999")).code == 401
        refused = await second_step(client, code=code_at(secret, clock(server)()))
        assert refused.code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "Too many failed sign-ins" in body(refused)["error"]
        assert "mfa_failed" in await audit_events(server)
        assert "mfa_throttled" in await audit_events(server)


async def test_a_wrong_code_leaves_the_pending_sign_in_for_a_right_one(app: Server):
    secret, _ = await enrolled(app)
    client = await first_step(app)
    wrong = await second_step(client, code="12345a")
    assert wrong.code == 401
    assert (await second_step(client, code=code_at(secret, clock(app)()))).code == 200


async def test_remember_me_carries_through_the_second_step(app: Server):
    secret, _ = await enrolled(app)
    client = await first_step(app, remember_me=True)
    done = await second_step(client, code=code_at(secret, clock(app)()))
    assert done.code == 200
    cookie = next(c for c in done.headers.get_list("Set-Cookie") if c.startswith("session="))
    assert "Max-Age=2592000" in cookie


# -- the pending state ----------------------------------------------------------------------------


async def test_the_pending_sign_in_expires(app: Server):
    secret, _ = await enrolled(app)
    client = await first_step(app)
    clock(app).now += app.services.settings["security.mfa_pending_ttl"] + 1
    late = await second_step(client, code=code_at(secret, clock(app)()))
    assert (late.code, body(late)) == (401, {"error": "No sign-in is waiting for a second step"})


async def test_the_pending_sign_in_is_only_for_its_own_user(app: Server):
    await enrolled(app)
    bob_secret, _ = await enrolled(app, "bob@example.com")
    ann = await first_step(app)
    answer = await second_step(ann, code=code_at(bob_secret, clock(app)()))
    assert answer.code == 401
    record = await app.services.tokens.count_user(
        (await app.services.users.by_email(ANN)).id, PENDING, clock(app)()
    )
    assert record == 1  # still Ann's, still waiting


async def test_a_password_change_voids_the_pending_sign_in(app: Server):
    secret, _ = await enrolled(app)
    client = await first_step(app)
    user = await app.services.users.by_email(ANN)
    changed = await app.services.accounts.change_password(
        user, PASSWORD, "new password 1", Origin()
    )
    assert changed is not None
    answer = await second_step(client, code=code_at(secret, clock(app)()))
    assert answer.code == 401 and "auth_mfa" not in client.cookies


@pytest.mark.store_independent  # refused by the signature check
async def test_a_forged_or_missing_pending_cookie_is_401(app: Server):
    await enrolled(app)
    client = app.client()
    assert (await second_step(client, code="123456")).code == 401
    client.cookies["auth_mfa"] = "forged"
    assert (await second_step(client, code="123456")).code == 401


@pytest.mark.store_independent  # refused before any store is asked
async def test_bad_second_step_bodies_are_400_and_change_nothing(app: Server):
    secret, _ = await enrolled(app)
    client = await first_step(app)
    for bad in (
        {},
        {"code": "123456", "recoveryCode": "x"},
        {"code": 123456},
        {"code": {"$gt": ""}},
        {"code": "1" * 65},
        {"recoveryCode": ""},
        {"other": 1},
    ):
        answer = await client.post("/api/login/mfa", bad)
        assert answer.code == 400, (bad, answer.body)
        assert "error" in body(answer)
    passkey = await second_step(client, passkey={"id": "x"})
    assert (passkey.code, body(passkey)) == (400, {"error": "Credential id is malformed"})
    assert (await second_step(client, code=code_at(secret, clock(app)()))).code == 200


# -- recovery codes -------------------------------------------------------------------------------


async def test_a_recovery_code_signs_in_once(app: Server):
    _, recovery = await enrolled(app)
    first = await second_step(await first_step(app), recoveryCode=recovery[0].upper())
    assert first.code == 200
    again = await second_step(await first_step(app), recoveryCode=recovery[0])
    assert again.code == 401
    client = await first_step(app)
    assert (await second_step(client, recoveryCode=recovery[1])).code == 200
    status = body(await client.get("/api/mfa"))
    assert status["recoveryCodesLeft"] == 8
    assert "recovery_code_used" in await audit_events(app)


async def test_ten_concurrent_uses_of_one_recovery_code_sign_in_once(app: Server):
    _, recovery = await enrolled(app)
    clients = [await first_step(app) for _ in range(10)]
    answers = await asyncio.gather(*(second_step(c, recoveryCode=recovery[3]) for c in clients))
    assert sorted(answer.code for answer in answers) == [200] + [401] * 9


async def test_old_recovery_codes_stop_working_when_new_ones_are_made(app: Server):
    secret, old = await enrolled(app)
    client = await first_step(app)
    assert (await second_step(client, code=code_at(secret, clock(app)()))).code == 200
    fresh = body(await client.post("/api/mfa/recovery-codes", {}))["recoveryCodes"]
    assert len(fresh) == 10 and not set(fresh) & set(old)
    assert "recovery_codes_regenerated" in await audit_events(app)
    assert (await second_step(await first_step(app), recoveryCode=old[0])).code == 401
    assert (await second_step(await first_step(app), recoveryCode=fresh[0])).code == 200


async def test_recovery_codes_need_a_second_factor(app: Server):
    await app.add_user(ANN, PASSWORD)
    client = await signed_in(app)
    response = await client.post("/api/mfa/recovery-codes", {})
    assert (response.code, body(response)) == (409, {"error": "Turn on a second factor first"})


# -- management -----------------------------------------------------------------------------------


async def test_managing_factors_needs_re_authentication(app: Server):
    secret, _ = await enrolled(app)
    client = await first_step(app)
    assert (await second_step(client, code=code_at(secret, clock(app)()))).code == 200
    later = clock(app)() + app.services.settings["security.reauth_ttl"] + 1
    app.services.lifecycle.clock = lambda: later
    for method, path in (
        ("POST", "/api/mfa/totp"),
        ("DELETE", "/api/mfa/totp"),
        ("POST", "/api/mfa/recovery-codes"),
        ("POST", "/api/mfa/totp/confirm"),
    ):
        answer = await client.request(method, path, {"code": "123456"})
        assert (answer.code, body(answer)) == (403, {"error": "Re-authentication required"})
    assert body(await client.get("/api/mfa"))["totp"] is True
    assert (await client.post("/api/reauth", {"password": PASSWORD})).code == 200
    assert (await client.post("/api/mfa/recovery-codes", {})).code == 200


async def test_removing_the_app_ends_other_sessions_mails_a_notice_and_is_audited(app: Server):
    secret, _ = await enrolled(app)
    here = await first_step(app)
    assert (await second_step(here, code=code_at(secret, clock(app)()))).code == 200
    clock(app).now += 30
    elsewhere = await first_step(app)
    assert (await second_step(elsewhere, code=code_at(secret, clock(app)()))).code == 200
    removed = await here.request("DELETE", "/api/mfa/totp")
    assert removed.code == 200
    assert (await elsewhere.get("/api/profile")).code == 401
    assert (await here.get("/api/profile")).code == 200
    assert body(await here.get("/api/mfa"))["recoveryCodesLeft"] == 0
    notice = (await outbox(app.services)).last(ANN, "Two-step sign-in was turned off")
    assert "authenticator app" in text(notice)
    assert "mfa_removed" in await audit_events(app)
    assert "mfaRequired" not in body(await app.client().login(ANN, PASSWORD))
    assert (await here.request("DELETE", "/api/mfa/totp")).code == 404


# -- admins ---------------------------------------------------------------------------------------


async def test_an_admin_sees_and_resets_a_users_factors(app: Server):
    secret, _ = await enrolled(app)
    await app.add_user("root@example.com", PASSWORD, role="admin")
    admin = await signed_in(app, "root@example.com")
    ann = await app.services.users.by_email(ANN)
    listed = body(await admin.get("/api/admin/users"))["users"]
    shown = {user["email"]: user["mfa"] for user in listed}
    assert shown[ANN]["totp"] is True and shown["root@example.com"]["enabled"] is False
    factors = body(await admin.get(f"/api/admin/users/{ann.id}/mfa"))
    assert factors["methods"] == ["totp", "recovery"] and factors["recoveryCodesLeft"] == 10
    ann_session = await first_step(app)
    assert (await second_step(ann_session, code=code_at(secret, clock(app)()))).code == 200
    reset = await admin.request("DELETE", f"/api/admin/users/{ann.id}/mfa")
    assert (reset.code, body(reset)) == (200, {"reset": True})
    assert (await ann_session.get("/api/profile")).code == 401
    assert "mfaRequired" not in body(await app.client().login(ANN, PASSWORD))
    assert "administrator removed" in text((await outbox(app.services)).last(ANN, "turned off"))
    entries, _ = await app.services.audit.page(0, 50)
    [entry] = [e for e in entries if e.event == "mfa_reset"]
    assert entry.user_id == ann.id and entry.detail["by"] != ann.id
    assert (await admin.request("DELETE", "/api/admin/users/nobody/mfa")).code == 404
    assert (await app.client().get(f"/api/admin/users/{ann.id}/mfa")).code == 401
    user = await signed_in(app)
    assert (await user.request("DELETE", f"/api/admin/users/{ann.id}/mfa")).code == 403


async def types_until(socket: Any, wanted: str) -> list[str]:
    """The types of the socket's messages up to the first of type ``wanted``."""
    seen: list[str] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1] != wanted:
            message = await socket.read_message()
            assert message is not None, f"closed after {seen}"
            seen.append(json.loads(message)["type"])
    return seen


async def test_require_mfa_for_admins_sends_admins_to_enrol_first(store: Store):
    async with serve(store, security__require_mfa_for_admins=True) as server:
        await server.add_user("root@example.com", PASSWORD, role="admin")
        admin = await signed_in(server, "root@example.com")
        refused = await admin.get("/api/admin/users")
        assert (refused.code, body(refused)) == (
            403,
            {"error": "Admins must turn on two-step sign-in first"},
        )
        page = await admin.get("/admin")
        assert page.code == 302 and page.headers["Location"] == "/account/mfa"
        # the live socket holds back the admin statistics and activity as well
        socket = await open_socket(admin)
        await signed_in(server, "root@example.com")  # an event for this user, and an audit entry
        seen = await types_until(socket, "signin")
        assert "stats" not in seen and "activity" not in seen, seen
        socket.close()
        secret, _ = await enrol(server, admin)
        socket = await open_socket(admin)
        assert await types_until(socket, "stats") == ["hello", "stats"]
        socket.close()
        assert (await admin.get("/api/admin/users")).code == 200  # enrolled in this session
        client = await first_step(server, "root@example.com")
        assert (await client.get("/api/admin/users")).code == 401
        assert (await second_step(client, code=code_at(secret, clock(server)()))).code == 200
        assert (await client.get("/api/admin/users")).code == 200
        assert (await client.get("/admin")).code == 200
        await server.add_user(ANN, PASSWORD)
        assert (await (await signed_in(server)).get("/api/admin/users")).code == 403


# -- for apps -------------------------------------------------------------------------------------


class SecretNotes(ApiHandler):
    @mfa_required
    async def get(self) -> None:
        self.send_json({"notes": [], "amr": list(self.current_user.amr)})


async def test_mfa_required_lets_only_sessions_signed_in_with_a_second_factor(store: Store):
    async with serve(store, {"routes": [(r"/notes", SecretNotes)]}) as server:
        secret, _ = await enrolled(server)
        await server.add_user("bob@example.com", PASSWORD)
        bob = await signed_in(server, "bob@example.com")
        assert (await server.client().get("/notes")).code == 401
        refused = await bob.get("/notes")
        assert (refused.code, body(refused)) == (
            403,
            {"error": "Sign in with a second factor to continue"},
        )
        ann = await first_step(server)
        assert (await ann.get("/notes")).code == 401
        assert (await second_step(ann, code=code_at(secret, clock(server)()))).code == 200
        allowed = await ann.get("/notes")
        assert (allowed.code, body(allowed)["amr"]) == (200, ["pwd", "otp"])


# -- pages ----------------------------------------------------------------------------------------


async def test_pages_ask_for_the_password_before_setting_up_an_app_then_continue(app: Server):
    await app.add_user(ANN, PASSWORD)
    client = await signed_in(app)
    later = clock(app)() + app.services.settings["security.reauth_ttl"] + 1
    app.services.lifecycle.clock = lambda: later
    asked = await client.get("/account/mfa/totp")
    assert (asked.code, asked.headers["Location"]) == (302, "/reauth?next=/account/mfa/totp")
    done = await submit(client, "/reauth?next=/account/mfa/totp", {"password": PASSWORD})
    assert (done.code, done.headers["Location"]) == (302, "/account/mfa/totp")
    page = await client.get("/account/mfa/totp")
    assert page.code == 200 and b'id="totp-secret"' in page.body
    qr = await client.get("/account/mfa/totp/qr.svg")
    assert qr.code == 200 and qr.headers["Content-Type"] == "image/svg+xml"
    assert qr.body.startswith(b"<svg") and "no-store" in qr.headers["Cache-Control"]


async def test_the_login_form_leads_to_the_second_step_page(app: Server):
    secret, _ = await enrolled(app)
    client = app.client()
    fields = {"email": ANN, "password": PASSWORD, "next": "/sessions"}
    first = await submit(client, "/login", fields)
    assert (first.code, first.headers["Location"]) == (302, "/login/mfa?next=%2Fsessions")
    assert "session" not in client.cookies
    assert (await client.get("/dashboard")).code == 302  # to the login page: not signed in
    wrong = await submit(client, "/login/mfa", {"code": "99999", "next": "/sessions"})
    assert wrong.code == 401 and b"That code is not right" in wrong.body
    code = code_at(secret, clock(app)())
    done = await submit(client, "/login/mfa", {"code": code, "next": "/sessions"})
    assert (done.code, done.headers["Location"]) == (302, "/sessions")
    assert (await client.get("/api/mfa")).code == 200
    assert (await client.get("/login/mfa")).headers["Location"] == "/login"  # nothing waits


async def test_the_admin_page_shows_factors_and_resets_them_after_asking(app: Server):
    await enrolled(app)
    await app.add_user("root@example.com", PASSWORD, role="admin")
    admin = await signed_in(app, "root@example.com")
    page = await admin.get("/admin")
    assert b"two-step: totp, 10 recovery codes" in page.body and b"two-step off" in page.body
    ann = await app.services.users.by_email(ANN)
    path = f"/admin/users/{ann.id}"
    asked = await submit(admin, path, {"action": "mfa", "back": "/admin"}, page="/admin")
    assert asked.code == 200 and b"Reset the two-step sign-in of ann@example.com?" in asked.body
    assert (await app.services.mfa.status(ann.id)).totp is True
    fields = {"action": "mfa", "back": "/admin", "confirm": "1"}
    done = await submit(admin, path, fields, page="/admin")
    assert (done.code, done.headers["Location"]) == (302, "/admin")
    assert (await app.services.mfa.status(ann.id)).enrolled is False
    assert "mfa_reset" in await audit_events(app)
