"""Browser pages: forms with XSRF tokens, redirects to /login for anonymous visitors, a message
after every action, and a confirmation before every destructive one."""

from __future__ import annotations

import re
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import tornado.web

from ..accounts import AccountChanged, EmailNotVerified, SecondFactorRequired
from ..devices import device_name
from ..lifecycle import CHECK_EMAIL, UNVERIFIED
from ..passkeys import Passkey
from ..sessions import public_id
from ..throttle import Throttled
from ..users import EmailTaken, User, email_problem, name_problem
from ..users.passwords import MAX_LENGTH, password_problem
from . import actions
from .api import describe
from .base import BaseHandler
from .decorators import authenticated
from .flash import Kind, set_flash
from .validation import ApiError

# Why the live page sent the browser here: a deliberate sign-out elsewhere is news, the rest are
# things done to the user, shown as warnings.
ENDED = {
    "logout": (Kind.INFO, "You signed out in another tab."),
    "revoked": (Kind.WARNING, "That session was revoked."),
    "password": (Kind.WARNING, "Your password was changed. Please sign in again."),
    "disabled": (Kind.WARNING, "Your account was disabled."),
    "role": (Kind.WARNING, "Your role was changed. Please sign in again."),
    "expired": (Kind.WARNING, "Your session expired. Please sign in again."),
    "limit": (
        Kind.WARNING,
        "You signed in on too many devices; this, your oldest session, was ended.",
    ),
    "ended": (Kind.WARNING, "Your session ended. Please sign in again."),
}
SIGNED_OUT = "You have signed out."
# What is asked before each action of "Your devices": title, message, button.
ASK = {
    "current": (
        "Sign out of this device?",
        "You will need your password to sign in here again.",
        "Sign out",
    ),
    "other": ("Revoke this session?", "That device will be signed out at once.", "Revoke"),
    "others": (
        "Sign out everywhere else?",
        "Every other browser and app signed in to your account will be signed out.",
        "Sign out everywhere else",
    ),
    "passkey": (
        "Remove this passkey?",
        "It will no longer sign you in, and every other browser and app signed in to your"
        " account will be signed out.",
        "Remove",
    ),
}


# What a redirect target may hold: printable ASCII without the backslash (which browsers read as
# "/"). Control characters (C0, DEL, C1), spaces and other text are refused rather than encoded:
# a path this app builds (see ``BaseHandler.deny``) is already percent-encoded, and Tornado
# refuses to send some of them in a Location header at all.
NEXT_CHARACTERS = re.compile(r"[!-\[\]-~]*")


