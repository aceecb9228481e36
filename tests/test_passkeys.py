"""Passkeys through the JSON API, on SQLite and on Redis sessions with MongoDB users, with a
software authenticator: registration, sign-in without a password, signature counters, single-use
and expiring challenges, the relying party's origin and id, second-factor checks, removal, and
bad input."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pyotp
import pytest

from tornado_auth.accounts import Origin
from tornado_auth.handlers.signin import ACCOUNT_DISABLED
from tornado_auth.passkeys import relying_party

from .authenticator import Authenticator, b64
from .conftest import PASSWORD, Client, Server, Store, body, serving, settings_for
from .helpers import signed_in
from .mailbox import outbox

pytestmark = pytest.mark.stores("sqlite", "redis")

PUBLIC = "https://auth.example.com"
NOT_RECOGNISED = {"error": "Passkey not recognised"}


@pytest.fixture
async def app(store: Store) -> AsyncIterator[Server]:
    async with serving(settings_for(store, server__public_url=PUBLIC)) as running:
        yield running


async def register(
    client: Client, device: Authenticator, name: str = "Laptop", **answer: Any
) -> Any:
    options = await client.post("/api/passkeys/register/options", {})
    assert options.code == 200, options.body
    credential = device.create(body(options), **answer)
    return await client.post("/api/passkeys/register", {"credential": credential, "name": name})


async def sign_in(client: Client, device: Authenticator, **answer: Any) -> Any:
    options = await client.post("/api/login/passkey/options", {})
    assert options.code == 200, options.body
    credential = device.get(body(options), **answer)
    return await client.post("/api/login/passkey", {"credential": credential})


async def events(app: Server) -> list[dict[str, Any]]:
    return [entry.public() for entry in (await app.services.audit.page(0, 200))[0]]


async def passkey_count(app: Server, email: str) -> int:
    user = await app.services.users.by_email(email)
    assert user is not None
    return await app.services.passkeys.count(user.id)


async def test_a_registered_passkey_signs_in_without_a_password(app: Server):
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    options = body(await client.post("/api/passkeys/register/options", {}))
    user = await app.services.users.by_email("ann@example.com")
    assert options["rp"] == {"id": "auth.example.com", "name": "auth.example.com"}
    assert options["user"]["id"] == b64(user.id.encode())
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    created = await register(client, device, name="  Work   laptop ")
    assert created.code == 201, created.body
    added = body(created)["passkey"]
    assert added["name"] == "Work laptop" and added["transports"] == ["internal"]
    assert body(await client.get("/api/passkeys"))["passkeys"] == [added]

    browser = app.client()
    options = body(await browser.post("/api/login/passkey/options", {}))
    assert options["allowCredentials"] == [] and options["rpId"] == "auth.example.com"
    answered = await browser.post(
        "/api/login/passkey", {"credential": device.get(options), "rememberMe": True}
    )
    assert answered.code == 200, answered.body
    assert body(answered)["user"]["email"] == "ann@example.com"
    dashboard = await browser.get("/api/dashboard")
    assert body(dashboard)["email"] == "ann@example.com"
    listed = body(await browser.get("/api/passkeys"))["passkeys"]
    assert listed[0]["lastUsedAt"] is not None

    trail = await events(app)
    signin = next(e for e in trail if e["event"] == "signin")
    assert signin["detail"] == {"method": "passkey"} and signin["session"]
    assert any(e["event"] == "passkey_added" for e in trail)
    box = await outbox(app.services)
    assert "Work laptop" in box.last("ann@example.com", "A passkey was added").as_string()
    for secret in (options["challenge"], device.credentials[0].id.hex()):
        assert secret not in str(trail)


async def test_a_signature_counter_that_does_not_move_on_is_refused_and_audited(app: Server):
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    assert (await register(client, device)).code == 201
    assert (await sign_in(app.client(), device, counter=5)).code == 200
    for counter in (5, 3):  # the same, then lower: a cloned authenticator
        refused = await sign_in(app.client(), device, counter=counter)
        assert (refused.code, body(refused)) == (401, NOT_RECOGNISED)
    assert (await sign_in(app.client(), device, counter=6)).code == 200
    refusals = [e for e in await events(app) if e["event"] == "passkey_counter_refused"]
    assert [e["detail"]["counter"] for e in refusals] == [3, 5]
    assert all(e["email"] == "ann@example.com" for e in refusals)


async def test_a_challenge_works_once_even_for_two_responses_at_once(app: Server):
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    assert (await register(client, device)).code == 201
    browser = app.client()
    options = body(await browser.post("/api/login/passkey/options", {}))
    first, again = device.get(options), device.get(options)
    assert (await browser.post("/api/login/passkey", {"credential": first})).code == 200
    replayed = await app.client().post("/api/login/passkey", {"credential": again})
    assert (replayed.code, body(replayed)) == (401, NOT_RECOGNISED)

    options = body(await browser.post("/api/login/passkey/options", {}))
    answers = [device.get(options) for _ in range(4)]
    clients = [app.client() for _ in answers]
    results = await asyncio.gather(
        *(
            c.post("/api/login/passkey", {"credential": a})
            for c, a in zip(clients, answers, strict=True)
        )
    )
    assert sorted(r.code for r in results) == [200, 401, 401, 401]

    options = body(await client.post("/api/passkeys/register/options", {}))
    twice = [device.create(options) for _ in range(2)]
    registered = await asyncio.gather(
        *(client.post("/api/passkeys/register", {"credential": c}) for c in twice)
    )
    assert sorted(r.code for r in registered) == [201, 400]
    assert await passkey_count(app, "ann@example.com") == 2


async def test_an_expired_challenge_is_refused(app: Server):
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    passkeys = app.services.passkeys
    options = body(await client.post("/api/passkeys/register/options", {}))
    later = time.time() + 301  # past security.passkey_challenge_ttl (5 minutes)
    passkeys.clock = lambda: later
    late = await client.post("/api/passkeys/register", {"credential": device.create(options)})
    assert (late.code, body(late)) == (400, {"error": "Passkey not accepted: start again"})
    assert await passkey_count(app, "ann@example.com") == 0

    passkeys.clock = time.time
    assert (await register(client, device)).code == 201
    options = body(await client.post("/api/login/passkey/options", {}))
    passkeys.clock = lambda: later
    late = await app.client().post("/api/login/passkey", {"credential": device.get(options)})
    assert (late.code, body(late)) == (401, NOT_RECOGNISED)


@pytest.mark.store_independent  # refused by the verification
async def test_responses_for_another_origin_or_relying_party_are_refused(app: Server):
    public = "https://Auth.Example.com:443/auth"  # as browsers name it: lower case, no 443
    assert relying_party(public) == ("auth.example.com", "https://auth.example.com")
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    for wrong in ({"origin": "https://evil.example"}, {"rp_id": "evil.example"}):
        refused = await register(client, device, **wrong)
        assert refused.code == 400, refused.body
    assert await passkey_count(app, "ann@example.com") == 0
    assert (await register(client, device)).code == 201
    for wrong in (
        {"origin": "https://evil.example"},
        {"origin": "http://auth.example.com"},  # the public URL's scheme counts too
        {"rp_id": "evil.example"},
    ):
        other = app.client()
        refused = await sign_in(other, device, **wrong)
        assert (refused.code, body(refused)) == (401, NOT_RECOGNISED)
        assert "session" not in other.cookies


async def test_a_passkey_proves_only_its_own_user(app: Server):
    ann = await signed_in(app, "ann@example.com")
    await signed_in(app, "bob@example.com")
    ann_id = (await app.services.users.by_email("ann@example.com")).id
    bob_id = (await app.services.users.by_email("bob@example.com")).id
    device = Authenticator(PUBLIC)
    assert (await register(ann, device)).code == 201
    passkeys = app.services.passkeys

    # as a second factor: Ann's passkey proves Ann, never Bob
    options = await passkeys.authentication_options(ann_id)
    assert [c["id"] for c in options["allowCredentials"]] == [b64(device.credentials[0].id)]
    assert await passkeys.verify_authentication(device.get(options), bob_id) is None
    options = await passkeys.authentication_options(ann_id)
    assert await passkeys.verify_authentication(device.get(options), ann_id) == ann_id
    options = await passkeys.authentication_options(bob_id)  # a challenge made for Bob
    assert await passkeys.verify_authentication(device.get(options), ann_id) is None
    options = await passkeys.authentication_options(ann_id)  # not for a passwordless sign-in
    assert await passkeys.verify_authentication(device.get(options), None) is None
    options = await passkeys.authentication_options(ann_id)
    assert await passkeys.verify_authentication(device.get(options, verified=False), ann_id)
    assert await passkeys.count(ann_id) == 1 and await passkeys.count(bob_id) == 0

    # a response naming another user (userHandle) is refused
    refused = await sign_in(app.client(), device, user_handle=bob_id.encode())
    assert (refused.code, body(refused)) == (401, NOT_RECOGNISED)
    # without a password, the authenticator must have verified the user
    refused = await sign_in(app.client(), device, verified=False)
    assert (refused.code, body(refused)) == (401, NOT_RECOGNISED)
    # Bob cannot see, rename or remove Ann's passkey
    bob = await signed_in(app, "bob@example.com")
    passkey_id = body(await ann.get("/api/passkeys"))["passkeys"][0]["id"]
    assert body(await bob.get("/api/passkeys")) == {"passkeys": []}
    for method, payload in (("PATCH", {"name": "Mine"}), ("DELETE", None)):
        response = await bob.request(method, f"/api/passkeys/{passkey_id}", payload)
        assert (response.code, body(response)) == (404, {"error": "Passkey not found"})
    # nor register one on a challenge made for Ann
    options = body(await ann.post("/api/passkeys/register/options", {}))
    taken = await bob.post("/api/passkeys/register", {"credential": device.create(options)})
    assert taken.code == 400
    assert await passkeys.count(bob_id) == 0


async def test_registering_and_removing_need_a_recent_password_check(app: Server):
    client = await signed_in(app, "ann@example.com")
    other = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    assert (await register(client, device)).code == 201
    passkey_id = body(await client.get("/api/passkeys"))["passkeys"][0]["id"]
    later = time.time() + 601  # past security.reauth_ttl since the sign-in
    app.services.lifecycle.clock = lambda: later
    required = {"error": "Re-authentication required"}
    for method, path in (
        ("POST", "/api/passkeys/register/options"),
        ("POST", "/api/passkeys/register"),
        ("DELETE", f"/api/passkeys/{passkey_id}"),
    ):
        refused = await client.request(method, path, {} if method == "POST" else None)
        assert (refused.code, body(refused)) == (403, required)
    renamed = await client.request("PATCH", f"/api/passkeys/{passkey_id}", {"name": "Phone"})
    assert body(renamed)["passkey"]["name"] == "Phone"  # renaming needs no password

    assert (await client.post("/api/reauth", {"password": PASSWORD})).code == 200
    removed = await client.request("DELETE", f"/api/passkeys/{passkey_id}")
    assert body(removed) == {"message": "Passkey removed", "revoked": 1}
    assert (await other.get("/api/dashboard")).code == 401  # the other session ended
    assert (await client.get("/api/dashboard")).code == 200  # this one stays
    assert body(await client.get("/api/passkeys")) == {"passkeys": []}
    again = await client.request("DELETE", f"/api/passkeys/{passkey_id}")
    assert again.code == 404
    refused = await sign_in(app.client(), device)
    assert (refused.code, body(refused)) == (401, NOT_RECOGNISED)
    trail = await events(app)
    removal = next(e for e in trail if e["event"] == "passkey_removed")
    assert removal["detail"] == {"passkey": passkey_id, "revoked": 1}
    assert any(e["event"] == "passkey_renamed" for e in trail)
    box = await outbox(app.services)
    assert "Phone" in box.last("ann@example.com", "A passkey was removed").as_string()


async def test_a_disabled_users_passkey_does_not_sign_in(app: Server):
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    assert (await register(client, device)).code == 201
    user = await app.services.users.by_email("ann@example.com")
    await app.services.accounts.change_user(user, None, True, Origin())
    browser = app.client()
    refused = await sign_in(browser, device)
    assert (refused.code, body(refused)) == (401, {"error": ACCOUNT_DISABLED})
    assert "session" not in browser.cookies
    failed = [e for e in await events(app) if e["event"] == "signin_failed"]
    assert failed[0]["detail"] == {"reason": "disabled", "method": "passkey"}


async def test_a_sign_in_in_flight_when_the_account_is_disabled_never_works(app: Server):
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    assert (await register(client, device)).code == 201
    user = await app.services.users.by_email("ann@example.com")
    accounts = app.services.accounts
    enter = accounts.enter

    async def disabled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        await accounts.change_user(user, None, True, Origin())
        return await enter(*args, **kwargs)

    accounts.enter = disabled_meanwhile  # type: ignore[method-assign]
    browser = app.client()
    refused = await sign_in(browser, device)
    assert (refused.code, body(refused)) == (401, NOT_RECOGNISED)
    assert (await browser.get("/api/dashboard")).code == 401


async def test_passkey_sign_ins_challenges_and_renames_are_throttled(store: Store):
    settings = settings_for(store, server__public_url=PUBLIC, throttle__account_ip_failures=3)
    async with serving(settings) as app:
        client = await signed_in(app, "ann@example.com")
        device = Authenticator(PUBLIC)
        assert (await register(client, device)).code == 201
        for _ in range(3):
            assert (await sign_in(app.client(), device, origin="https://evil.example")).code == 401
        refused = await sign_in(app.client(), device)
        assert refused.code == 429 and "Retry-After" in refused.headers
        assert body(refused)["error"].startswith("Too many failed sign-ins")
        assert any(e["event"] == "signin_throttled" for e in await events(app))
        others = Authenticator(PUBLIC)  # another passkey from this address is not held back
        assert (await register(client, others)).code == 201
        assert (await sign_in(app.client(), others)).code == 200

        asked = [await app.client().post("/api/login/passkey/options", {}) for _ in range(24)]
        assert [r.code for r in asked[-2:]] == [200, 429]  # 30 a minute: 7 were asked for above
        assert "Retry-After" in asked[-1].headers
        refused = await client.post("/api/passkeys/register/options", {})
        assert refused.code == 429

        passkey_id = body(await client.get("/api/passkeys"))["passkeys"][0]["id"]
        path = f"/api/passkeys/{passkey_id}"
        renamed = [await client.request("PATCH", path, {"name": f"Key {n}"}) for n in range(31)]
        assert [r.code for r in renamed[-2:]] == [200, 429]  # 30 a throttle.mail_window
        assert body(renamed[-1])["error"].startswith("Too many passkey renames")


async def test_bad_passkey_input_gets_a_clear_4xx_and_changes_nothing(app: Server, caplog):
    caplog.set_level(logging.DEBUG)
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    options = body(await client.post("/api/passkeys/register/options", {}))
    good = device.create(options)
    mangled: list[Any] = [
        None, "text", [], {}, {**good, "type": "other"}, {**good, "rawId": "%%%"},
        {**good, "id": "other"}, {**good, "rawId": "A" * 5000, "id": "A" * 5000},
        {**good, "response": "x"}, {**good, "response": {**good["response"], "clientDataJSON": 7}},
        {**good, "response": {**good["response"], "clientDataJSON": b64(b"not json")}},
        {**good, "response": {**good["response"], "clientDataJSON": b64(b'{"challenge": 1}')}},
        {**good, "response": {**good["response"], "attestationObject": b64(b"\xff\x00")}},
        {**good, "response": {**good["response"], "attestationObject": "A" * 70000}},
    ]  # fmt: skip
    for credential in mangled:
        refused = await client.post("/api/passkeys/register", {"credential": credential})
        assert refused.code in (400, 413), (credential, refused.body)
        assert set(body(refused)) == {"error"}
    for name in ("x" * 65, 7, "bad\u202ename", "tab\x07"):
        refused = await client.post("/api/passkeys/register", {"credential": good, "name": name})
        assert refused.code == 400 and "Name" in body(refused)["error"], refused.body
    missing = await client.post("/api/passkeys/register", {"name": "Laptop"})
    assert body(missing) == {"error": "Credential is required"}
    assert await passkey_count(app, "ann@example.com") == 0

    signed = await register(client, device)
    assert signed.code == 201
    passkey_id = body(signed)["passkey"]["id"]
    for name, error in (("", "Name is required"), ("x" * 65, "Name must be at most 64 characters")):
        refused = await client.request("PATCH", f"/api/passkeys/{passkey_id}", {"name": name})
        assert (refused.code, body(refused)) == (400, {"error": error})
    for path in ("/api/passkeys/" + "a" * 65, "/api/passkeys/nothing-here"):
        missing = await client.request("DELETE", path)
        assert missing.code == 404 and set(body(missing)) == {"error"}

    stranger = Authenticator(PUBLIC)
    stranger.create({"rp": {"id": "auth.example.com"}, "user": {"id": b64(b"x")}, "challenge": ""})

    def answer(options: dict[str, Any], **response: Any) -> dict[str, Any]:
        assertion = device.get(options)
        return {**assertion, "response": {**assertion["response"], **response}}

    for make, code in (
        (lambda options: None, 400),
        (lambda options: answer(options, signature=5), 400),
        (lambda options: answer(options, userHandle="%%"), 400),
        (lambda options: answer(options, authenticatorData=b64(b"short")), 401),
        (lambda options: answer(options, signature=b64(b"forged")), 401),
        (lambda options: stranger.get(options), 401),  # an unknown credential
    ):
        browser = app.client()
        options = body(await browser.post("/api/login/passkey/options", {}))
        refused = await browser.post("/api/login/passkey", {"credential": make(options)})
        assert refused.code == code, refused.body
        assert set(body(refused)) == {"error"} and "session" not in browser.cookies
    for raw in (b"{", b"[]", b'{"credential": {"rawId": {"$gt": ""}}}'):
        refused = await app.client().request(
            "POST", "/api/login/passkey", raw=raw, headers={"Content-Type": "application/json"}
        )
        assert refused.code == 400 and set(body(refused)) == {"error"}
    assert body(await client.get("/api/passkeys"))["passkeys"][0]["lastUsedAt"] is None
    assert (await sign_in(app.client(), device)).code == 200  # and the passkey still works
    logged = caplog.text
    assert "passkey authentication refused: InvalidAuthenticationResponse" in logged
    for secret in (options["challenge"], b64(device.credentials[0].id), good["rawId"]):
        assert secret not in logged


async def test_the_account_and_admin_views_show_passkeys(app: Server):
    client = await signed_in(app, "ann@example.com", form=True)
    device = Authenticator(PUBLIC)
    assert (await register(client, device, name="Laptop")).code == 201
    page = await client.get("/account")
    assert b"Laptop" in page.body and b"js/passkeys.js" in page.body
    login = await app.client().get("/login")
    assert b"Sign in with a passkey" in login.body and b"js/passkeys.js" in login.body
    admin = await signed_in(app, "root@example.com", role="admin")
    users = body(await admin.get("/api/admin/users"))["users"]
    assert {u["email"]: u["passkeys"] for u in users} == {
        "ann@example.com": 1,
        "root@example.com": 0,
    }
    assert b"1 passkey" in (await admin.get("/admin")).body


async def turn_on_two_step(app: Server, client: Client) -> None:
    started = await client.post("/api/mfa/totp", {})
    assert started.code == 200, started.body
    code = pyotp.TOTP(body(started)["secret"]).now()
    confirmed = await client.post("/api/mfa/totp/confirm", {"code": code})
    assert confirmed.code == 200, confirmed.body


async def test_a_passkey_is_a_second_step_once_two_step_sign_in_is_on(app: Server):
    client = await signed_in(app, "ann@example.com")
    device = Authenticator(PUBLIC)
    assert (await register(client, device)).code == 201
    # passkeys alone never make a password ask for more: a lost device locks no one out
    plain = await app.client().login("ann@example.com", PASSWORD)
    assert plain.code == 200 and "mfaRequired" not in body(plain)
    await turn_on_two_step(app, client)
    browser = app.client()
    first = await browser.login("ann@example.com", PASSWORD, remember_me=True)
    assert body(first) == {"mfaRequired": True, "methods": ["totp", "passkey", "recovery"]}
    assert (await browser.get("/api/dashboard")).code == 401  # the first step grants nothing
    bobs = Authenticator(PUBLIC)
    assert (await register(await signed_in(app, "bob@example.com"), bobs)).code == 201
    options = body(await browser.post("/api/login/passkey/options", {}))
    refused = await browser.post("/api/login/mfa", {"passkey": bobs.get(options)})
    assert refused.code == 401  # another user's passkey proves nothing here
    options = body(await browser.post("/api/login/passkey/options", {}))
    done = await browser.post("/api/login/mfa", {"passkey": device.get(options)})
    assert done.code == 200, done.body
    assert body(await browser.get("/api/dashboard"))["email"] == "ann@example.com"
    ann = await app.services.users.by_email("ann@example.com")
    records = await app.services.sessions.list_user(ann.id)
    assert ["pwd", "passkey"] in [record.data["amr"] for record in records]


async def test_an_admin_reset_removes_the_passkeys_too(app: Server):
    client = await signed_in(app, "ann@example.com")
    assert (await register(client, Authenticator(PUBLIC))).code == 201
    admin = await signed_in(app, "root@example.com", role="admin")
    ann = await app.services.users.by_email("ann@example.com")
    reset = await admin.request("DELETE", f"/api/admin/users/{ann.id}/mfa")
    assert (reset.code, body(reset)) == (200, {"reset": True})
    assert await passkey_count(app, "ann@example.com") == 0
    assert (await client.get("/api/dashboard")).code == 401  # every session of the user ended
    assert "mfa_reset" in [e["event"] for e in await events(app)]


@pytest.mark.store_independent  # refused by the verification
@pytest.mark.parametrize(
    "key",
    [
        [1, 2, 3],  # not a COSE map at all
        {1: 2, 3: -7, -1: 1, -2: b"\x01", -3: b"\x02"},  # coordinates of one byte
        {1: 2, 3: -7, -1: 1, -2: bytes(32), -3: bytes(32)},  # a point not on the curve
        {1: 2, 3: -7, -1: 99, -2: bytes(32), -3: bytes(32)},  # a curve that does not exist
    ],
)
async def test_a_passkey_whose_key_cannot_be_used_is_refused(app: Server, key: Any):
    client = await signed_in(app, "ann@example.com")
    refused = await register(client, Authenticator(PUBLIC), cose_key=key)
    assert refused.code == 400 and "error" in body(refused)
    assert await passkey_count(app, "ann@example.com") == 0


async def test_transports_other_than_known_names_are_left_out(app: Server):
    client = await signed_in(app, "ann@example.com")
    odd = [{"x": 1}, ["usb"], "usb", "made-up"]
    created = await register(client, Authenticator(PUBLIC), transports=odd)
    assert created.code == 201, created.body
    assert body(created)["passkey"]["transports"] == ["usb"]
