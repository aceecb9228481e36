"""Browser pages: forms with XSRF tokens, redirects to /login for anonymous visitors."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import tornado.web

from ..users import ROLES, EmailTaken, email_problem, name_problem
from ..users.passwords import MAX_LENGTH, password_problem
from . import actions
from .api import describe
from .base import BaseHandler
from .decorators import admin_required, authenticated

PER_PAGE = 25
ENDED = {
    "logout": "You signed out in another tab.",
    "revoked": "That session was revoked.",
    "password": "Your password was changed. Please sign in again.",
    "disabled": "Your account was disabled.",
    "role": "Your role was changed. Please sign in again.",
    "expired": "Your session expired. Please sign in again.",
    "ended": "Your session ended. Please sign in again.",
}


# What a redirect target may hold: printable ASCII without the backslash (which browsers read as
# "/"). Control characters (C0, DEL, C1), spaces and other text are refused rather than encoded:
# a path this app builds (see ``BaseHandler.deny``) is already percent-encoded, and Tornado
# refuses to send some of them in a Location header at all.
NEXT_CHARACTERS = re.compile(r"[!-\[\]-~]*")


def safe_next(value: str | None, fallback: str = "/dashboard") -> str:
    """A same-site relative path to go to after sign-in; anything else becomes ``fallback``."""
    if not value or value[0] != "/" or value[1:2] == "/" or not NEXT_CHARACTERS.fullmatch(value):
        return fallback  # "//host" is another site; "/\\host" too, refused with every "\\"
    return value


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def human(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


class PageHandler(BaseHandler):
    def form(self, name: str, max_length: int) -> str:
        value = self.get_body_argument(name, "")
        return value[:max_length]

    def password(self) -> str:
        """The password field exactly as typed: Tornado's form arguments strip spaces and turn
        control characters into spaces, so the page and the API would disagree on a password."""
        values = self.request.body_arguments.get("password")
        return self.decode_argument(values[-1], "password") if values else ""


class RootHandler(BaseHandler):
    uses_session = False

    def get(self) -> None:
        self.redirect(self.url("/dashboard"))


class LoginPage(PageHandler):
    def get(self) -> None:
        if self.current_user:
            self.redirect(safe_next(self.get_query_argument("next", None), self.url("/dashboard")))
            return
        notice = ENDED.get(self.get_query_argument("ended", ""), "")
        self.show(notice=notice)

    def show(self, error: str = "", email: str = "", notice: str = "") -> None:
        next_url = safe_next(self.get_argument("next", None), self.url("/dashboard"))
        self.render("login.html", error=error, email=email, notice=notice, next_url=next_url)

    async def post(self) -> None:
        email = self.form("email", 254)
        password = self.password()
        remember_me = self.get_body_argument("rememberMe", "") == "1"
        if not email or not password:
            self.set_status(400)
            self.show("Enter your email and password.", email)
        elif len(password) > MAX_LENGTH:
            self.set_status(400)
            self.show(f"A password has at most {MAX_LENGTH} characters.", email)
        elif await self.log_in(email, password, remember_me) is None:
            self.set_status(401)
            self.show("Invalid email or password.", email)
        else:
            self.redirect(safe_next(self.get_body_argument("next", None), self.url("/dashboard")))


class RegisterPage(PageHandler):
    def get(self) -> None:
        self.render("register.html", error="", email="", name="")

    async def post(self) -> None:
        name = self.form("name", 100).strip()
        email = self.form("email", 254)
        password = self.password()
        problem = email_problem(email) or name_problem(name) or password_problem(password)
        if not name:
            problem = "Enter your name."
        if problem:
            self.set_status(400)
            self.render("register.html", error=problem.capitalize() + ".", email=email, name=name)
            return
        try:
            await self.register(email, name, password)
        except EmailTaken:
            self.set_status(409)
            error = "That email is already registered."
            self.render("register.html", error=error, email=email, name=name)
            return
        self.redirect(self.url("/dashboard"))


class LogoutPage(PageHandler):
    async def post(self) -> None:
        await self.sign_out()
        self.redirect(self.url("/login"))


class DashboardPage(PageHandler):
    @authenticated
    async def get(self) -> None:
        user = await self.services.users.get(self.current_user.id)
        if user is None:
            await self.sign_out()
            self.redirect(self.url("/login"))
            return
        self.render("dashboard.html", user=user)


class SessionsPage(PageHandler):
    @authenticated
    async def get(self) -> None:
        records = await self.services.sessions.list_user(self.current_user.id)
        sessions = [describe(record, self.session.key) for record in records]
        self.render("sessions.html", sessions=sessions, iso=iso, human=human)


class RevokeSessionPage(PageHandler):
    @authenticated
    async def post(self, session_id: str) -> None:
        await actions.revoke_own_session(self, session_id)
        self.redirect(self.url("/sessions" if self.current_user else "/login"))


class RevokeOthersPage(PageHandler):
    @authenticated
    async def post(self) -> None:
        await actions.revoke_other_sessions(self)
        self.redirect(self.url("/sessions"))


class AdminPage(PageHandler):
    @admin_required
    async def get(self) -> None:
        text = self.get_query_argument("page", "1")
        page = int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 10**6 else 1
        users, total = await self.services.users.page((page - 1) * PER_PAGE, PER_PAGE)
        pages = max(1, math.ceil(total / PER_PAGE))
        audit, _ = await self.services.audit.page(0, PER_PAGE)
        self.render(
            "admin.html",
            users=users,
            total=total,
            page=page,
            pages=pages,
            roles=ROLES,
            audit=audit,
            human=human,
            iso=iso,
        )


class AdminUserPage(PageHandler):
    @admin_required
    async def post(self, user_id: str) -> None:
        action, role = self.get_body_argument("action", ""), self.get_body_argument("role", "")
        user = await self.services.users.get(user_id)
        if user is None:
            raise tornado.web.HTTPError(404)
        if action == "role" and role in ROLES:
            await actions.change_user(self, user, role, None)
        elif action in ("disable", "enable"):
            await actions.change_user(self, user, None, action == "disable")
        elif action == "revoke":
            await actions.revoke_user_sessions(self, user)
        else:
            raise tornado.web.HTTPError(400)
        self.redirect(self.url("/admin"))


class PageNotFoundHandler(BaseHandler):
    uses_session = False

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


def page_routes() -> list[tuple[str, Any]]:
    session_id = r"([0-9a-f]{32})"
    return [
        (r"/", RootHandler),
        (r"/login", LoginPage),
        (r"/register", RegisterPage),
        (r"/logout", LogoutPage),
        (r"/dashboard", DashboardPage),
        (r"/sessions", SessionsPage),
        (rf"/sessions/{session_id}/revoke", RevokeSessionPage),
        (r"/sessions/revoke-others", RevokeOthersPage),
        (r"/admin", AdminPage),
        (r"/admin/users/([A-Za-z0-9_-]{1,64})", AdminUserPage),
    ]