def safe_next(value: str | None, default: str = "/dashboard") -> str:
    """A same-site relative path to go to after sign-in; anything else becomes ``default``."""
    if not value or value[0] != "/" or value[1:2] == "/" or not NEXT_CHARACTERS.fullmatch(value):
        return default  # "//host" is another site; "/\\host" too, refused with every "\\"
    return value


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def human(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def duration(seconds: float) -> str:
    """``seconds`` in words, in its largest whole unit: "3 minutes", "1 hour"."""
    seconds = max(1, round(seconds))
    for unit, size in UNITS:
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "1 second"  # unreachable: seconds >= 1


def relative(seconds: float, now: float) -> str:
    """When ``seconds`` is from ``now``: "5 minutes ago", "in 2 days", "just now"."""
    delta = seconds - now
    if abs(delta) < 45:
        return "just now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(-delta)} ago"


def sentence(problem: str) -> str:
    """A validation problem ("name is required") as a sentence for a page."""
    return problem[:1].upper() + problem[1:].rstrip(".") + "."


class PageHandler(BaseHandler):
    def form(self, name: str, max_length: int) -> str:
        value = self.get_body_argument(name, "")
        return value[:max_length]

    def password(self, name: str = "password") -> str:
        """A password field exactly as typed: Tornado's form arguments strip spaces and turn
        control characters into spaces, so the page and the API would disagree on a password."""
        values = self.request.body_arguments.get(name)
        return self.decode_argument(values[-1], name) if values else ""

    def refused_for(self, retry_after: int) -> str:
        """Answer 429 with Retry-After; the wait in words for the page."""
        self.set_status(429)
        self.set_header("Retry-After", str(retry_after))
        return duration(retry_after)

    def flash(self, kind: Kind, text: str) -> None:
        set_flash(self, kind, text)

    def done(self, path: str, kind: Kind, text: str) -> None:
        """End an action: the message for the next page, and a redirect to it."""
        self.flash(kind, text)
        self.redirect(self.url(path) if path.startswith("/") else path)

    @property
    def confirmed(self) -> bool:
        """Whether the person confirmed (in the dialog, or on the confirmation page)."""
        return self.get_body_argument("confirm", "") == "1"

    def confirm(self, title: str, message: str, button: str, back: str, detail: str = "") -> None:
        """Ask before a destructive action: a page that posts the same form once more."""
        fields = {
            name: self.decode_argument(values[-1], name)
            for name, values in self.request.body_arguments.items()
            if name not in ("_xsrf", "confirm")
        }
        self.render(
            "confirm.html",
            title=title,
            message=message,
            button=button,
            action=self.request.path,
            fields=fields,
            back=back,
        )

    def render_form(self, template: str, errors: dict[str, str], **values: Any) -> None:
        """A form again, with every problem tied to its field; 400 unless a status is set."""
        if self.get_status() == 200:
            self.set_status(400)
        values.setdefault("problem", "")
        self.render(template, errors=errors, **values)


class RootHandler(BaseHandler):
    uses_session = False

    def get(self) -> None:
        self.redirect(self.url("/dashboard"))


class LoginPage(PageHandler):
    def next_url(self, value: str | None) -> str:
        """Where to go after sign-in: ``value`` if safe, else our dashboard under the prefix."""
        return safe_next(value, self.url("/dashboard"))

    def get(self) -> None:
        if self.current_user:
            self.redirect(self.next_url(self.get_query_argument("next", None)))
            return
        ended = ENDED.get(self.get_query_argument("ended", ""))
        self.show({}, notice=ended)

    def show(
        self,
        errors: dict[str, str],
        email: str = "",
        problem: str = "",
        notice: tuple[Kind, str] | None = None,
        resend: bool = False,
    ) -> None:
        next_url = self.next_url(self.get_argument("next", None))
        self.render(
            "login.html",
            errors=errors,
            problem=problem,
            email=email,
            notice=notice,
            next_url=next_url,
            resend=resend,
        )

    async def post(self) -> None:
        email = self.form("email", 254)
        password = self.password()
        remember_me = self.get_body_argument("rememberMe", "") == "1"
        errors = {}
        if not email.strip():
            errors["email"] = "Enter your email."
        if not password:
            errors["password"] = "Enter your password."
        elif len(password) > MAX_LENGTH:
            errors["password"] = f"A password has at most {MAX_LENGTH} characters."
        if errors:
            self.set_status(400)
            self.show(errors, email)
            return
        try:
            user = await self.log_in(email, password, remember_me)
        except ApiError as refused:  # the form stays, saying why and when to try again
            if refused.status_code == 429 and refused.retry_after is not None:
                wait = self.refused_for(refused.retry_after)
                problem = f"Too many failed sign-ins. Try again in {wait}."
            elif refused.status_code == 401:  # the right password of a disabled account
                self.set_status(403)
                problem = "This account is disabled. Ask an administrator to enable it."
            else:
                raise
            self.show({}, email, problem)
            return
        except EmailNotVerified:  # with users.require_verified_email: offer a new link
            self.set_status(403)
            self.show({}, email, UNVERIFIED + ".", resend=True)
            return
        except SecondFactorRequired:  # the pending cookie is set: on to the second step
            next_url = self.next_url(self.get_body_argument("next", None))
            self.redirect(self.url("/login/mfa?") + urllib.parse.urlencode({"next": next_url}))
            return
        if user is None:
            self.set_status(401)
            self.show({}, email, "Invalid email or password.")
        else:
            self.redirect(self.next_url(self.get_body_argument("next", None)))


class RegisterPage(PageHandler):
    def get(self) -> None:
        self.render("register.html", errors={}, problem="", email="", name="")

    async def post(self) -> None:
        name = self.form("name", 101)
        email = self.form("email", 255)
        password = self.password()
        problems = {
            "name": name_problem(name),
            "email": email_problem(email) if email.strip() else "Enter your email",
            "password": password_problem(password) if password else "Choose a password",
        }
        errors = {field: sentence(problem) for field, problem in problems.items() if problem}
        if not errors and self.services.lifecycle.quiet_registration:
            await self.register_quietly(email, name, password)
            return
        if not errors:
            try:
                await self.register(email, name, password)
            except EmailTaken:
                self.set_status(409)
                errors["email"] = "That email is already registered. Sign in instead?"
            except ApiError as refused:
                if refused.status_code != 429 or refused.retry_after is None:
                    raise
                wait = self.refused_for(refused.retry_after)
                problem = f"Too many new accounts from here. Try again in {wait}."
                self.render_form("register.html", {}, problem=problem, email=email, name=name)
                return
        if errors:
            self.render_form("register.html", errors, email=email, name=name.strip())
            return
        self.done("/dashboard", Kind.SUCCESS, "Welcome! Your account is ready.")

    async def register_quietly(self, email: str, name: str, password: str) -> None:
        """With users.require_verified_email: the same answer for a new or a taken address."""
        try:
            await self.services.lifecycle.register_quietly(email, name, password, self.origin())
        except Throttled as refused:
            wait = self.refused_for(refused.retry_after)
            problem = f"Too many new accounts from here. Try again in {wait}."
            self.render_form("register.html", {}, problem=problem, email=email, name=name)
            return
        message = CHECK_EMAIL + "."
        self.render(
            "account_notice.html", title="Check your email", message=message, error=False,
            link="/login", link_text="Sign in",
        )  # fmt: skip


class LogoutPage(PageHandler):
    async def post(self) -> None:
        await self.sign_out()
        self.done("/login", Kind.INFO, SIGNED_OUT)


class DashboardPage(PageHandler):
    @authenticated
    async def get(self) -> None:
        user = await self.services.users.get(self.current_user.id)
        if user is None:
            await self.sign_out()
            self.redirect(self.url("/login"))
            return
        status = await self.services.mfa.status(user.id)
        left = status.recovery_codes if status.few_recovery_codes else None
        self.render("dashboard.html", user=user, recovery_codes_left=left)


class SessionsPage(PageHandler):
    @authenticated
    async def get(self) -> None:
        records = await self.services.sessions.list_user(self.current_user.id)
        names = await self.services.lifecycle.session_names(records)
        sessions = [
            {**describe(record, self.session.key), "name": names.get(record.key, "")}
            for record in records
        ]
        sessions.sort(key=lambda s: (not s["current"], -float(str(s["lastSeenAt"]))))
        self.render(
            "sessions.html",
            sessions=sessions,
            iso=iso,
            human=human,
            relative=relative,
            now=time.time(),
            device_name=device_name,
            ask=ASK,
        )


class RevokeSessionPage(PageHandler):
    @authenticated
    async def post(self, session_id: str) -> None:
        key = self.session.key
        current = key is not None and session_id == public_id(key)
        if not self.confirmed:
            self.confirm(*ASK["current" if current else "other"], self.url("/sessions"))
            return
        if not await actions.revoke_own_session(self, session_id):
            self.done("/sessions", Kind.ERROR, "That session had already ended.")
        elif current:
            self.done("/login", Kind.INFO, SIGNED_OUT)
        else:
            self.done(
                "/sessions", Kind.SUCCESS, "The session was revoked; that device is signed out."
            )


class RevokeOthersPage(PageHandler):
    @authenticated
    async def post(self) -> None:
        if not self.confirmed:
            self.confirm(*ASK["others"], self.url("/sessions"))
            return
        count = await actions.revoke_other_sessions(self)
        text = f"Signed out {count} other {'session' if count == 1 else 'sessions'}."
        self.done("/sessions", Kind.SUCCESS, text)


class AccountForm(PageHandler):
    shown_passkeys: list[Passkey] = []

    async def user(self) -> User | None:
        """The signed-in user's record (and their passkeys, for the page); None (and signed
        out) if it was removed meanwhile."""
        user = await self.services.users.get(self.current_user.id)
        if user is None:
            await self.sign_out()
            self.done("/login", Kind.WARNING, "Your account no longer exists.")
            return None
        self.shown_passkeys = await self.services.passkeys.of_user(user.id)
        return user

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            passkeys=self.shown_passkeys,
            ask_remove_passkey=ASK["passkey"],
            iso=iso,
            human=human,
            relative=relative,
            now=time.time(),
        )
        return namespace


