"""Request handlers, one module per area, and their routes (mounted by ``app.auth_routes``)."""

from __future__ import annotations

from typing import Any

from . import admin, api, auth, docs, mfa, pages, passkeys, recovery, ws

__all__ = [
    "api_fallback_routes",
    "api_routes",
    "demo_routes",
    "docs",
    "mfa",
    "pages",
    "passkeys",
    "recovery",
    "socket_routes",
]

ID = r"([A-Za-z0-9_-]{1,64})"


def api_routes() -> list[tuple[str, Any]]:
    return [
        *recovery.api_routes(),  # first: some extend the routes below
        *mfa.api_routes(),
        *passkeys.api_routes(),
        (r"/api/login", auth.LoginHandler),
        (r"/api/logout", auth.LogoutHandler),
        (r"/api/register", auth.RegisterHandler),
        (r"/api/password", auth.PasswordHandler),
        (r"/api/dashboard", api.DashboardHandler),
        (r"/api/profile", api.ProfileHandler),
        (r"/api/sessions", api.SessionsHandler),
        (r"/api/sessions/revoke-others", api.RevokeOthersHandler),
        (rf"/api/sessions/{ID}", api.SessionHandler),
        (r"/api/admin/users", admin.AdminUsersHandler),
        (rf"/api/admin/users/{ID}", admin.AdminUserHandler),
        (rf"/api/admin/users/{ID}/sessions", admin.AdminUserSessionsHandler),
        (r"/api/admin/audit", admin.AdminAuditHandler),
        (r"/api/openapi.json", docs.OpenApiHandler),
        (r"/healthz", api.HealthHandler),
        (r"/readyz", api.ReadyHandler),
    ]


def demo_routes() -> list[tuple[str, Any]]:
    """The seed guide's cookie demo."""
    return [
        (r"/api/set-cookie", api.SetCookieHandler),
        (r"/api/get-cookie", api.GetCookieHandler),
    ]


def socket_routes() -> list[tuple[str, Any]]:
    return [(r"/ws/dashboard", ws.DashboardSocket)]


def api_fallback_routes() -> list[tuple[str, Any]]:
    """Any other path under /api/ answers a JSON 404."""
    return [(r"/api/.*", api.NotFoundHandler)]
