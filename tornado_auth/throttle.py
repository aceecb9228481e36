"""Throttles, counted in the session store: password checks by account and IP and by IP, and
registrations by IP.

A password check reserves its place in the counts before any bcrypt work, and counts as a failure
until it succeeds, so a burst of concurrent guesses is refused past the limit, not all checked.
Only failures count, and only from the address that makes them, so an attacker elsewhere cannot
lock the real user out: there is no global per-account lockout.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .sessions import Counters


@dataclass(frozen=True, slots=True)
class Limits:
    account_ip_failures: int
    ip_failures: int
    window: float
    ip_registrations: int = 0  # 0: registrations are not limited
    registration_window: float = 3600.0


class Throttled(Exception):
    """Refused until ``retry_after`` seconds have passed; ``first`` for the first refusal of the
    window (the one worth an audit entry: a flood of refusals is recorded once)."""

    def __init__(self, retry_after: int, first: bool) -> None:
        super().__init__(f"throttled for {retry_after}s")
        self.retry_after = retry_after
        self.first = first


def _name(kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return f"login:{kind}:{digest}"


class LoginThrottle:
    def __init__(
        self, counters: Counters, limits: Limits, clock: Callable[[], float] = time.time
    ) -> None:
        self.counters = counters
        self.limits = limits
        self.clock = clock

    def _names(self, email: str, ip: str) -> tuple[str, str]:
        return _name("account-ip", email.strip().lower(), ip), _name("ip", ip)

    async def _count(self, name: str, limit: int, window: float) -> None:
        """Count one event under ``name``; Throttled past ``limit`` (refusals count on, so only
        the first of a window is ``first``)."""
        now = self.clock()
        count, ends = await self.counters.hit(name, window, now)
        if count > limit:
            raise Throttled(max(1, math.ceil(ends - now)), first=count == limit + 1)

    async def reserve(self, email: str, ip: str) -> None:
        """Count a password check as failed before it runs; Throttled when over a limit."""
        account_ip, by_ip = self._names(email, ip)
        window = self.limits.window
        await self._count(by_ip, self.limits.ip_failures, window)
        try:
            await self._count(account_ip, self.limits.account_ip_failures, window)
        except Throttled:
            await self.counters.release(by_ip, self.clock())
            raise

    async def succeeded(self, email: str, ip: str) -> None:
        """The reserved check passed: the account's failures from this IP are forgiven."""
        account_ip, by_ip = self._names(email, ip)
        await self.counters.clear(account_ip)
        await self.counters.release(by_ip, self.clock())

    async def second_step(self, user_id: str) -> None:
        """Count a second-step check (a code, a recovery code, a passkey) of the user's, from any
        address; Throttled past ``account_ip_failures`` a window. A right password does not
        forgive these: whoever holds it gets as many code guesses as anyone else."""
        await self._count(_name("second-step", user_id), self.limits.account_ip_failures,
                          self.limits.window)  # fmt: skip

    async def second_step_succeeded(self, user_id: str) -> None:
        await self.counters.clear(_name("second-step", user_id))

    async def register(self, ip: str) -> None:
        """Count one registration from ``ip``; Throttled when over the limit."""
        if self.limits.ip_registrations > 0:
            name = _name("register-ip", ip)
            limit, window = self.limits.ip_registrations, self.limits.registration_window
            await self._count(name, limit, window)
