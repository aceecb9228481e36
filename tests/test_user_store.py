"""User stores (SQLite, and a MongoDB wire-protocol server: mongod when present, else FerretDB,
which has no TTL index, no replica set for ``w: majority`` and runs one command at a time),
password hashing, and Accounts.authenticate."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest

from tornado_auth import accounts as accounts_module
from tornado_auth.accounts import AccountDisabled, Accounts, Origin
from tornado_auth.audit import Audit
from tornado_auth.live import LiveHub
from tornado_auth.sessions import Lifetime, Session, SessionManager
from tornado_auth.sessions.memory import memory_backend
from tornado_auth.throttle import Limits, LoginThrottle
from tornado_auth.users import EmailTaken, User, UserFilter, UserStore, new_user_id, store_for_url
from tornado_auth.users.passwords import (
    hash_password,
    needs_rehash,
    password_problem,
    verify_password,
)

from .conftest import USER_STORES, Store, require_service

ROUNDS = 4
SCHEME = "bcrypt-sha256$"


@pytest.fixture(params=USER_STORES)
async def users(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UserStore]:
    """A started user store: SQLite under tmp_path, or a unique MongoDB database dropped after."""
    if request.param == "mongodb":
        require_service("mongodb")
    place = Store(request.param, tmp_path)
    store = store_for_url(place.user_url())
    await store.start()
    yield store
    await store.close()
    await place.cleanup()


def make_user(email: str = "ann@example.com", created_at: float = 1_700_000_000.0, **fields):
    values = {
        "id": new_user_id(),
        "email": email,
        "name": "Ann",
        "role": "user",
        "password_hash": SCHEME + "$2b$04$" + "x" * 53,
        "created_at": created_at,
    }
    values.update(fields)
    return User(**values)


def cost(stored_hash: str) -> int:
    return int(stored_hash.removeprefix(SCHEME).split("$")[2])


# The store conformance suite: every store behaves the same.


async def test_add_then_get_and_by_email_round_trip_every_field(users: UserStore):
    user = make_user(
        email="zoë@example.com",
        name="Zoë Ünicode-Name",
        role="admin",
        password_hash=SCHEME + "$2b$04$" + "a" * 53,
        created_at=1_700_000_000.123456,
        last_login_at=1_700_000_123.654321,
        disabled=True,
    )
    await users.add(user)

    for loaded in (await users.get(user.id), await users.by_email(user.email)):
        assert loaded == user
        assert dataclasses.asdict(loaded) == dataclasses.asdict(user)
        assert loaded.disabled is True
        assert isinstance(loaded.created_at, float)


async def test_defaults_round_trip_as_none_and_false(users: UserStore):
    user = make_user()
    await users.add(user)

    loaded = await users.get(user.id)
    assert loaded == user
    assert loaded.last_login_at is None
    assert loaded.disabled is False


async def test_unknown_id_or_email_finds_nobody(users: UserStore):
    await users.add(make_user())

    assert await users.get(new_user_id()) is None
    assert await users.by_email("nobody@example.com") is None
    assert await users.by_email("ann\x00@example.com") is None  # a NUL: FerretDB refuses it


async def test_duplicate_email_raises_email_taken(users: UserStore):
    first = make_user(name="First")
    await users.add(first)

    with pytest.raises(EmailTaken):
        await users.add(make_user(name="Second"))

    assert await users.by_email(first.email) == first
    assert (await users.page(0, 10))[1] == 1


async def test_changing_email_to_one_in_use_raises_email_taken(users: UserStore):
    ann = make_user("ann@example.com")
    bob = make_user("bob@example.com", created_at=ann.created_at + 1)
    await users.add(ann)
    await users.add(bob)

    with pytest.raises(EmailTaken):
        await users.set(bob.id, email=ann.email)

    assert await users.get(bob.id) == bob


async def test_page_orders_by_creation_and_counts_every_user(users: UserStore):
    created = [1_700_000_000.0 + step for step in (3, 0, 4, 1, 2)]
    for index, when in enumerate(created):
        await users.add(make_user(f"user{index}@example.com", created_at=when))
    by_creation = sorted(created)

    first, total = await users.page(0, 2)
    second, _ = await users.page(2, 2)
    last, _ = await users.page(4, 2)
    beyond, beyond_total = await users.page(10, 2)

    assert total == beyond_total == 5
    assert [u.created_at for u in first + second + last] == by_creation
    assert (len(first), len(second), len(last)) == (2, 2, 1)
    assert beyond == []


async def test_page_filters_by_search_role_and_disabled_and_counts_only_matches(users: UserStore):
    people = [
        ("ann@example.com", "Ann Lee", "admin", False),
        ("bob@example.com", "Bob Stone", "user", False),
        ("carol@work.example", "Carol Ann", "user", True),
        ("dave@example.com", "Dave", "user", False),
        ("percent%_@example.com", "Odd", "user", False),
    ]
    for index, (email, name, role, disabled) in enumerate(people):
        user = make_user(email, name=name, role=role, disabled=disabled, created_at=1e9 + index)
        await users.add(user)

    async def emails(where: UserFilter, offset: int = 0, limit: int = 10) -> tuple[list, int]:
        found, total = await users.page(offset, limit, where)
        return [u.email for u in found], total

    assert await emails(UserFilter(search="ANN")) == (
        ["ann@example.com", "carol@work.example"],
        2,
    )  # the email of one, the name of the other, whatever the case
    assert await emails(UserFilter(search="work.")) == (["carol@work.example"], 1)
    assert await emails(UserFilter(search="%_")) == (["percent%_@example.com"], 1)
    assert await emails(UserFilter(search=".*")) == ([], 0)  # text, not a pattern
    assert await emails(UserFilter(role="admin")) == (["ann@example.com"], 1)
    assert await emails(UserFilter(disabled=True)) == (["carol@work.example"], 1)
    assert await emails(UserFilter(role="user", disabled=False), 1, 1) == (["dave@example.com"], 3)
    assert await emails(UserFilter(search="ann", disabled=False)) == (["ann@example.com"], 1)
    assert (await users.page(0, 10, UserFilter()))[1] == 5


async def test_page_breaks_creation_ties_by_id_so_pages_never_overlap(users: UserStore):
    ids = ["c" * 24, "b" * 24, "a" * 24, "d" * 24]
    for user_id in ids:
        await users.add(make_user(f"{user_id[0]}@example.com", id=user_id))

    pages = [(await users.page(offset, 1))[0] for offset in range(len(ids))]

    assert [page[0].id for page in pages] == sorted(ids)


async def test_set_changes_fields_and_returns_the_updated_user(users: UserStore):
    user = make_user()
    await users.add(user)

    updated = await users.set(user.id, role="admin", disabled=True, last_login_at=1_800_000_000.5)

    expected = dataclasses.replace(user, role="admin", disabled=True, last_login_at=1_800_000_000.5)
    assert updated == expected
    assert await users.get(user.id) == expected


async def test_set_on_unknown_id_returns_none_and_creates_nothing(users: UserStore):
    assert await users.set(new_user_id(), role="admin") is None
    assert await users.page(0, 10) == ([], 0)


@pytest.mark.parametrize("field", ["bogus", "id", "_id", "password"])
async def test_set_rejects_unknown_field_names(users: UserStore, field: str):
    user = make_user()
    await users.add(user)

    with pytest.raises(ValueError, match="unknown user fields"):
        await users.set(user.id, **{field: "x"})

    assert await users.get(user.id) == user


async def test_operator_shaped_email_or_id_never_matches_a_user(users: UserStore):
    """A dict is never passed through as a query: it is a string that matches no one."""
    await users.add(make_user())

    assert await users.by_email({"$ne": None}) is None
    assert await users.by_email({"$gt": ""}) is None
    assert await users.get({"$ne": None}) is None


# Passwords: bcrypt over a SHA-256 pre-hash.


async def test_hash_then_verify_round_trip():
    stored = await hash_password("correct horse battery", ROUNDS)

    assert stored.startswith(SCHEME + "$2b$04$")
    assert "correct horse battery" not in stored
    assert await verify_password("correct horse battery", stored)
    assert not await verify_password("correct horse battery!", stored)
    assert not await verify_password("", stored)


async def test_the_same_password_hashes_to_a_new_salt_each_time():
    first = await hash_password("correct horse battery", ROUNDS)
    second = await hash_password("correct horse battery", ROUNDS)

    assert first != second
    assert await verify_password("correct horse battery", second)


@pytest.mark.parametrize("prefix", ["x" * 72, "é" * 36], ids=["ascii", "two-byte"])
async def test_passwords_differing_only_after_byte_72_do_not_verify(prefix: str):
    first = prefix + "a" * (100 - len(prefix))
    second = prefix + "b" * (100 - len(prefix))
    assert len(first.encode()) > 72 and first != second

    assert not await verify_password(second, await hash_password(first, ROUNDS))
    assert await verify_password(first, await hash_password(first, ROUNDS))


async def test_needs_rehash_only_when_the_cost_differs():
    stored = await hash_password("correct horse battery", ROUNDS)

    assert cost(stored) == ROUNDS
    assert not needs_rehash(stored, ROUNDS)
    assert needs_rehash(stored, ROUNDS + 1)


async def test_legacy_plain_bcrypt_hash_verifies_and_needs_rehash():
    legacy = bcrypt.hashpw(b"correct horse battery", bcrypt.gensalt(ROUNDS)).decode()
    assert legacy.startswith("$2b$04$")

    assert await verify_password("correct horse battery", legacy)
    assert not await verify_password("wrong horse battery", legacy)
    assert needs_rehash(legacy, ROUNDS)


async def test_verify_rejects_a_malformed_stored_hash():
    for stored in ("", "plain text", SCHEME + "garbage", "$2b$garbage"):
        assert not await verify_password("correct horse battery", stored)


@pytest.mark.parametrize(
    ("password", "acceptable"),
    [
        ("x" * 7, False),
        ("x" * 8, True),
        ("x" * 1024, True),
        ("x" * 1025, False),
        ("", False),
        (" " * 8, False),
        ("\t \n \r\n  ", False),
        ("  x     ", True),
        (None, False),
        (b"x" * 12, False),
        (12345678, False),
    ],
    ids=[
        *("7", "8", "1024", "1025", "empty", "spaces", "whitespace", "spaced"),
        *("none", "bytes", "int"),
    ],
)
def test_password_problem_bounds_and_type(password: object, acceptable: bool):
    problem = password_problem(password)

    if acceptable:
        assert problem is None
    else:
        assert isinstance(problem, str) and problem.startswith("Password must")


# Accounts.authenticate


def accounts_for(users: UserStore, rounds: int) -> Accounts:
    lifetime = Lifetime(ttl=3600, remember_me_ttl=86400, absolute_ttl=86400, touch_interval=60)
    backend = memory_backend()  # the session side only: these tests are about users
    sessions = SessionManager(backend.store, backend.events, lifetime)
    throttle = LoginThrottle(backend.counters, Limits(10, 100, 600))
    live = LiveHub(sessions, 0, 0)
    return Accounts(users, sessions, throttle, Audit(users, b"secret"), live, rounds)


async def sign_in(accounts: Accounts, email: str, password: str) -> User | None:
    async def start(user: User) -> str:
        session = Session()
        session.login(user.id, {"email": user.email}, False, 3600)
        await accounts.sessions.commit(session)
        return session.key

    return await accounts.sign_in(email, password, Origin(), start)


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stored hashes Accounts checked passwords against, in order."""
    calls: list[str] = []

    async def spy(password: str, stored: str) -> bool:
        calls.append(stored)
        return await verify_password(password, stored)

    monkeypatch.setattr(accounts_module, "verify_password", spy)
    return calls


