"""The account lifecycle by email through the API and the pages, on SQLite and on Redis sessions
with MongoDB users: password reset, verification, re-authentication, email change, devices,
"this wasn't me" and an admin's links. Mail goes to a file outbox read back by the tests."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tornado_auth.lifecycle import CHECK_EMAIL, UNVERIFIED
from tornado_auth.tokens import hash_token

from .conftest import (
    MONGO_URL,
    PASSWORD,
    Client,
    Server,
    Store,
    body,
    serving,
    settings_for,
)
from .helpers import SESSION_ENDED, leave_once_stored, open_socket, signed_in, submit
from .mailbox import LINK, outbox, text

pytestmark = pytest.mark.stores("sqlite", "redis")

PUBLIC = "https://auth.example"
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
async def app(store: Store) -> AsyncIterator[Server]:
    async with serve(store) as running:
        yield running


def serve(store: Store, **overrides: Any) -> AbstractAsyncContextManager[Server]:
    """The app at PUBLIC on ``store``, with ``overrides`` of its settings, for a ``with`` block."""
    return serving(settings_for(store, server__public_url=PUBLIC, **overrides))


def path_of(link: str) -> str:
    assert link.startswith(PUBLIC + "/"), link
    return link.removeprefix(PUBLIC)


def token_of(link: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]


async def user_store_dump(store: Store) -> str:
    """Everything in the user store (where the tokens live), as text."""
    if store.kind == "sqlite":
        return await store.dump()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        database = client[store.database]
        names = await database.list_collection_names()
        return "\n".join([repr(doc) for name in names async for doc in database[name].find({})])
    finally:
        await client.close()


async def closed(socket: Any) -> int:
    """The close code, once the server closed the socket (earlier messages skipped)."""
    while await socket.read_message() is not None:
        pass
    return int(socket.close_code)


async def forgot(client: Client, email: str) -> Any:
    return await client.post("/api/password/forgot", {"email": email})


# -- password reset ------------------------------------------------------------------------------


async def test_forgot_answers_alike_and_mails_a_single_use_reset_link(app: Server, store: Store):
    await app.add_user("ann@example.com")
    elsewhere = await signed_in(app, "ann@example.com")
    socket = await open_socket(elsewhere)
    client = app.client()
    known, unknown = await forgot(client, "Ann@Example.com"), await forgot(client, "x@example.com")
    assert (known.code, body(known)) == (unknown.code, body(unknown))
    assert known.code == 200
    box = await outbox(app.services)
    assert box.messages("x@example.com") == []
    assert len([m for m in box.messages() if "Reset" in m["Subject"]]) == 1
    link = box.link("ann@example.com", "Reset your password")
    token = token_of(link)
    assert path_of(link).startswith("/reset?token=") and len(token) == 43  # 256 bits
    dump = await user_store_dump(store)
    assert token not in dump and hash_token(token) in dump  # only its SHA-256 is stored

    reset = {"token": token, "newPassword": "new password 1"}
    answer = await client.post("/api/password/reset", reset)
    assert answer.code == 200, answer.body
    assert (await client.post("/api/password/reset", reset)).code == 400  # used up
    assert (await elsewhere.get("/api/dashboard")).code == 401  # every session ended
    assert await asyncio.wait_for(closed(socket), 5) == SESSION_ENDED
    assert (await client.login("ann@example.com", PASSWORD)).code == 401
    assert (await client.login("ann@example.com", "new password 1")).code == 200
    box = await outbox(app.services)
    notice = box.last("ann@example.com", "Your password was changed")
    assert f"{PUBLIC}/forgot" in text(notice)
    audit = str([entry.public() for entry in (await app.services.audit.page(0, 100))[0]])
    assert "password_reset_sent" in audit and "'password_reset'" in audit
    assert token not in audit and hash_token(token) not in audit


@pytest.mark.store_independent  # the answer's order, with the look-up held
async def test_forgot_answers_before_looking_the_address_up(app: Server, monkeypatch):
    """The answer never waits for the lookup, so its time tells no account apart."""
    await app.add_user("ann@example.com")
    release = asyncio.Event()
    lookup = app.services.users.by_email

    async def slow(email: str) -> Any:
        await release.wait()
        return await lookup(email)

    monkeypatch.setattr(app.services.users, "by_email", slow)
    response = await forgot(app.client(), "ann@example.com")
    assert response.code == 200
    release.set()
    assert (await outbox(app.services)).messages("ann@example.com")


async def test_expired_malformed_and_unknown_tokens_change_nothing(app: Server):
    await app.add_user("ann@example.com")
    client = app.client()
    await forgot(client, "ann@example.com")
    token = token_of((await outbox(app.services)).link("ann@example.com"))
    start = time.time()
    app.services.lifecycle.clock = lambda: start + 3601  # past security.reset_ttl
    for bad in (token, "x" * 43, "short", "a" * 65, "../../etc", 12, None):
        answer = await client.post("/api/password/reset", {"token": bad, "newPassword": "pw123456"})
        assert answer.code == 400, bad
        assert "error" in body(answer)
    assert (await client.login("ann@example.com", PASSWORD)).code == 200
    page = await client.get("/reset?token=" + token)
    assert page.code == 400 and b"invalid, used or expired" in page.body


async def test_forgot_is_throttled_per_address_and_per_ip(store: Store):
    async with serve(store, throttle__mail_per_address=2, throttle__mail_per_ip=4) as server:
        await server.add_user("ann@example.com")
        client = server.client()
        answers = [(await forgot(client, "ann@example.com")).code for _ in range(3)]
        assert answers == [200, 200, 200]  # the address's limit answers alike...
        box = await outbox(server.services)
        resets = [m for m in box.messages("ann@example.com") if "Reset" in m["Subject"]]
        assert len(resets) == 2  # ...and sends no more mail
        assert (await forgot(client, "bob@example.com")).code == 200
        refused = await forgot(client, "carol@example.com")
        assert refused.code == 429 and refused.headers["Retry-After"]
        assert (await client.post("/api/password/forgot", {"email": "not an address"})).code == 400


async def test_a_reset_whose_client_goes_away_once_it_is_stored_still_ends_every_session(
    app: Server, monkeypatch: pytest.MonkeyPatch
):
    await app.add_user("ann@example.com")
    elsewhere = await signed_in(app, "ann@example.com")  # say, an attacker's session
    assert (await forgot(app.client(), "ann@example.com")).code == 200
    link = (await outbox(app.services)).link("ann@example.com", "Reset your password")
    reset = {"token": token_of(link), "newPassword": "new password 1"}
    await leave_once_stored(app, monkeypatch, "/api/password/reset", reset)

    assert (await elsewhere.get("/api/dashboard")).code == 401  # every session ended
    assert (await app.client().login("ann@example.com", "new password 1")).code == 200


async def test_reset_pages_set_a_new_password(app: Server):
    await app.add_user("ann@example.com")
    client = app.client()
    sent = await submit(client, "/forgot", {"email": "ann@example.com"})
    assert sent.code == 200 and b"reset its password is on its way" in sent.body
    link = (await outbox(app.services)).link("ann@example.com")
    weak = await submit(
        client, "/reset", {"token": token_of(link), "password": "short"}, path_of(link)
    )
    assert weak.code == 400
    done = await submit(
        client, "/reset", {"token": token_of(link), "password": "brand new pw"}, path_of(link)
    )
    assert done.code == 302 and done.headers["Location"] == "/login?ended=password"
    assert (await client.login("ann@example.com", "brand new pw")).code == 200


# -- email verification --------------------------------------------------------------------------


async def test_registration_mails_a_verification_link(app: Server):
    client = app.client()
    response = await client.post(
        "/api/register", {"email": "dan@example.com", "password": PASSWORD, "name": "Dan"}
    )
    assert response.code == 201
    assert body(await client.get("/api/profile"))["emailVerified"] is False
    link = (await outbox(app.services)).link("dan@example.com", "Confirm your email")
    assert path_of(link).startswith("/verify?token=")
    page = await client.get(path_of(link))  # what a mail scanner fetches: it changes nothing
    assert page.code == 200 and b"Verify my address" in page.body
    assert body(await client.get("/api/profile"))["emailVerified"] is False
    verified = await submit(client, "/verify", {"token": token_of(link)}, path_of(link))
    assert verified.code == 200 and b"dan@example.com is verified" in verified.body
    assert body(await client.get("/api/profile"))["emailVerified"] is True
    again = await submit(client, "/verify", {"token": token_of(link)}, path_of(link))
    assert again.code == 400  # used up


async def test_required_verification_hides_taken_addresses_and_blocks_sign_in(store: Store):
    async with serve(store, users__require_verified_email=True) as server:
        await server.add_user("ann@example.com")  # made by an operator: no link sent
        client = server.client()
        new = {"email": "eve@example.com", "password": PASSWORD, "name": "Eve"}
        taken = {"email": "ann@example.com", "password": "other password", "name": "X"}
        first, second = (
            await client.post("/api/register", new),
            await client.post("/api/register", taken),
        )
        assert (
            (first.code, body(first))
            == (second.code, body(second))
            == (202, {"message": CHECK_EMAIL})
        )
        assert "eve@example.com" not in client.cookies.get("session", "")
        box = await outbox(server.services)
        warned = box.last("ann@example.com", "Someone tried to register")
        assert path_of(box.link("ann@example.com")).startswith("/reset?token=")
        assert "password" not in text(warned).split("reset it here")[0].lower().replace(
            "forgot your password", ""
        )
        refused = await client.login("eve@example.com", PASSWORD)
        assert (refused.code, body(refused)) == (403, {"error": UNVERIFIED})
        assert (await client.get("/api/dashboard")).code == 401
        resend = await client.post("/api/verify/resend", {"email": "eve@example.com"})
        assert resend.code == 200
        box = await outbox(server.services)
        last_link = box.link("eve@example.com", "Confirm your email")
        verified = await client.post("/api/verify", {"token": token_of(last_link)})
        assert verified.code == 200
        assert (await client.login("eve@example.com", PASSWORD)).code == 200


async def test_the_sign_in_page_offers_a_new_verification_link(store: Store):
    async with serve(store, users__require_verified_email=True) as server:
        await server.add_user("ann@example.com")
        client = server.client()
        page = await submit(client, "/login", {"email": "ann@example.com", "password": PASSWORD})
        assert page.code == 403
        assert b"not verified" in page.body and b"/verify/resend" in page.body


# -- re-authentication ---------------------------------------------------------------------------


async def test_sensitive_changes_need_a_recent_password_check(app: Server):
    await app.add_user("ann@example.com")
    client = await signed_in(app, "ann@example.com")
    await signed_in(app, "ann@example.com")
    later = time.time() + 601  # past security.reauth_ttl since the sign-in
    app.services.lifecycle.clock = lambda: later
    for path, payload in (
        ("/api/sessions/revoke-others", None),
        ("/api/email", {"newEmail": "new@example.com"}),
    ):
        refused = await client.post(path, payload)
        assert (refused.code, body(refused)) == (403, {"error": "Re-authentication required"})
    page = await client.get("/email")
    assert page.code == 302 and page.headers["Location"] == "/reauth?next=/email"
    wrong = await client.post("/api/reauth", {"password": "wrong"})
    assert wrong.code == 401
    assert (await client.post("/api/reauth", {"password": PASSWORD})).code == 200
    assert body(await client.post("/api/sessions/revoke-others"))["revoked"] == 1
    audit = [entry.event for entry in (await app.services.audit.page(0, 50))[0]]
    assert "reauthenticated" in audit and "password_check_failed" in audit


async def test_the_reauth_page_continues_where_the_user_was(app: Server):
    await app.add_user("ann@example.com")
    client = await signed_in(app, "ann@example.com")
    later = time.time() + 601
    app.services.lifecycle.clock = lambda: later
    stale = await submit(client, "/sessions/revoke-others", {}, "/sessions")
    assert stale.code == 302 and stale.headers["Location"] == "/reauth?next=/sessions"
    done = await submit(client, "/reauth?next=/email", {"password": PASSWORD, "next": "/email"})
    assert done.code == 302 and done.headers["Location"] == "/email"
    assert (await client.get("/email")).code == 200


# -- email change --------------------------------------------------------------------------------


async def test_email_change_confirmed_by_the_new_address_and_undone_by_the_old(app: Server):
    await app.add_user("ann@example.com")
    client = await signed_in(app, "ann@example.com")
    asked = await client.post("/api/email", {"newEmail": "ann@new.example"})
    assert asked.code == 202
    assert (await client.get("/api/profile")).code == 200  # nothing changed yet
    box = await outbox(app.services)
    confirm = path_of(box.link("ann@new.example", "Confirm your new email"))
    assert confirm.startswith("/confirm-email?token=")
    page = await client.get(confirm)
    assert page.code == 200 and b"Confirm the new address" in page.body  # GET changes nothing
    done = await submit(client, "/confirm-email", {"token": token_of(confirm)}, confirm)
    assert done.code == 200 and b"ann@new.example" in done.body
    assert (await client.get("/api/dashboard")).code == 401  # every session ended
    assert (await client.login("ann@new.example", PASSWORD)).code == 200
    box = await outbox(app.services)
    undo = path_of(box.link("ann@example.com", "email address"))
    assert undo.startswith("/undo-email?token=")
    other = app.client()
    undone = await submit(other, "/undo-email", {"token": token_of(undo)}, undo)
    assert undone.code == 200
    assert (await client.get("/api/dashboard")).code == 401
    assert (await other.login("ann@example.com", PASSWORD)).code == 200
    box = await outbox(app.services)
    assert box.last("ann@example.com", "Reset your password")


async def test_email_change_to_a_taken_address_is_answered_alike_and_mails_nothing(app: Server):
    await app.add_user("ann@example.com")
    await app.add_user("bob@example.com")
    client = await signed_in(app, "ann@example.com")
    assert (await client.post("/api/email", {"newEmail": "bob@example.com"})).code == 202
    box = await outbox(app.services)
    assert not [m for m in box.messages("bob@example.com") if "new email" in m["Subject"]]


@pytest.mark.store_independent  # refused before any store is asked
async def test_email_change_to_a_bad_address_is_400(app: Server):
    await app.add_user("ann@example.com")
    client = await signed_in(app, "ann@example.com")
    assert (await client.post("/api/email", {"newEmail": "nope"})).code == 400
    assert (await client.post("/api/email", {"newEmail": "ann@example.com"})).code == 400
    assert (await client.post("/api/email", {"newEmail": "x@" + "a" * 300 + ".com"})).code == 400


# -- devices -------------------------------------------------------------------------------------


async def test_sessions_show_readable_devices_and_names(app: Server):
    await app.add_user("ann@example.com")
    await app.add_user("bob@example.com")
    client = await signed_in(app, "ann@example.com", agent=FIREFOX)
    phone = await signed_in(app, "ann@example.com", agent=IPHONE)
    listed = body(await client.get("/api/sessions"))["sessions"]
    assert sorted(s["device"] for s in listed) == ["Firefox 133 on Ubuntu", "Safari on iPhone"]
    mine = next(s for s in listed if s["current"])
    named = await client.request("PATCH", f"/api/sessions/{mine['id']}", {"name": "Work laptop"})
    assert named.code == 200 and body(named)["name"] == "Work laptop"
    listed = body(await phone.get("/api/sessions"))["sessions"]
    assert {s["id"]: s["name"] for s in listed}[mine["id"]] == "Work laptop"
    page = await client.get("/sessions")
    assert b"Work laptop" in page.body and b"Safari on iPhone" in page.body
    bob = await signed_in(app, "bob@example.com")
    stolen = await bob.request("PATCH", f"/api/sessions/{mine['id']}", {"name": "mine"})
    assert stolen.code == 404
    for bad in ({"name": 5}, {"name": "x" * 65}, {"name": "a\u0000b"}, {}):
        assert (await client.request("PATCH", f"/api/sessions/{mine['id']}", bad)).code == 400


async def test_a_new_device_sends_an_alert_whose_link_ends_every_session(app: Server):
    await app.add_user("ann@example.com")
    laptop = await signed_in(app, "ann@example.com", agent=FIREFOX)
    await signed_in(app, "ann@example.com", agent=FIREFOX)
    box = await outbox(app.services)
    assert not [m for m in box.messages() if "New sign-in" in m["Subject"]]  # first, then known
    await signed_in(app, "ann@example.com", agent=IPHONE)
    box = await outbox(app.services)
    alert = box.last("ann@example.com", "New sign-in")
    assert "Safari on iPhone" in text(alert) and "127.0.0.1" in text(alert)
    not_me = path_of(box.link("ann@example.com", "New sign-in"))
    anyone = app.client()
    done = await submit(anyone, "/not-me", {"token": token_of(not_me)}, not_me)
    assert done.code == 200
    assert (await laptop.get("/api/dashboard")).code == 401
    assert (await outbox(app.services)).last("ann@example.com", "Reset your password")
    again = await submit(anyone, "/not-me", {"token": token_of(not_me)}, not_me)
    assert again.code == 400


# -- admin ---------------------------------------------------------------------------------------


async def test_admin_sends_reset_and_verification_links(app: Server):
    ann = await app.add_user("ann@example.com")
    await app.add_user("root@example.com", role="admin")
    admin = await signed_in(app, "root@example.com")
    for what, subject in (("send-reset", "Reset"), ("send-verification", "Confirm your email")):
        sent = await admin.post(f"/api/admin/users/{ann.id}/{what}")
        assert sent.code == 202
        assert (await outbox(app.services)).last("ann@example.com", subject)
    assert (await admin.post("/api/admin/users/nobody/send-reset")).code == 404
    user = await signed_in(app, "ann@example.com")
    assert (await user.post(f"/api/admin/users/{ann.id}/send-reset")).code == 403
    users = body(await admin.get("/api/admin/users"))["users"]
    assert {u["email"]: u["emailVerified"] for u in users}["ann@example.com"] is False
    events = [entry.public() for entry in (await app.services.audit.page(0, 50))[0]]
    by_admin = [e["event"] for e in events if e["detail"].get("by")]
    assert sorted(by_admin) == ["password_reset_sent", "verification_sent"]


async def test_pages_show_the_verification_state_and_send_links(app: Server):
    ann = await app.add_user("ann@example.com")
    await app.add_user("root@example.com", role="admin")
    admin = await signed_in(app, "root@example.com")
    listing = await admin.get("/admin")
    assert b"email not verified" in listing.body and b"/send-verification" in listing.body
    sent = await submit(admin, f"/admin/users/{ann.id}/send-verification", {}, "/admin")
    assert sent.code == 302
    link = path_of((await outbox(app.services)).link("ann@example.com", "Confirm your email"))
    user = await signed_in(app, "ann@example.com")
    assert b"not verified yet" in (await user.get("/dashboard")).body
    assert (await submit(user, "/verify", {"token": token_of(link)}, link)).code == 200
    assert b"Your email address is verified" in (await user.get("/dashboard")).body
    assert b"email verified" in (await admin.get("/admin")).body


async def test_quiet_registration_counts_each_registration_once(store: Store):
    async with serve(
        store, users__require_verified_email=True, throttle__ip_registrations=2
    ) as server:
        client = server.client()
        codes = []
        for n in range(3):
            new = {"email": f"u{n}@example.com", "password": PASSWORD, "name": "U"}
            codes.append((await client.post("/api/register", new)).code)
            await server.services.lifecycle.drain()  # the account is made after the answer
        assert codes == [202, 202, 429]
        assert await server.services.users.by_email("u1@example.com") is not None
        assert await server.services.users.by_email("u2@example.com") is None


@pytest.mark.store_independent  # refused before any store is asked
async def test_the_email_page_says_what_is_wrong(app: Server):
    await app.add_user("ann@example.com")
    client = await signed_in(app, "ann@example.com")
    same = await submit(client, "/email", {"email": "ann@example.com"})
    assert same.code == 400 and b"is your address already" in same.body
    bad = await submit(client, "/email", {"email": "nope"})
    assert bad.code == 400 and b"not a valid address" in bad.body


async def test_the_email_page_sends_a_confirmation(app: Server):
    await app.add_user("ann@example.com")
    client = await signed_in(app, "ann@example.com")
    sent = await submit(client, "/email", {"email": "ann@new.example"})
    assert sent.code == 200 and b"confirmation link was sent" in sent.body
    assert (await outbox(app.services)).last("ann@new.example", "Confirm your new email")


# -- links that must not outlive what they guard -------------------------------------------------


async def change_email(app: Server, client: Client, new: str) -> str:
    """Ask for ``new`` and follow its confirmation link; the undo link sent to the old address."""
    old = body(await client.get("/api/profile"))["email"]
    assert (await client.post("/api/email", {"newEmail": new})).code == 202
    confirm = path_of((await outbox(app.services)).link(new, "Confirm your new email"))
    done = await submit(app.client(), "/confirm-email", {"token": token_of(confirm)}, confirm)
    assert done.code == 200
    return path_of((await outbox(app.services)).link(old, "was changed"))


async def test_the_address_cannot_change_again_while_its_undo_link_works(app: Server):
    """Else whoever changed it could change it again and void the owner's undo link."""
    await app.add_user("bob@example.com")
    client = await signed_in(app, "bob@example.com")
    undo = await change_email(app, client, "bob2@example.com")
    again = await signed_in(app, "bob2@example.com")
    refused = await again.post("/api/email", {"newEmail": "bob3@example.com"})
    assert refused.code == 409
    assert body(refused)["error"] == "Your address changed recently: it can change again in 7 days"
    page = await submit(again, "/email", {"email": "bob3@example.com"})
    assert page.code == 409 and b"can change again in 7 days" in page.body
    assert (await submit(app.client(), "/undo-email", {"token": token_of(undo)}, undo)).code == 200
    assert (await app.client().login("bob@example.com", PASSWORD)).code == 200
    assert (await app.client().login("bob2@example.com", PASSWORD)).code == 401
    later = time.time() + 7 * 86400 + 1  # past security.undo_ttl: the next change may go ahead
    restored = await signed_in(app, "bob@example.com")
    app.services.lifecycle.clock = lambda: later
    assert (await restored.post("/api/reauth", {"password": PASSWORD})).code == 200
    assert (await restored.post("/api/email", {"newEmail": "bob4@example.com"})).code == 202


