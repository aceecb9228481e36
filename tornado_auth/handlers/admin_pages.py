"""The admin page: users found by email or name, filtered and paged by the store; the activity in
words; every change asked for first and reported after."""

from __future__ import annotations

import math
import urllib.parse
from typing import Any, NamedTuple

import tornado.web

from ..audit import AuditEntry
from ..devices import device_name
from ..users import ROLES, User, UserFilter
from . import actions
from .decorators import admin_required
from .flash import Kind
from .pages import PageHandler, human, iso, relative, safe_next
from .validation import ApiError

PER_PAGE = 20
ACTIVITY = 15
STATUSES = {"active": False, "disabled": True}


class Question(NamedTuple):
    """What the confirmation asks before an admin action; ``{role}`` is the chosen role."""

    title: str
    message: str
    button: str


def question(action: str, user: User, me: bool) -> Question | None:
    """The confirmation an action needs (None: it is done at once)."""
    email = user.email
    if action == "role":
        if me:
            message = "If you stop being an admin, you are signed out at once."
        else:
            message = "Their sessions end at once; they sign in again with the new role."
        return Question(f"Make {email} {{role}}?", message, "Set role")
    if action == "disable":
        if me:
            message = (
                "You are signed out at once, and cannot sign in until another admin enables you."
            )
        else:
            message = "They are signed out everywhere and cannot sign in until enabled again."
        return Question(f"Disable {email}?", message, "Disable")
    if action == "mfa":
        message = "Their authenticator app and recovery codes are removed, they are signed out"
        message += " everywhere, and they are told by email."
        return Question(f"Reset the two-step sign-in of {email}?", message, "Reset")
    if action == "revoke":
        if me:
            message = "You are signed out on every device, this one included."
        else:
            message = "They are signed out on every device."
        return Question(f"End every session of {email}?", message, "End sessions")
    return None


def article(role: str) -> str:
    """The role with its article: "an admin", "a user" (a "u" that sounds "you")."""
    return f"an {role}" if role[:1] in ("a", "e", "i", "o") else f"a {role}"


def count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def activity(entry: AuditEntry, names: dict[str, str]) -> str:
    """Who did what to whom, in words."""
    who = entry.email or names.get(entry.user_id or "", "") or "someone"
    by = entry.detail.get("by")
    actor = "The command line" if by == "cli" else names.get(by or "", "An admin")
    target = "themself" if by is not None and by == entry.user_id else who
    reason = entry.detail.get("reason")
    admin_events = {
        "role_changed": f"{actor} made {target} {article(str(entry.detail.get('role', '')))}",
        "user_disabled": f"{actor} disabled {target}",
        "user_enabled": f"{actor} enabled {target}",
        "registered": f"{actor} created the account {who}",
        "sessions_revoked": (
            f"{actor} ended the sessions of {target} ({entry.detail.get('count', 0)})"
        ),
        "mfa_reset": f"{actor} reset the two-step sign-in of {target}",
    }
    if by is not None and entry.event in admin_events:
        return admin_events[entry.event]
    failed = {
        "disabled": f"Sign-in refused for {who}: the account is disabled",
        "changed": f"Sign-in for {who} cancelled: the account changed meanwhile",
    }
    own_events = {
        "signin": f"{who} signed in",
        "signin_failed": failed.get(reason or "", f"Failed sign-in for {who}"),
        "signin_throttled": f"Sign-ins for {who} from {entry.ip} paused: too many failures",
        "logout": f"{who} signed out",
        "registered": f"{who} registered",
        "registration_throttled": f"New accounts from {entry.ip} paused: too many",
        "session_revoked": f"{who} signed out one of their devices",
        "sessions_revoked": (
            f"{who} signed out {count(entry.detail.get('count', 0), 'other device')}"
        ),
        "password_changed": f"{who} changed their password",
        "name_changed": f"{who} changed their name",
        "password_check_failed": f"{who} entered a wrong current password",
        "password_check_throttled": f"Password checks for {who} paused: too many failures",
        "mfa_enabled": f"{who} turned on two-step sign-in",
        "mfa_removed": f"{who} turned off their authenticator app",
        "mfa_failed": f"Wrong second-step code for {who}",
        "mfa_throttled": f"Second steps for {who} from {entry.ip} paused: too many failures",
        "recovery_code_used": f"{who} signed in with a recovery code",
        "recovery_codes_regenerated": f"{who} made new recovery codes",
    }
    return own_events.get(entry.event, f"{who}: {entry.event.replace('_', ' ')}")


