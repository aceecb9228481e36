"""Concurrent bursts against every throttle: N requests at once, past the limit, let through at
most the limit, and the ones refused do none of the work the throttle guards.

The counters themselves are tried on every session store (each keeps them its own way); the
throttles the app applies are tried on SQLite sessions, where each counter operation runs in the
store's thread, so an await between a throttle's check and its count is a real suspension that
the other requests of the burst run in (with the memory store nothing suspends there, so
nothing could interleave). Sign-in bursts (by account and address, by address),
password-change bursts and registration bursts are in test_account_races.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pyotp
import pytest

from tornado_auth import accounts
from tornado_auth.accounts import Origin
from tornado_auth.lifecycle import SESSION_RENAMES
from tornado_auth.passkeys import OPTIONS_PER_IP, RENAMES, Passkey
from tornado_auth.sessions import Backend
from tornado_auth.throttle import Limits, LoginThrottle, Throttled
from tornado_auth.users.passwords import verify_password

from .authenticator import b64
from .conftest import PASSWORD, Client, Server, Store, body, serving, settings_for
from .helpers import burst, signed_in
from .mailbox import outbox

ONE_STORE = pytest.mark.parametrize("store", ["sqlite"], indirect=True)
NOW = 1_900_000_000.0
ANN = "ann@example.com"


async def audit_count(server: Server, event: str) -> int:
    entries, _ = await server.services.audit.page(0, 1000)
    return sum(entry.event == event for entry in entries)


class CountedPasswordChecks:
    """Counts the password checks the app asks for (each one is bcrypt work)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0

        async def counted(password: str, stored: str) -> bool:
            self.count += 1
            return await verify_password(password, stored)

        monkeypatch.setattr(accounts, "verify_password", counted)


# -- the counters, on every session store ---------------------------------------------------------


async def warmed_throttle(backend: Backend) -> LoginThrottle:
    """A throttle of 5 failures a window over the backend's counters, its connections already
    made (so a burst does not queue behind the first connection and run one at a time)."""
    await backend.counters.peek("warm-up", NOW)
    limits = Limits(account_ip_failures=5, ip_failures=1000, window=600)
    return LoginThrottle(backend.counters, limits, clock=lambda: NOW)


async def test_concurrent_hits_on_one_counter_are_each_counted_once(backend: Backend):
    await backend.counters.peek("warm-up", NOW)  # connections made: the hits run side by side
    counted = await asyncio.gather(*(backend.counters.hit("burst", 60, NOW) for _ in range(40)))

    assert sorted(count for count, _ in counted) == list(range(1, 41))
    assert all(ends == pytest.approx(NOW + 60, abs=1) for _, ends in counted)  # one window
    assert (await backend.counters.peek("burst", NOW))[0] == 40


async def test_a_burst_of_reserved_password_checks_lets_through_only_the_limit(
    backend: Backend,
):
    throttle = await warmed_throttle(backend)
    outcomes = await asyncio.gather(
        *(throttle.reserve(ANN, "203.0.113.7") for _ in range(30)), return_exceptions=True
    )

    assert outcomes.count(None) == 5
    refused = [outcome for outcome in outcomes if isinstance(outcome, Throttled)]
    assert len(refused) == 25
    assert sum(outcome.first for outcome in refused) == 1  # one refusal is the window's first


async def test_a_burst_of_second_steps_lets_through_only_the_limit(backend: Backend):
    throttle = await warmed_throttle(backend)
    outcomes = await asyncio.gather(
        *(throttle.second_step("user-1") for _ in range(30)), return_exceptions=True
    )

    assert outcomes.count(None) == 5
    assert sum(isinstance(outcome, Throttled) for outcome in outcomes) == 25


# -- mail: by address and by recipient ------------------------------------------------------------


@ONE_STORE
@pytest.mark.parametrize("path", ["/api/password/forgot", "/api/verify/resend"])
async def test_a_burst_of_mail_requests_from_one_address_is_refused_past_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch, path: str
):
    async with serving(settings_for(store, throttle__mail_per_ip=5)) as server:
        people = [f"user{n}@example.com" for n in range(15)]
        for email in people:  # unverified, so each would get a verification link too
            await server.add_user(email, PASSWORD)

        async def ask(client: Client, n: int):
            return await client.post(path, {"email": people[n]})

        statuses = await burst(monkeypatch, server, 15, ask)

        assert statuses == [200] * 5 + [429] * 10
        assert len((await outbox(server.services)).messages()) == 5  # one mail per request let in


