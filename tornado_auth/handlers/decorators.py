"""Gates for handler methods and sockets alike: signed in, admin, a role, or any predicate.

API handlers answer 401/403 as JSON; pages redirect an anonymous visitor to the login page.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

M = TypeVar("M", bound=Callable[..., Any])


def _gate(method: M, refusal: Callable[[Any], tuple[int, str] | None]) -> M:
    """Wrap a handler method to answer ``refusal(handler)`` (401 or 403) instead of running it.

    The wrapper returns whatever the method returns (an awaitable or None), so Tornado awaits it
    only when the method is a coroutine.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        refused = refusal(self)
        if refused is not None and refused[0] == 303:  # a page that leads the way
            return self.redirect(self.url(refused[1]))
        if refused is not None:
            return self.deny(*refused)
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def requires(allowed: Callable[[Any], bool], message: str = "Access denied") -> Callable[[M], M]:
    """Only for a signed-in user for whom ``allowed(current_user)`` holds: 401 (or a redirect to
    the login page) when anonymous, 403 ``{"error": message}`` for anyone else."""

    def refusal(handler: Any) -> tuple[int, str] | None:
        user = handler.current_user
        if user is None:
            return 401, "Not authenticated"
        return None if allowed(user) else (403, message)

    return lambda method: _gate(method, refusal)


def role_required(*roles: str) -> Callable[[M], M]:
    """Only for a signed-in user with one of ``roles``."""
    return requires(lambda user: user.role in roles, "Access denied for this role")


def authenticated(method: M) -> M:
    """Only for a signed-in user: 401 JSON for the API, a redirect to the login page for pages."""
    return requires(lambda user: True)(method)


SECOND_FACTOR_REQUIRED = "Sign in with a second factor to continue"
ADMIN_MFA_REQUIRED = "Admins must turn on two-step sign-in first"


def mfa_required(method: M) -> M:
    """Only for a user signed in (or enrolled, in this session) with a second factor."""
    return requires(lambda user: user.mfa, SECOND_FACTOR_REQUIRED)(method)


def admin_access(handler: Any) -> bool:
    """Whether the signed-in user may see what admins see: an admin, whose session used a second
    factor if ``security.require_mfa_for_admins`` says so."""
    user = handler.current_user
    if user is None or user.role != "admin":
        return False
    return bool(user.mfa or not handler.services.settings["security.require_mfa_for_admins"])


def admin_required(method: M) -> M:
    """Only for an admin: 401 when anonymous, 403 for anyone else. With
    ``security.require_mfa_for_admins``, only for an admin whose session used a second factor:
    403 from the API, else the page where they turn one on."""

    def refusal(handler: Any) -> tuple[int, str] | None:
        user = handler.current_user
        if user is None:
            return 401, "Not authenticated"
        if user.role != "admin":
            return 403, "Admin access required"
        if admin_access(handler):
            return None
        if not handler.api and handler.request.method in ("GET", "HEAD"):
            return 303, "/account/mfa"
        return 403, ADMIN_MFA_REQUIRED

    return _gate(method, refusal)
