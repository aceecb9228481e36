"""Request handlers, one module per area, and the route table."""

from __future__ import annotations

from typing import Any

from . import admin, api, auth, base, pages, ws

__all__ = ["base", "routes"]

ID = r"([A-Za-z0-9_-]{1,64})"


def routes() -> list[tuple[str, Any]]:
    return [
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
        (r"/api/set-cookie", api.SetCookieHandler),
        (r"/api/get-cookie", api.GetCookieHandler),
        (r"/healthz", api.HealthHandler),
        (r"/readyz", api.ReadyHandler),
        (r"/ws/dashboard", ws.DashboardSocket),
        (r"/api/.*", api.NotFoundHandler),
        *pages.page_routes(),
    ]