async def test_login_rehashes_when_the_configured_rounds_changed(users: UserStore):
    user = await accounts_for(users, ROUNDS).register(
        "ann@example.com", "Ann", "password123", Origin()
    )
    assert cost(user.password_hash) == ROUNDS

    signed_in = await sign_in(accounts_for(users, ROUNDS + 1), "ann@example.com", "password123")

    stored = await users.get(user.id)
    assert signed_in is not None and signed_in.id == user.id
    assert stored.password_hash.startswith(SCHEME + "$2b$05$")
    assert signed_in.password_hash == stored.password_hash
    assert await verify_password("password123", stored.password_hash)
    assert stored.last_login_at is not None


async def test_login_keeps_the_hash_when_the_rounds_are_unchanged(users: UserStore):
    accounts = accounts_for(users, ROUNDS)
    user = await accounts.register("ann@example.com", "Ann", "password123", Origin())

    assert await sign_in(accounts, "ann@example.com", "password123") is not None

    assert (await users.get(user.id)).password_hash == user.password_hash


async def test_login_upgrades_a_legacy_bcrypt_hash(users: UserStore):
    legacy = bcrypt.hashpw(b"password123", bcrypt.gensalt(ROUNDS)).decode()
    user = make_user(password_hash=legacy)
    await users.add(user)

    assert await sign_in(accounts_for(users, ROUNDS), user.email, "password123") is not None

    stored = (await users.get(user.id)).password_hash
    assert stored.startswith(SCHEME) and cost(stored) == ROUNDS
    assert await verify_password("password123", stored)