class AccountPage(AccountForm):
    @authenticated
    async def get(self) -> None:
        user = await self.user()
        if user is not None:
            self.render("account.html", user=user, name=user.name, errors={}, problem="")


class AccountNamePage(AccountForm):
    @authenticated
    async def post(self) -> None:
        user = await self.user()
        if user is None:
            return
        name = self.form("name", 101)
        problem = name_problem(name)
        if problem:
            self.render_form("account.html", {"name": sentence(problem)}, user=user, name=name)
            return
        await self.services.accounts.rename(user, name, self.origin())
        self.done("/account", Kind.SUCCESS, "Your name was changed.")


class AccountPasswordPage(AccountForm):
    @authenticated
    async def post(self) -> None:
        user = await self.user()
        if user is None:
            return
        current, new = self.password("current"), self.password("new")
        errors = {}
        if not current:
            errors["current"] = "Enter your current password."
        problem = password_problem(new) if new else "Choose a new password"
        if problem:
            errors["new"] = sentence(problem)
        if errors:
            self.render_form("account.html", errors, user=user, name=user.name)
            return
        accounts = self.services.accounts
        try:
            revoked = await self.unless_abandoned(
                accounts.change_password(user, current, new, self.origin())
            )
        except Throttled as throttled:
            wait = self.refused_for(throttled.retry_after)
            problem = f"Too many wrong passwords. Try again in {wait}."
            self.render_form("account.html", {}, user=user, name=user.name, problem=problem)
            return
        except AccountChanged:
            self.done("/account", Kind.ERROR, "Your account changed meanwhile; try again.")
            return
        if revoked is None:
            self.set_status(401)
            wrong = {"current": "That is not your current password."}
            self.render_form("account.html", wrong, user=user, name=user.name)
            return
        self.session.regenerate()
        others = (
            f" {revoked} other {'session was' if revoked == 1 else 'sessions were'} signed out."
        )
        self.done(
            "/account", Kind.SUCCESS, "Your password was changed." + (others if revoked else "")
        )


class PageNotFoundHandler(BaseHandler):
    uses_session = False

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


def page_routes() -> list[tuple[str, Any]]:
    from .admin_pages import admin_page_routes
    from .docs import ApiDocsPage

    session_id = r"([0-9a-f]{32})"
    return [
        (r"/", RootHandler),
        (r"/login", LoginPage),
        (r"/register", RegisterPage),
        (r"/logout", LogoutPage),
        (r"/dashboard", DashboardPage),
        (r"/account", AccountPage),
        (r"/account/name", AccountNamePage),
        (r"/account/password", AccountPasswordPage),
        (r"/sessions", SessionsPage),
        (rf"/sessions/{session_id}/revoke", RevokeSessionPage),
        (r"/sessions/revoke-others", RevokeOthersPage),
        *admin_page_routes(),
        (r"/docs/api", ApiDocsPage),
    ]
