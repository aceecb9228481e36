"""Sign-in throttling: failures counted per account and IP, and per IP, in the session store.

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


@dataclass(frozen=True)
class Limits:
    account_ip_failures: int
    ip_failures: int
    window: float


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

    async def retry_after(self, email: str, ip: str) -> int | None:
        """Seconds until this account may be tried again from this IP, or None if it may now."""
        now = self.clock()
        account_ip, by_ip = self._names(email, ip)
        waits = []
        for name, limit in (
            (account_ip, self.limits.account_ip_failures),
            (by_ip, self.limits.ip_failures),
        ):
            count, ends = await self.counters.peek(name, now)
            if count >= limit:
                waits.append(max(1, math.ceil(ends - now)))
        return max(waits) if waits else None

    async def failed(self, email: str, ip: str) -> None:
        now, window = self.clock(), self.limits.window
        for name in self._names(email, ip):
            await self.counters.hit(name, window, now)

    async def succeeded(self, email: str, ip: str) -> None:
        await self.counters.clear(self._names(email, ip)[0])
