"""Password hashing: bcrypt over a SHA-256 pre-hash, always computed off the event loop.

bcrypt reads at most 72 bytes. Rather than truncate silently, passwords of 8 to 1024 characters
are first hashed with SHA-256 (base64, 44 bytes), so every character counts. Stored hashes carry
their scheme; a plain ``$2b$`` bcrypt hash (an import) still verifies and is upgraded at login.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import bcrypt

T = TypeVar("T")

SCHEME = "bcrypt-sha256$"
MIN_LENGTH = 8
MAX_LENGTH = 1024

BCRYPT_NICENESS = 19  # the lowest priority: hashing yields to requests, stores and proxies


def _yield_to_the_event_loop() -> None:
    """Run this hashing thread at a lower priority than the event loop's thread (Linux: niceness
    is per thread), so a storm of sign-ins uses idle cores without slowing other requests."""
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + BCRYPT_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))


_pools: dict[int, ThreadPoolExecutor] = {}


def pool() -> ThreadPoolExecutor:
    """This process's hashing threads. One per process: threads do not survive a fork, so a
    worker forked after the parent hashed (demo users, the dummy hash) makes its own."""
    pid = os.getpid()
    if pid not in _pools:
        # bcrypt releases the GIL: one thread per core computes hashes at the machine's limit.
        _pools[pid] = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 1,
            thread_name_prefix="bcrypt",
            initializer=_yield_to_the_event_loop,
        )
    return _pools[pid]


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode()).digest())


def _hash(password: str, rounds: int) -> str:
    return SCHEME + bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode()


def _verify(password: str, stored: str) -> bool:
    try:
        if stored.startswith(SCHEME):
            return bcrypt.checkpw(_prehash(password), stored[len(SCHEME) :].encode())
        if stored.startswith("$2"):
            return bcrypt.checkpw(password.encode()[:72], stored.encode())
    except ValueError:
        return False
    return False


class PoolWatcher(Protocol):
    """Told of each hashing job: queued (+1), started (-1) after waiting so many seconds."""

    def queued(self, change: int) -> None: ...

    def waited(self, seconds: float) -> None: ...


watchers: list[PoolWatcher] = []  # this process's metrics, if any


async def _in_pool(work: Callable[..., T], *args: Any) -> T:
    submitted = time.perf_counter()
    for watcher in watchers:
        watcher.queued(1)

    def started() -> T:
        waited = time.perf_counter() - submitted
        for watcher in watchers:
            watcher.queued(-1)
            watcher.waited(waited)
        return work(*args)

    return await asyncio.get_running_loop().run_in_executor(pool(), started)


async def hash_password(password: str, rounds: int) -> str:
    return await _in_pool(_hash, password, rounds)


async def verify_password(password: str, stored: str) -> bool:
    return await _in_pool(_verify, password, stored)


def cost(stored: str) -> int | None:
    """The bcrypt cost of a stored hash, or None if it is not one."""
    bcrypt_hash = stored[len(SCHEME) :] if stored.startswith(SCHEME) else stored
    parts = bcrypt_hash.split("$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None


def needs_rehash(stored: str, rounds: int) -> bool:
    """True when the stored hash uses another scheme or cost than configured."""
    if not stored.startswith(SCHEME):
        return True
    return int(stored[len(SCHEME) :].split("$")[2]) != rounds


def password_problem(password: object) -> str | None:
    """Why a new password is unacceptable, or None."""
    if not isinstance(password, str):
        return "Password must be a string"
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        return f"Password must be {MIN_LENGTH} to {MAX_LENGTH} characters"
    if password.isspace():
        return "Password must not be only whitespace"
    return None


class DummyHash:
    """A hash to check unknown emails against, so they cost one bcrypt check too."""

    def __init__(self) -> None:
        self._hash: dict[int, str] = {}

    async def get(self, rounds: int) -> str:
        if rounds not in self._hash:
            self._hash[rounds] = await hash_password(os.urandom(16).hex(), rounds)
        return self._hash[rounds]