@ONE_STORE
async def test_a_burst_of_reset_requests_for_one_address_mails_it_only_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    async with serving(settings_for(store, throttle__mail_per_address=3)) as server:
        await server.add_user(ANN, PASSWORD)

        async def ask(client: Client, n: int):
            return await client.post("/api/password/forgot", {"email": ANN})

        statuses = await burst(monkeypatch, server, 12, ask)

        assert statuses == [200] * 12  # the same answer whether mailed or not
        assert len((await outbox(server.services)).messages(ANN)) == 3
        assert await audit_count(server, "password_reset_sent") == 3
        assert await audit_count(server, "mail_throttled") == 1


@ONE_STORE
async def test_a_burst_of_email_change_requests_from_one_address_is_refused_past_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    async with serving(settings_for(store, throttle__mail_per_ip=5)) as server:
        client = await signed_in(server, ANN)
        assert (await client.post("/api/reauth", {"password": PASSWORD})).code == 200

        async def change(client: Client, n: int):
            return await client.post("/api/email", {"newEmail": f"new{n}@example.com"})

        statuses = await burst(monkeypatch, server, 15, change, client)

        assert statuses == [202] * 5 + [429] * 10
        mail = await outbox(server.services)
        assert len([m for m in mail.messages() if m["To"] != ANN]) == 5  # to the new addresses
        assert await audit_count(server, "email_change_requested") == 5


# -- password and second-step checks ---------------------------------------------------------------


@ONE_STORE
async def test_a_burst_of_wrong_passwords_at_re_authentication_is_refused_past_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    async with serving(settings_for(store, throttle__account_ip_failures=5)) as server:
        client = await signed_in(server, ANN)
        checks = CountedPasswordChecks(monkeypatch)

        async def guess(client: Client, n: int):
            return await client.post("/api/reauth", {"password": f"guess {n}"})

        statuses = await burst(monkeypatch, server, 20, guess, client)

        assert statuses == [401] * 5 + [429] * 15
        assert checks.count == 5  # the refused ones cost no bcrypt work


@ONE_STORE
@pytest.mark.parametrize("field", ["code", "recoveryCode"])
async def test_a_burst_of_wrong_second_steps_from_many_addresses_is_refused_past_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch, field: str
):
    """From a new address each, so only the per-user count of second steps can refuse them."""
    settings = settings_for(store, throttle__account_ip_failures=5, server__xheaders=True)
    async with serving(settings) as server:
        user = await server.add_user(ANN, PASSWORD)
        mfa = server.services.mfa
        secret = await mfa.begin_totp(user)
        assert await mfa.confirm_totp(user, pyotp.TOTP(secret).now(), Origin()) is not None
        client = server.client()
        first_step = await client.login(ANN, PASSWORD)
        assert body(first_step)["mfaRequired"] is True
        checked = 0
        real_totp, real_recovery = mfa.check_totp, mfa.check_recovery_code

        async def counted_totp(*args: object) -> bool:
            nonlocal checked
            checked += 1
            return await real_totp(*args)

        async def counted_recovery(*args: object) -> bool:
            nonlocal checked
            checked += 1
            return await real_recovery(*args)

        monkeypatch.setattr(mfa, "check_totp", counted_totp)
        monkeypatch.setattr(mfa, "check_recovery_code", counted_recovery)
        wrong = {"code": "000000", "recoveryCode": "aaaaa-bbbbb"}[field]

        async def guess(client: Client, n: int):
            headers = {"X-Real-IP": f"203.0.113.{n + 1}"}
            return await client.request("POST", "/api/login/mfa", {field: wrong}, headers)

        statuses = await burst(monkeypatch, server, 20, guess, client)

        assert statuses == [401] * 5 + [429] * 15
        assert checked == 5  # the refused ones were never checked


