"""A failed sign-in takes as long for an unknown email as for a wrong password.

If an unknown email answered without a bcrypt check, it would answer in a few milliseconds where
a wrong password takes one bcrypt check (about 60 ms at cost 10 here): anyone could tell which
emails have accounts by timing ``POST /api/login``. ``Accounts.authenticate`` therefore checks the
password of an unknown email against a dummy hash. These tests time both kinds of failure.

Why the numbers can be trusted, on a loaded two-core machine too:

- The two kinds of request differ only in the branch the server takes: same route, same client,
  same body shape, emails of the same length, the same wrong password, one request at a time.
  Sessions and users live in stores set up for the test alone.
- bcrypt dominates: ``users.bcrypt_rounds`` is 10, and the test measures one bcrypt check on this
  machine (the fastest of five, as load only slows it down). Each kind of failure must take at
  least half of that longer than a request refused before any hashing (a body without a password,
  same route): proof that bcrypt ran for the unknown email too. Without the dummy check the two
  medians would differ by more than 90%, so the bound below catches the leak with a wide margin.
- Warm-up requests come first, so that one-time costs are not measured: pools connect, caches
  fill. (The dummy hash is made at start, so no unknown email pays for it: the test below.)
- The kinds are interleaved, and their order swaps every round, so drift in CPU speed or load
  from other processes hits both alike; medians of 40 samples each ignore the outliers that
  scheduling causes. The 15% bound is about 9 ms here: wide enough for that noise (the medians
  came within 1% of each other on an idle machine, within 5% with both cores kept busy by other
  processes), and far below the difference that a skipped bcrypt check makes.

What this does not claim: differences well below the noise (a store lookup that misses against
one that hits, a fraction of a millisecond) are not measured here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

from tornado_auth.users import passwords
from tornado_auth.users.passwords import hash_password, verify_password

from .conftest import (
    Client,
    Server,
    Store,
    require_service,
    settings_for,
    start_server,
    stop_server,
)

ROUNDS = 10
WARM_UP = 5
SAMPLES = 40
BOUND = 0.15
KNOWN = "known.user@example.com"
UNKNOWN = "other.user@example.com"  # as long as KNOWN: no difference in the bytes sent
PASSWORD = "the right password"
WRONG = "the wrong password"
assert len(KNOWN) == len(UNKNOWN) and len(PASSWORD) == len(WRONG)


@pytest.fixture(params=["sqlite", "redis"])
async def slow_hash_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    """bcrypt at cost 10; sign-in throttling out of the way of 100 failed sign-ins."""
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


async def timed(client: Client, body: dict[str, str]) -> tuple[float, HTTPResponse]:
    start = time.perf_counter()
    response = await client.post("/api/login", body)
    return time.perf_counter() - start, response


async def one_bcrypt_check() -> float:
    """One bcrypt check at ROUNDS on this machine, run as the server runs it: the fastest of five,
    since load can only slow a check down."""
    stored = await hash_password(PASSWORD, ROUNDS)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        assert not await verify_password(WRONG, stored)
        times.append(time.perf_counter() - start)
    return min(times)


def without_date(response: HTTPResponse) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.get_all() if k.lower() != "date")


async def test_unknown_email_and_wrong_password_take_indistinguishable_time(slow_hash_server):
    client = slow_hash_server.client()
    kinds = {
        "unknown email": {"email": UNKNOWN, "password": WRONG},
        "wrong password": {"email": KNOWN, "password": WRONG},
    }
    no_hashing = {"email": KNOWN}  # refused with a 400 before any bcrypt check
    for _ in range(WARM_UP):
        for body in [*kinds.values(), no_hashing]:
            await timed(client, body)

    times: dict[str, list[float]] = {name: [] for name in [*kinds, "no hashing"]}
    responses: dict[str, list[HTTPResponse]] = {name: [] for name in kinds}
    for round_ in range(SAMPLES):
        order = list(kinds) if round_ % 2 == 0 else list(reversed(kinds))
        for name in order:
            elapsed, response = await timed(client, kinds[name])
            times[name].append(elapsed)
            responses[name].append(response)
        elapsed, response = await timed(client, no_hashing)
        assert response.code == 400
        times["no hashing"].append(elapsed)
    bcrypt_cost = await one_bcrypt_check()

    median = {name: statistics.median(samples) for name, samples in times.items()}
    report = ", ".join(f"{name} {1000 * m:.1f} ms" for name, m in median.items())
    report += f"; one bcrypt check {1000 * bcrypt_cost:.1f} ms"
    for name in kinds:
        assert median[name] - median["no hashing"] >= 0.5 * bcrypt_cost, f"no bcrypt: {report}"
    unknown, wrong = median["unknown email"], median["wrong password"]
    assert abs(unknown - wrong) / max(unknown, wrong) <= BOUND, report

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
    calls = {"hash": 0, "check": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            calls[name] += 1
            return real(*args)

        return run

    # The functions the bcrypt thread pool runs: counted, not timed, so this cannot be flaky.
    monkeypatch.setattr(passwords, "_hash", counting("hash", passwords._hash))
    monkeypatch.setattr(passwords, "_verify", counting("check", passwords._verify))
    client = slow_hash_server.client()
    response = await client.post("/api/login", {"email": UNKNOWN, "password": WRONG})
    assert response.code == 401
    assert calls == {"hash": 0, "check": 1}
