"""Hooks an app registers to act after sign-in, sign-out, registration and the end of a session.

A hook may be a plain function or a coroutine function. Hooks run after the fact, in the
process where it happened; one that raises is logged and does not undo or fail the action.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

log = logging.getLogger("tornado_auth.hooks")
H = TypeVar("H", bound=Callable[..., Any])


class Hook(StrEnum):
    SIGNED_IN = "signed_in"  # (user: User, origin: Origin)
    SIGNED_OUT = "signed_out"  # (user_id: str, origin: Origin)
    REGISTERED = "registered"  # (user: User, origin: Origin)
    SESSION_ENDED = "session_ended"  # (user_id: str | None, reason: str), once per session


class Hooks:
    def __init__(self) -> None:
        self._hooks: dict[Hook, list[Callable[..., Any]]] = {hook: [] for hook in Hook}
        self._running: set[asyncio.Future[None]] = set()

    def add(self, hook: Hook | str, function: Callable[..., Any]) -> None:
        """Call ``function`` after ``hook`` (one of: signed_in, signed_out, registered,
        session_ended)."""
        self._hooks[Hook(hook)].append(function)

    def on(self, hook: Hook | str) -> Callable[[H], H]:
        """The decorator form of ``add``: ``@services.hooks.on("signed_in")``."""

        def register(function: H) -> H:
            self.add(hook, function)
            return function

        return register

    async def run(self, hook: Hook, *args: Any) -> None:
        for function in self._hooks[hook]:
            try:
                result = function(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s hook %s failed", hook.value, getattr(function, "__name__", "?"))

    def spawn(self, hook: Hook, *args: Any) -> None:
        """Run ``hook`` in the background (from code that cannot wait for it)."""
        if not self._hooks[hook]:
            return
        task = asyncio.ensure_future(self.run(hook, *args))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