@pytest.mark.parametrize("how", ["reset", "not me", "password change"])
async def test_a_pending_email_change_ends_with_a_reset_not_me_or_new_password(
    app: Server, how: str
):
    await app.add_user("ann@example.com")
    intruder = await signed_in(app, "ann@example.com")
    assert (await intruder.post("/api/email", {"newEmail": "evil@example.net"})).code == 202
    box = await outbox(app.services)
    confirm = path_of(box.link("evil@example.net", "Confirm your new email"))
    not_me = path_of(box.link("ann@example.com", "asked to change your email"))
    owner = app.client()
    if how == "reset":
        await forgot(owner, "ann@example.com")
        link = (await outbox(app.services)).link("ann@example.com", "Reset your password")
        reset = {"token": token_of(link), "newPassword": "owner's new pw"}
        assert (await owner.post("/api/password/reset", reset)).code == 200
    elif how == "not me":
        assert (await submit(owner, "/not-me", {"token": token_of(not_me)}, not_me)).code == 200
    else:
        owner = await signed_in(app, "ann@example.com")
        change = {"currentPassword": PASSWORD, "newPassword": "owner's new pw"}
        assert (await owner.post("/api/password", change)).code == 200
    late = await submit(app.client(), "/confirm-email", {"token": token_of(confirm)}, confirm)
    assert late.code == 400
    user = await app.services.users.by_email("ann@example.com")
    assert user is not None and user.email == "ann@example.com"