class AdminPage(PageHandler):
    @admin_required
    async def get(self) -> None:
        search = self.get_query_argument("q", "").strip()[:100]
        role = self.get_query_argument("role", "")
        role = role if role in ROLES else ""
        status = self.get_query_argument("status", "")
        status = status if status in STATUSES else ""
        text = self.get_query_argument("page", "1")
        page = int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 10**6 else 1
        where = UserFilter(search, role or None, STATUSES.get(status))
        users, total = await self.services.users.page((page - 1) * PER_PAGE, PER_PAGE, where)
        passkeys = await self.services.passkeys.counts([user.id for user in users])
        pages = max(1, math.ceil(total / PER_PAGE))
        factors = {user.id: await self.services.mfa.status(user.id) for user in users}
        audit = (await self.services.audit.around(ACTIVITY)).entries  # no count of the trail
        names = await self.names(audit)
        query = {"q": search, "role": role, "status": status}

        def page_url(number: int) -> str:
            shown = {name: value for name, value in query.items() if value}
            return self.url("/admin?") + urllib.parse.urlencode({**shown, "page": number})

        self.render(
            "admin.html",
            users=users,
            factors=factors,
            passkeys=passkeys,
            total=total,
            page=page,
            pages=pages,
            page_url=page_url,
            back=page_url(page),
            roles=ROLES,
            statuses=STATUSES,
            query=query,
            filtered=any(query.values()),
            activity=[(entry, activity(entry, names)) for entry in audit],
            question=question,
            me=self.current_user.id,
            human=human,
            iso=iso,
            relative=relative,
            now=self.services.sessions.clock(),
            device_name=device_name,
        )

    async def names(self, entries: list[AuditEntry]) -> dict[str, str]:
        """The emails of the admins who acted in ``entries``, by id."""
        ids = {entry.detail.get("by") for entry in entries} - {None, "cli"}
        found = {}
        for user_id in ids:
            user = await self.services.users.get(str(user_id))
            if user is not None:
                found[user.id] = user.email
        return found


class AdminUserPage(PageHandler):
    @admin_required
    async def post(self, user_id: str) -> None:
        action, role = self.get_body_argument("action", ""), self.get_body_argument("role", "")
        user = await self.services.users.get(user_id)
        if user is None:
            raise tornado.web.HTTPError(404)
        if action not in ("role", "disable", "enable", "revoke", "mfa") or (
            action == "role" and role not in ROLES
        ):
            raise tornado.web.HTTPError(400)
        back = safe_next(self.get_body_argument("back", None), self.url("/admin"))
        me = user.id == self.current_user.id
        if action == "role" and role == user.role:
            self.done(back, Kind.INFO, f"{user.email} is already {article(role)}.")
            return
        asked = question(action, user, me)
        if asked is not None and not self.confirmed:
            title = asked.title.replace("{role}", article(role))
            self.confirm(title, asked.message, asked.button, back)
            return
        await self.act(action, role, user, me, back)

    async def act(self, action: str, role: str, user: User, me: bool, back: str) -> None:
        email = user.email
        if action == "mfa":
            if not await self.services.mfa.reset(user, self.origin(as_admin=True)):
                self.done(back, Kind.INFO, f"{email} has no second factor to reset.")
            elif me:
                self.done("/login", Kind.WARNING, "You reset your own two-step sign-in.")
            else:
                self.done(back, Kind.SUCCESS, f"The two-step sign-in of {email} was reset.")
            return
        if action == "revoke":
            ended = await actions.revoke_user_sessions(self, user)
            if me:
                self.done("/login", Kind.WARNING, "You ended all your sessions, this one too.")
            else:
                self.done(back, Kind.SUCCESS, f"Ended {count(ended, 'session')} of {email}.")
            return
        try:
            if action == "role":
                await actions.change_user(self, user, role, None)
            else:
                await actions.change_user(self, user, None, action == "disable")
        except ApiError:  # the last admin
            text = f"{email} is the last admin: make someone else an admin first."
            self.done(back, Kind.ERROR, text)
            return
        if action == "enable":
            self.done(back, Kind.SUCCESS, f"{email} was enabled and can sign in again.")
        elif me and action == "disable":
            self.done("/login", Kind.WARNING, "You disabled your own account and were signed out.")
        elif me:
            text = f"You are now {article(role)}, and were signed out. Sign in again."
            self.done("/login", Kind.WARNING, text)
        elif action == "disable":
            self.done(back, Kind.SUCCESS, f"{email} was disabled and signed out everywhere.")
        else:
            self.done(back, Kind.SUCCESS, f"{email} is now {article(role)}; their sessions ended.")


def admin_page_routes() -> list[tuple[str, Any]]:
    return [
        (r"/admin", AdminPage),
        (r"/admin/users/([A-Za-z0-9_-]{1,64})", AdminUserPage),
    ]