@ONE_STORE
async def test_a_burst_of_unproven_passkey_sign_ins_is_refused_past_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    """A response of the right shape for a credential no one has: each is a failed sign-in."""
    async with serving(settings_for(store, throttle__account_ip_failures=5)) as server:
        passkeys = server.services.passkeys
        checked = 0
        real_verify = passkeys.verify_authentication

        async def counted(*args: object) -> str | None:
            nonlocal checked
            checked += 1
            return await real_verify(*args)

        monkeypatch.setattr(passkeys, "verify_authentication", counted)
        raw_id = b64(b"a credential no one has")
        client_data = {"type": "webauthn.get", "challenge": b64(bytes(32)), "origin": "x"}
        response = {
            "clientDataJSON": b64(json.dumps(client_data).encode()),
            "authenticatorData": b64(bytes(37)),
            "signature": b64(b"not a signature"),
        }
        credential = {"id": raw_id, "rawId": raw_id, "type": "public-key", "response": response}

        async def sign_in(client: Client, n: int):
            return await client.post("/api/login/passkey", {"credential": credential})

        statuses = await burst(monkeypatch, server, 20, sign_in)

        assert statuses == [401] * 5 + [429] * 15
        assert checked == 5  # the refused ones were never checked


# -- renames and passkey challenges ---------------------------------------------------------------


@ONE_STORE
async def test_a_burst_of_session_renames_is_refused_past_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    async with serving(settings_for(store)) as server:
        client = await signed_in(server, ANN)
        [session] = body(await client.get("/api/sessions"))["sessions"]
        count = SESSION_RENAMES + 10

        async def rename(client: Client, n: int):
            path = f"/api/sessions/{session['id']}"
            return await client.request("PATCH", path, {"name": f"laptop {n}"})

        statuses = await burst(monkeypatch, server, count, rename, client)

        assert statuses == [200] * SESSION_RENAMES + [429] * 10
        assert await audit_count(server, "session_renamed") == SESSION_RENAMES


@ONE_STORE
async def test_a_burst_of_passkey_renames_is_refused_past_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    async with serving(settings_for(store)) as server:
        client = await signed_in(server, ANN)
        user = await server.services.users.by_email(ANN)
        passkey = Passkey("credential-1", user.id, "Laptop", b"key", 0, time.time())
        assert await server.services.passkeys.store.add(passkey)
        count = RENAMES + 10

        async def rename(client: Client, n: int):
            path = f"/api/passkeys/{passkey.id}"
            return await client.request("PATCH", path, {"name": f"key {n}"})

        statuses = await burst(monkeypatch, server, count, rename, client)

        assert statuses == [200] * RENAMES + [429] * 10
        assert await audit_count(server, "passkey_renamed") == RENAMES


@ONE_STORE
async def test_a_burst_of_passkey_challenges_from_one_address_is_refused_past_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    async with serving(settings_for(store)) as server:
        made = 0
        new_challenge = server.services.passkeys._new_challenge

        async def counted(*args: object) -> bytes:
            nonlocal made
            made += 1
            return await new_challenge(*args)

        monkeypatch.setattr(server.services.passkeys, "_new_challenge", counted)

        async def ask(client: Client, n: int):
            return await client.post("/api/login/passkey/options", {})

        statuses = await burst(monkeypatch, server, OPTIONS_PER_IP + 10, ask)

        assert statuses == [200] * OPTIONS_PER_IP + [429] * 10
        assert made == OPTIONS_PER_IP  # no challenge is stored for a refused request


# -- registration that tells no one whether an address is taken -----------------------------------


@ONE_STORE
async def test_a_burst_of_quiet_registrations_is_refused_past_the_address_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    settings = settings_for(store, users__require_verified_email=True, throttle__ip_registrations=3)
    async with serving(settings) as server:

        async def register(client: Client, n: int):
            fields = {"email": f"user{n}@example.com", "password": PASSWORD, "name": "U"}
            return await client.post("/api/register", fields)

        statuses = await burst(monkeypatch, server, 12, register)
        await server.services.lifecycle.drain()

        assert statuses == [202] * 3 + [429] * 9
        assert (await server.services.users.page(0, 100))[1] == 3