async def test_a_reset_voids_the_other_reset_links_and_an_email_change_voids_all(app: Server):
    await app.add_user("ann@example.com")
    answers = await asyncio.gather(*(forgot(app.client(), "ann@example.com") for _ in range(3)))
    assert [a.code for a in answers] == [200, 200, 200]
    box = await outbox(app.services)
    resets = [m for m in box.messages("ann@example.com") if "Reset" in m["Subject"]]
    tokens = [token_of(match.group(0)) for m in resets if (match := LINK.search(text(m)))]
    assert len(tokens) == 3
    codes = []
    for n, token in enumerate(tokens):  # issued at once: at least one works, and only once
        reset = {"token": token, "newPassword": f"new password {n}"}
        codes.append((await app.client().post("/api/password/reset", reset)).code)
    assert sorted(codes) == [200, 400, 400]
    first = f"new password {codes.index(200)}"
    # a reset link mailed to the old address stops working once the address changes
    await forgot(app.client(), "ann@example.com")
    stale = token_of((await outbox(app.services)).link("ann@example.com", "Reset your password"))
    client = app.client()
    assert (await client.login("ann@example.com", first)).code == 200
    await change_email(app, client, "ann@new.example")
    late = {"token": stale, "newPassword": "intruder pw"}
    assert (await app.client().post("/api/password/reset", late)).code == 400