async def test_login_normalises_the_email(users: UserStore):
    accounts = accounts_for(users, ROUNDS)
    user = await accounts.register("ann@example.com", "Ann", "password123", Origin())

    signed_in = await sign_in(accounts, "  Ann@Example.COM ", "password123")

    assert signed_in is not None and signed_in.id == user.id


async def test_wrong_password_returns_none_and_records_no_login(users: UserStore):
    accounts = accounts_for(users, ROUNDS)
    user = await accounts.register("ann@example.com", "Ann", "password123", Origin())

    assert await sign_in(accounts, "ann@example.com", "password124") is None

    assert (await users.get(user.id)).last_login_at is None


async def test_disabled_user_cannot_log_in_even_with_the_right_password(users: UserStore):
    accounts = accounts_for(users, ROUNDS)
    user = await accounts.register("ann@example.com", "Ann", "password123", Origin())
    await accounts.change_user(user, None, True, Origin())

    assert await sign_in(accounts, "ann@example.com", "wrong password") is None
    with pytest.raises(AccountDisabled):  # said only after the right password
        await sign_in(accounts, "ann@example.com", "password123")

    assert (await users.get(user.id)).last_login_at is None
    assert await accounts.sessions.list_user(user.id) == []


async def test_unknown_email_still_costs_one_bcrypt_check_at_the_configured_cost(
    users: UserStore, verify_calls: list[str]
):
    accounts = accounts_for(users, ROUNDS + 1)
    await accounts.register("ann@example.com", "Ann", "password123", Origin())

    assert await sign_in(accounts, "nobody@example.com", "password123") is None
    assert len(verify_calls) == 1
    assert verify_calls[0].startswith(SCHEME) and cost(verify_calls[0]) == ROUNDS + 1

    assert await sign_in(accounts, "ann@example.com", "wrong-password") is None
    assert len(verify_calls) == 2


async def test_bcrypt_runs_off_the_event_loop_at_lower_priority():
    import os
    import threading

    from tornado_auth.users import passwords

    await passwords.hash_password("password123", 4)
    loop_thread = threading.get_native_id()

    def where() -> tuple[int, int]:
        native = threading.get_native_id()
        return native, os.getpriority(os.PRIO_PROCESS, native)

    thread, niceness = await asyncio.get_running_loop().run_in_executor(passwords.pool(), where)
    assert thread != loop_thread
    expected = os.getpriority(os.PRIO_PROCESS, loop_thread) + passwords.BCRYPT_NICENESS
    assert niceness == min(expected, 19)


async def test_a_hash_of_a_lower_cost_takes_as_long_as_an_unknown_email(
    users: UserStore, verify_calls: list[str]
):
    """A stored hash cheaper than the configured cost is followed by a check at that cost, so
    the time taken tells neither a known account nor its hash's age."""
    await accounts_for(users, ROUNDS).register("ann@example.com", "Ann", "password123", Origin())
    accounts = accounts_for(users, ROUNDS + 1)

    assert await sign_in(accounts, "ann@example.com", "wrong-password") is None

    assert [cost(stored) for stored in verify_calls] == [ROUNDS, ROUNDS + 1]
