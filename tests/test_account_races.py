"""Sign-ins in flight against revocations, bursts against throttles, and the last admin: on every
session store (users in SQLite, or in MongoDB beside Redis and MongoDB sessions). What only the
user store decides (a taken email, the last admin's own change) runs on
each user store; a name refused before any store is asked, on one store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import bcrypt
import pytest

from tornado_auth import accounts
from tornado_auth.users.passwords import verify_password

from .conftest import (
    PASSWORD,
    Client,
    Server,
    body,
    serving,
    settings_for,
)
from .helpers import burst, leave_once_stored

NEW_PASSWORD = "a brand new secret"


class HeldChecks:
    """Holds the first ``count`` password checks until ``release()``; later ones run at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.count, self.arrived = count, 0
        self.all_arrived, self.released = asyncio.Event(), asyncio.Event()

        async def held(password: str, stored: str) -> bool:
            self.arrived += 1
            if self.arrived <= self.count:
                if self.arrived == self.count:
                    self.all_arrived.set()
                await self.released.wait()
            return await verify_password(password, stored)

        monkeypatch.setattr(accounts, "verify_password", held)

    def release(self) -> None:
        self.released.set()


async def sign_ins_across(
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    email: str,
    change: Callable[[], Awaitable[None]],
    attempts: int = 4,
) -> list[tuple[int, int]]:
    """Start ``attempts`` sign-ins, make ``change`` while their password checks run, then let
    them finish: each one's (sign-in status, dashboard status with its cookie afterwards)."""
    held = HeldChecks(monkeypatch, attempts)
    clients = [server.client() for _ in range(attempts)]
    sign_ins = [asyncio.ensure_future(client.login(email, PASSWORD)) for client in clients]
    await held.all_arrived.wait()
    await change()
    held.release()
    responses = await asyncio.gather(*sign_ins)
    for response in responses:  # a sign-in refused sends no cookie of its ended session
        if response.code != 200:
            for header in response.headers.get_list("Set-Cookie"):
                name, _, value = header.partition("=")
                assert name != "session" or value.startswith('"";'), header
    statuses = [response.code for response in responses]
    return [
        (status, (await client.get("/api/dashboard")).code)
        for status, client in zip(statuses, clients, strict=True)
    ]


async def admin_of(server: Server, email: str = "root@example.com") -> Client:
    await server.add_user(email, PASSWORD, role="admin")
    admin = server.client()
    assert (await admin.login(email, PASSWORD)).code == 200
    return admin