async def test_email_change_requests_are_throttled_per_ip_and_per_address(store: Store):
    async with serve(store, throttle__mail_per_address=2, throttle__mail_per_ip=5) as server:
        await server.add_user("ann@example.com")
        client = await signed_in(server, "ann@example.com")
        burst = [{"newEmail": "victim@example.org"}] * 4 + [{"newEmail": "x@example.org"}] * 4
        answers = await asyncio.gather(*(client.post("/api/email", b) for b in burst))
        codes = sorted(a.code for a in answers)
        assert codes == [202] * 5 + [429] * 3
        box = await outbox(server.services)
        assert len(box.messages("victim@example.org")) <= 2
        assert len(box.messages("x@example.org")) <= 2


async def test_session_renames_are_throttled(app: Server):
    await app.add_user("ann@example.com")
    client = await signed_in(app, "ann@example.com")
    sessions = body(await client.get("/api/sessions"))["sessions"]
    path = f"/api/sessions/{sessions[0]['id']}"
    answers = await asyncio.gather(
        *(client.request("PATCH", path, {"name": f"n{i}"}) for i in range(40))
    )
    codes = [a.code for a in answers]
    assert codes.count(200) == 30 and codes.count(429) == 10
    audit = [e.event for e in (await app.services.audit.page(0, 200))[0]]
    assert audit.count("session_renamed") == 30


async def test_revoking_another_session_needs_a_recent_password_check(app: Server):
    await app.add_user("ann@example.com")
    client = await signed_in(app, "ann@example.com")
    other = await signed_in(app, "ann@example.com")
    sessions = body(await client.get("/api/sessions"))["sessions"]
    theirs = next(s["id"] for s in sessions if not s["current"])
    later = time.time() + 601  # past security.reauth_ttl since the sign-in
    app.services.lifecycle.clock = lambda: later
    refused = await client.request("DELETE", f"/api/sessions/{theirs}")
    assert (refused.code, body(refused)) == (403, {"error": "Re-authentication required"})
    page = await submit(client, f"/sessions/{theirs}/revoke", {"confirm": "1"}, "/sessions")
    assert page.code == 302 and page.headers["Location"] == "/reauth?next=/sessions"
    assert (await other.get("/api/dashboard")).code == 200
    assert (await client.post("/api/reauth", {"password": PASSWORD})).code == 200
    assert (await client.request("DELETE", f"/api/sessions/{theirs}")).code == 204
    assert (await other.get("/api/dashboard")).code == 401
