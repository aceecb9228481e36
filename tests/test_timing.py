"""A failed sign-in does the same work for an unknown email as for a wrong password.

If an unknown email answered without a bcrypt check, it would answer in a few milliseconds where
a wrong password takes one bcrypt check: anyone could tell which emails have accounts by timing
``POST /api/login``. ``Accounts.authenticate`` therefore checks the password of an unknown email
against a dummy hash of the configured cost. These tests count the bcrypt checks the server runs
(the function its bcrypt thread pool calls) and read the hash each check compares against, so they
cannot be flaky on a loaded machine: timing itself is measured by ``make bench``, not here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

from tornado_auth.users import passwords
from tornado_auth.users.passwords import cost

from .conftest import Server, Store, require_service, settings_for, start_server, stop_server

ROUNDS = 10  # not the tests' usual 4: a check at any other cost than the configured one shows
KNOWN = "known.user@example.com"
UNKNOWN = "other.user@example.com"  # as long as KNOWN: no difference in the bytes sent
PASSWORD = "the right password"
WRONG = "the wrong password"
assert len(KNOWN) == len(UNKNOWN) and len(PASSWORD) == len(WRONG)


@pytest.fixture(params=["sqlite", "redis"])
async def slow_hash_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    """bcrypt at cost 10; sign-in throttling out of the way of the failed sign-ins."""
    if request.param == "redis":  # Redis sessions with MongoDB users: the production pairing
        require_service("redis")
        require_service("mongodb")
    store = Store(request.param, tmp_path)
    settings = settings_for(
        store,
        users__bcrypt_rounds=ROUNDS,
        throttle__account_ip_failures=10**9,
        throttle__ip_failures=10**9,
    )
    server = await start_server(settings)
    try:
        await server.add_user(KNOWN, PASSWORD)
        yield server
    finally:
        await stop_server(server)
        await store.cleanup()


class CountedHashing:
    """Counts what the bcrypt thread pool runs: new hashes, and checks with the hash each one
    compared against."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hashes = 0
        self.checked: list[str] = []  # the stored hash of each check, in order
        monkeypatch.setattr(passwords, "_hash", self._counting_hash(passwords._hash))
        monkeypatch.setattr(passwords, "_verify", self._counting_check(passwords._verify))

    def _counting_hash(self, real: Callable[..., str]) -> Callable[..., str]:
        def run(*args: Any) -> str:
            self.hashes += 1
            return real(*args)

        return run

    def _counting_check(self, real: Callable[[str, str], bool]) -> Callable[[str, str], bool]:
        def run(password: str, stored: str) -> bool:
            self.checked.append(stored)
            return real(password, stored)

        return run


PER_RESPONSE = ("date", "x-request-id")  # differ on every response, whoever asks


def without_date(response: HTTPResponse) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.get_all() if k.lower() not in PER_RESPONSE)


async def test_unknown_email_and_wrong_password_each_cost_one_check_at_the_same_cost(
    slow_hash_server, monkeypatch
):
    client = slow_hash_server.client()
    known_hash = (await slow_hash_server.services.users.by_email(KNOWN)).password_hash
    hashing = CountedHashing(monkeypatch)
    kinds = {
        "unknown email": {"email": UNKNOWN, "password": WRONG},
        "wrong password": {"email": KNOWN, "password": WRONG},
    }
    responses: dict[str, list[HTTPResponse]] = {name: [] for name in kinds}
    for round_ in range(3):
        for name in list(kinds) if round_ % 2 == 0 else list(reversed(kinds)):
            before = len(hashing.checked)
            responses[name].append(await client.post("/api/login", kinds[name]))
            checked = hashing.checked[before:]
            assert len(checked) == 1, f"{name}: {len(checked)} bcrypt checks"
            assert cost(checked[0]) == ROUNDS, f"{name}: checked against cost {cost(checked[0])}"
            if name == "wrong password":
                assert checked == [known_hash]
            else:  # the dummy hash, never a user's
                assert checked != [known_hash]
    before = len(hashing.checked)
    refused = await client.post("/api/login", {"email": KNOWN})  # no password: refused at once
    assert refused.code == 400
    assert len(hashing.checked) == before  # the counting sees a request that skips bcrypt
    assert hashing.hashes == 0  # no sign-in pays for making a hash

    # Nothing else tells them apart either: every answer is the same 401, byte for byte.
    first = responses["unknown email"][0]
    assert first.code == 401
    assert first.body == b'{"error": "Invalid credentials"}'
    for response in responses["unknown email"] + responses["wrong password"]:
        assert response.code == 401
        assert response.body == first.body
        assert without_date(response) == without_date(first)


async def test_even_the_first_unknown_email_after_start_costs_exactly_one_bcrypt_check(
    slow_hash_server, monkeypatch
):
    hashing = CountedHashing(monkeypatch)
    client = slow_hash_server.client()
    response = await client.post("/api/login", {"email": UNKNOWN, "password": WRONG})
    assert response.code == 401
    assert (hashing.hashes, len(hashing.checked)) == (0, 1)