async def test_sign_ins_in_flight_when_the_account_is_disabled_never_work(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    ann = await server.add_user("ann@example.com", PASSWORD)
    admin = await admin_of(server)

    async def disable() -> None:
        response = await admin.request("PATCH", f"/api/admin/users/{ann.id}", {"disabled": True})
        assert response.code == 200

    outcomes = await sign_ins_across(server, monkeypatch, "ann@example.com", disable)

    assert outcomes == [(401, 401)] * 4
    assert await server.services.sessions.list_user(ann.id) == []


async def test_sign_ins_in_flight_when_the_password_changes_never_work(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    ann = await server.add_user("ann@example.com", PASSWORD)
    owner = server.client()
    assert (await owner.login("ann@example.com", PASSWORD)).code == 200

    async def change_password() -> None:
        payload = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
        assert (await owner.post("/api/password", payload)).code == 200

    # the owner's own check is the fifth: it runs at once, while the four sign-ins are held
    outcomes = await sign_ins_across(server, monkeypatch, "ann@example.com", change_password)

    assert outcomes == [(401, 401)] * 4
    assert len(await server.services.sessions.list_user(ann.id)) == 1
    assert (await owner.get("/api/dashboard")).code == 200  # the one that changed it stays


async def test_sign_ins_in_flight_when_the_role_changes_never_work(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    boss = await server.add_user("boss@example.com", PASSWORD, role="admin")
    admin = await admin_of(server)

    async def demote() -> None:
        response = await admin.request("PATCH", f"/api/admin/users/{boss.id}", {"role": "user"})
        assert response.code == 200

    outcomes = await sign_ins_across(server, monkeypatch, "boss@example.com", demote)

    assert outcomes == [(401, 401)] * 4
    fresh = server.client()
    assert (await fresh.login("boss@example.com", PASSWORD)).code == 200
    assert (await fresh.get("/api/admin/users")).code == 403  # a new sign-in has the new role


async def test_a_rehash_in_flight_never_undoes_a_password_change(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    ann = await server.add_user("ann@example.com", PASSWORD)
    owner = server.client()
    assert (await owner.login("ann@example.com", PASSWORD)).code == 200
    # An imported hash of a lower cost: the next sign-in with it rehashes the (old) password.
    rounds = server.services.settings["users.bcrypt_rounds"]
    await server.services.users.set(
        ann.id, password_hash=bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds)).decode()
    )
    held = HeldChecks(monkeypatch, 1)
    attacker = server.client()
    attack = asyncio.ensure_future(attacker.login("ann@example.com", PASSWORD))
    await held.all_arrived.wait()
    change = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    assert (await owner.post("/api/password", change)).code == 200
    held.release()

    assert (await attack).code == 401
    assert (await server.client().login("ann@example.com", PASSWORD)).code == 401
    assert (await server.client().login("ann@example.com", NEW_PASSWORD)).code == 200


async def test_a_burst_of_wrong_passwords_is_refused_past_the_limit(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    await server.add_user("ann@example.com", PASSWORD)
    limit = server.services.settings["throttle.account_ip_failures"]
    held = HeldChecks(monkeypatch, limit)  # the checks let in are still running at the end

    async def guess(client: Client, n: int):
        return await client.post("/api/login", {"email": "ann@example.com", "password": f"{n}"})

    sending = asyncio.ensure_future(burst(monkeypatch, server, 60, guess))
    await held.all_arrived.wait()
    held.release()
    statuses = await sending

    assert statuses == [401] * limit + [429] * (60 - limit)
    assert held.arrived == limit  # the refused ones cost no bcrypt work
    assert (await server.client().login("ann@example.com", PASSWORD)).code == 429


async def test_a_burst_of_sign_ins_to_many_accounts_is_refused_past_the_address_limit(
    store, monkeypatch: pytest.MonkeyPatch
):
    async with serving(settings_for(store, throttle__ip_failures=5)) as running:
        held = HeldChecks(monkeypatch, 5)

        async def guess(client: Client, n: int):  # one guess at each of 30 accounts
            return await client.login(f"user{n}@example.com", "not it")  # unknown: a check too

        sending = asyncio.ensure_future(burst(monkeypatch, running, 30, guess))
        await held.all_arrived.wait()
        held.release()
        statuses = await sending

        assert statuses == [401] * 5 + [429] * 25
        assert held.arrived == 5  # the refused ones cost no bcrypt work


async def test_a_burst_of_password_change_guesses_is_refused_past_the_limit(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    await server.add_user("ann@example.com", PASSWORD)
    thief = server.client()
    assert (await thief.login("ann@example.com", PASSWORD)).code == 200
    limit = server.services.settings["throttle.account_ip_failures"]
    held = HeldChecks(monkeypatch, limit)

    async def guess(client: Client, n: int):
        change = {"currentPassword": f"guess {n}", "newPassword": "x" * 9}
        return await client.post("/api/password", change)

    sending = asyncio.ensure_future(burst(monkeypatch, server, 30, guess, thief))
    await held.all_arrived.wait()
    held.release()
    statuses = await sending

    assert statuses == [401] * limit + [429] * (30 - limit)
    assert held.arrived == limit
    ann = await server.services.users.by_email("ann@example.com")
    assert await verify_password(PASSWORD, ann.password_hash)  # unchanged


async def test_a_burst_of_registrations_is_refused_past_the_address_limit(
    store, monkeypatch: pytest.MonkeyPatch
):
    async with serving(settings_for(store, throttle__ip_registrations=3)) as running:
        hashing, all_arrived = asyncio.Event(), asyncio.Event()
        hashed: list[str] = []
        real_hash = accounts.hash_password

        async def held(password: str, rounds: int) -> str:
            hashed.append(password)
            if len(hashed) == 3:
                all_arrived.set()
            await hashing.wait()
            return await real_hash(password, rounds)

        monkeypatch.setattr(accounts, "hash_password", held)

        async def register(client: Client, n: int):
            fields = {"email": f"user{n}@example.com", "password": PASSWORD, "name": "U"}
            return await client.post("/api/register", fields)

        sending = asyncio.ensure_future(burst(monkeypatch, running, 20, register))
        await all_arrived.wait()
        hashing.set()
        statuses = await sending

        assert statuses == [201] * 3 + [429] * 17
        assert len(hashed) == 3  # the refused ones cost no bcrypt work
        _, total = await running.services.users.page(0, 100)
        assert total == 3


async def audit_events(server: Server, event: str) -> list[dict]:
    entries, _ = await server.services.audit.page(0, 1000)
    return [entry.public() for entry in entries if entry.event == event]


async def test_a_flood_of_throttled_sign_ins_is_audited_once(server: Server):
    await server.add_user("ann@example.com", PASSWORD)
    wrong = {"email": "ann@example.com", "password": "not the password"}
    statuses = [(await server.client().post("/api/login", wrong)).code for _ in range(40)]

    assert statuses.count(429) == 30
    assert len(await audit_events(server, "signin_failed")) == 10
    assert len(await audit_events(server, "signin_throttled")) == 1


async def test_password_change_guesses_are_throttled_and_audited(server: Server):
    await server.add_user("ann@example.com", PASSWORD)
    thief = server.client()
    assert (await thief.login("ann@example.com", PASSWORD)).code == 200
    guesses = [
        await thief.post("/api/password", {"currentPassword": f"guess {n}", "newPassword": "x" * 9})
        for n in range(15)
    ]

    assert [response.code for response in guesses] == [401] * 10 + [429] * 5
    assert int(guesses[-1].headers["Retry-After"]) > 0
    failed = await audit_events(server, "password_check_failed")
    assert len(failed) == 10 and failed[0]["email"] == "ann@example.com"
    assert len(await audit_events(server, "password_check_throttled")) == 1
    right = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    assert (await thief.post("/api/password", right)).code == 429  # the right one waits too


async def test_registrations_are_limited_per_address(store):
    async with serving(settings_for(store, throttle__ip_registrations=3)) as running:
        client = running.client()
        statuses = []
        for n in range(5):
            payload = {"email": f"user{n}@example.com", "password": PASSWORD, "name": "U"}
            statuses.append((await client.post("/api/register", payload)).code)
        assert statuses == [201, 201, 201, 429, 429]
        _, total = await running.services.users.page(0, 10)
        assert total == 3
        assert len(await audit_events(running, "registration_throttled")) == 1


@pytest.mark.user_stores
async def test_registering_a_taken_email_spends_no_bcrypt_work(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    await server.add_user("ann@example.com", PASSWORD)
    hashed: list[str] = []
    real_hash = accounts.hash_password

    async def counted(password: str, rounds: int) -> str:
        hashed.append(password)
        return await real_hash(password, rounds)

    monkeypatch.setattr(accounts, "hash_password", counted)
    payload = {"email": "ANN@example.com", "password": "another password", "name": "Ann"}
    response = await server.client().post("/api/register", payload)

    assert response.code == 409 and body(response) == {"error": "Email already registered"}
    assert hashed == []


@pytest.mark.user_stores
async def test_the_last_admin_cannot_demote_or_disable_themself(server: Server):
    admin = await admin_of(server)
    me = body(await admin.get("/api/profile"))["id"]

    for change in ({"role": "user"}, {"disabled": True}):
        response = await admin.request("PATCH", f"/api/admin/users/{me}", change)
        assert response.code == 409
        assert body(response) == {"error": "The last admin cannot be demoted or disabled"}
    assert (await admin.get("/api/admin/users")).code == 200  # still an admin, still signed in


async def test_two_admins_demoting_each_other_at_once_leave_an_admin(server: Server):
    first, second = await admin_of(server), await admin_of(server, "two@example.com")
    first_id = body(await first.get("/api/profile"))["id"]
    second_id = body(await second.get("/api/profile"))["id"]

    responses = await asyncio.gather(
        first.request("PATCH", f"/api/admin/users/{second_id}", {"role": "user"}),
        second.request("PATCH", f"/api/admin/users/{first_id}", {"role": "user"}),
    )

    assert {response.code for response in responses} <= {200, 401, 409}
    assert await server.services.users.count_admins() >= 1


@pytest.mark.store_independent  # refused before any store is asked
@pytest.mark.parametrize("name", ["Ann\x1b[2J", "Ann\rroot", "\u202eninA", "Ann\x00"])
async def test_names_with_control_characters_are_refused(server: Server, name: str):
    payload = {"email": "ann@example.com", "password": PASSWORD, "name": name}
    response = await server.client().post("/api/register", payload)

    assert response.code == 400
    assert body(response) == {"error": "Name must not contain control characters"}
    assert await server.services.users.by_email("ann@example.com") is None


async def test_a_password_change_in_flight_when_the_account_is_disabled_leaves_no_session(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    ann = await server.add_user("ann@example.com", PASSWORD, role="admin")
    admin = await admin_of(server)
    victim = server.client()
    assert (await victim.login("ann@example.com", PASSWORD)).code == 200
    held = HeldChecks(monkeypatch, 1)
    change = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    changing = asyncio.ensure_future(victim.post("/api/password", change))
    await held.all_arrived.wait()
    response = await admin.request(
        "PATCH", f"/api/admin/users/{ann.id}", {"role": "user", "disabled": True}
    )
    assert response.code == 200
    held.release()

    assert (await changing).code in (401, 409)
    assert (await victim.get("/api/dashboard")).code == 401
    stored = await server.services.users.get(ann.id)
    assert stored.disabled and stored.role == "user"
    assert await server.services.sessions.list_user(ann.id) == []
    again = {"role": "admin", "disabled": False}
    assert (await victim.request("PATCH", f"/api/admin/users/{ann.id}", again)).code == 401


async def test_a_session_revoked_while_it_regenerates_stays_ended(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    ann = await server.add_user("ann@example.com", PASSWORD)
    victim = server.client()
    assert (await victim.login("ann@example.com", PASSWORD)).code == 200
    sessions = server.services.sessions
    real_write = sessions.write
    revoked = asyncio.Event()

    async def revoke_first(session, plan):  # an admin's revocation lands just before the write
        await sessions.revoke_user(ann.id)
        revoked.set()
        return await real_write(session, plan)

    monkeypatch.setattr(sessions, "write", revoke_first)
    change = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    await victim.post("/api/password", change)
    monkeypatch.setattr(sessions, "write", real_write)

    assert revoked.is_set()
    assert (await victim.get("/api/dashboard")).code == 401
    assert await sessions.list_user(ann.id) == []


async def test_two_password_changes_at_once_leave_one_password_and_no_other_session(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    await server.add_user("ann@example.com", PASSWORD)
    first, second = server.client(), server.client()
    for client in (first, second):
        assert (await client.login("ann@example.com", PASSWORD)).code == 200
    held = HeldChecks(monkeypatch, 2)
    changes = [
        asyncio.ensure_future(
            client.post("/api/password", {"currentPassword": PASSWORD, "newPassword": new})
        )
        for client, new in ((first, "first new secret"), (second, "second new secret"))
    ]
    await held.all_arrived.wait()
    held.release()
    statuses = sorted(response.code for response in await asyncio.gather(*changes))

    assert statuses == [200, 409]
    working = [(await client.get("/api/dashboard")).code for client in (first, second)]
    assert sorted(working) == [200, 401]
    signed_in = [
        (await server.client().login("ann@example.com", new)).code
        for new in ("first new secret", "second new secret")
    ]
    assert sorted(signed_in) == [200, 401]


async def test_repeating_revoke_others_writes_no_audit_entries(server: Server):
    await server.add_user("ann@example.com", PASSWORD)
    user = server.client()
    assert (await user.login("ann@example.com", PASSWORD)).code == 200
    await server.client().login("ann@example.com", PASSWORD)
    for _ in range(20):
        assert (await user.post("/api/sessions/revoke-others")).code == 200

    assert [entry["detail"] for entry in await audit_events(server, "sessions_revoked")] == [
        {"count": 1}
    ]


async def test_a_password_change_whose_client_goes_away_once_it_is_stored_still_ends_the_rest(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    ann = await server.add_user("ann@example.com", PASSWORD)
    other = server.client()  # a session elsewhere (say, an attacker's)
    assert (await other.login("ann@example.com", PASSWORD)).code == 200
    changer = server.client()
    assert (await changer.login("ann@example.com", PASSWORD)).code == 200
    change = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    await leave_once_stored(server, monkeypatch, "/api/password", change, changer)

    assert (await other.get("/api/dashboard")).code == 401  # the other session ended
    stored_hash = (await server.services.users.get(ann.id)).password_hash
    assert await verify_password(NEW_PASSWORD, stored_hash)  # the change itself stands
    assert len(await server.services.sessions.list_user(ann.id)) == 1  # the changer's own


async def test_a_sign_in_whose_account_changed_once_its_session_was_made_clears_the_cookie(
    server: Server, monkeypatch: pytest.MonkeyPatch
):
    ann = await server.add_user("ann@example.com", PASSWORD)
    users = server.services.accounts.users
    real_get = users.get

    async def disabled_meanwhile(user_id: str):  # the re-check after the session was stored
        user = await real_get(user_id)
        return dataclasses.replace(user, disabled=True) if user else user

    monkeypatch.setattr(users, "get", disabled_meanwhile)
    response = await server.client().login("ann@example.com", PASSWORD)
    assert response.code == 401
    cookies = [c for c in response.headers.get_list("Set-Cookie") if c.startswith("session=")]
    assert len(cookies) == 1 and cookies[0].startswith('session="";'), cookies  # cleared
    assert await server.services.sessions.list_user(ann.id) == []
