"""The account lifecycle by email, as JSON API and pages: forgotten password and reset, email
verification, re-authentication, email change and its undo, "this wasn't me", session names,
and an admin's reset or verification link. The use cases are in ``lifecycle.py``."""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from ..accounts import AccountDisabled, EmailNotVerified
from ..lifecycle import (
    CHECK_EMAIL,
    MAX_SESSION_NAME,
    REAUTH_KEY,
    UNVERIFIED,
    ChangePending,
    Lifecycle,
    wait_words,
)
from ..sessions import SessionRecord, public_id
from ..throttle import Throttled
from ..tokens import MAX_TOKEN
from ..users import EmailTaken, User, email_problem, normalize_email
from ..users.passwords import password_problem
from . import api, pages
from .base import ApiHandler, BaseHandler
from .decorators import admin_required, authenticated
from .pages import PageHandler, safe_next
from .signin import ACCOUNT_DISABLED
from .validation import ApiError, new_password_field, required_text, text_field, try_again

M = TypeVar("M", bound=Callable[..., Any])

REAUTH_REQUIRED = "Re-authentication required"
BAD_LINK = "This link is invalid, used or expired"
FORGOT_SENT = "If an account has this address, a link to reset its password is on its way"
RESEND_SENT = "If an unverified account has this address, a new verification link is on its way"
TOO_MANY = "Too many emails asked for from this address"


def lifecycle(handler: BaseHandler) -> Lifecycle:
    return handler.services.lifecycle


def recently_checked(handler: BaseHandler) -> bool:
    """Whether this session's user proved the password within ``security.reauth_ttl``: by
    signing in (the session was made then) or through the re-authentication form."""
    session, cycle = handler.session, lifecycle(handler)
    record = session.record
    signed_in_at = record.created_at if record is not None else None
    return cycle.fresh(session.get(REAUTH_KEY)) or cycle.fresh(signed_in_at)


def reauth_required(method: M) -> M:
    """Only for a signed-in user who proved the password recently: else 403
    ``{"error": "Re-authentication required"}``, or for pages the password form, which then
    returns to the page (``reauth_return``, else this one)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.current_user is None:
            return self.deny(401, "Not authenticated")
        if recently_checked(self):
            return method(self, *args, **kwargs)
        if self.api:
            return self.deny(403, REAUTH_REQUIRED)
        back = getattr(self, "reauth_return", None) or self.request.uri or "/"
        next_url = urllib.parse.quote(back, safe="/")
        return self.redirect(f"{self.url('/reauth')}?next={next_url}")

    return wrapper  # type: ignore[return-value]


def token_field(body: dict[str, Any]) -> str:
    value = text_field(body, "token", 1024)
    if not value or len(value) > MAX_TOKEN:
        raise ApiError(400, BAD_LINK if value else "token is required")
    return value


def email_field(body: dict[str, Any], name: str = "email") -> str:
    email = required_text(body, name, 254)
    problem = email_problem(email)
    if problem:
        raise ApiError(400, problem.replace("email", name, 1))
    return email


def throttled(error: Throttled) -> ApiError:
    return ApiError(429, try_again(TOO_MANY, error.retry_after), error.retry_after)


async def register_quietly(handler: BaseHandler, email: str, name: str, password: str) -> None:
    """Registration with users.require_verified_email on: the same answer for any address."""
    try:
        await lifecycle(handler).register_quietly(email, name, password, handler.origin())
    except Throttled as error:
        message = try_again("Too many registrations from this address", error.retry_after)
        raise ApiError(429, message, error.retry_after) from None


async def own_session(handler: BaseHandler, session_id: str) -> SessionRecord | None:
    for record in await handler.services.sessions.list_user(handler.current_user.id):
        if public_id(record.key) == session_id:
            return record
    return None


def session_name(value: object) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "name must be a string")
    name = " ".join(value.split())
    if len(name) > MAX_SESSION_NAME:
        raise ApiError(400, f"name must be at most {MAX_SESSION_NAME} characters")
    if not name.isprintable():
        raise ApiError(400, "name must not contain control characters")
    return name


# -- the JSON API ---------------------------------------------------------------------------------


class ForgotHandler(ApiHandler):
    async def post(self) -> None:
        email = email_field(self.json_body())
        try:
            await lifecycle(self).forgot(email, self.origin())
        except Throttled as error:
            raise throttled(error) from None
        self.send_json({"message": FORGOT_SENT})


class ResetHandler(ApiHandler):
    async def post(self) -> None:
        body = self.json_body()
        token = token_field(body)
        password = new_password_field(body, "newPassword")
        user = await self.unless_abandoned(lifecycle(self).reset(token, password, self.origin()))
        if user is None:
            raise ApiError(400, BAD_LINK)
        self.send_json({"message": "Password changed; every session was signed out"})


class ResendVerificationHandler(ApiHandler):
    async def post(self) -> None:
        email = email_field(self.json_body())
        try:
            await lifecycle(self).resend_verification(email, self.origin())
        except Throttled as error:
            raise throttled(error) from None
        self.send_json({"message": RESEND_SENT})


class VerifyHandler(ApiHandler):
    async def post(self) -> None:
        user = await lifecycle(self).verify(token_field(self.json_body()), self.origin())
        if user is None:
            raise ApiError(400, BAD_LINK)
        self.send_json({"message": "Email address verified", "email": user.email})


class ReauthHandler(ApiHandler):
    @authenticated
    async def post(self) -> None:
        password = required_text(self.json_body(), "password", 1024)
        user = await self.services.users.get(self.current_user.id)
        if user is None:
            raise ApiError(401, "Not authenticated")
        if not await reauthenticate(self, user, password):
            raise ApiError(401, "Password is incorrect")
        ttl = self.services.settings["security.reauth_ttl"]
        self.send_json({"message": "Re-authenticated", "expiresIn": ttl})


async def reauthenticate(handler: BaseHandler, user: User, password: str) -> bool:
    cycle = lifecycle(handler)
    try:
        ok = await handler.unless_abandoned(cycle.reauthenticate(user, password, handler.origin()))
    except Throttled as error:
        message = try_again("Too many failed password checks", error.retry_after)
        raise ApiError(429, message, error.retry_after) from None
    except AccountDisabled:
        raise ApiError(401, ACCOUNT_DISABLED) from None
    if ok:
        handler.session[REAUTH_KEY] = cycle.clock()
    return ok


async def change_email(handler: BaseHandler, new_email: str) -> None:
    user = await handler.services.users.get(handler.current_user.id)
    if user is None:
        raise ApiError(401, "Not authenticated")
    if normalize_email(new_email) == user.email:
        raise ApiError(400, "newEmail is your address already")
    cycle = lifecycle(handler)
    try:
        await cycle.request_email_change(user, new_email, handler.origin())
    except ChangePending as pending:
        wait = wait_words(pending.until - cycle.clock())
        message = f"Your address changed recently: it can change again in {wait}"
        raise ApiError(409, message) from None


class EmailHandler(ApiHandler):
    @reauth_required
    async def post(self) -> None:
        try:
            await change_email(self, email_field(self.json_body(), "newEmail"))
        except Throttled as error:
            raise throttled(error) from None
        message = "A confirmation link was sent to the new address"
        self.send_json({"message": message}, status=202)


class SessionsHandler(api.SessionsHandler):
    """The session listing, with each session's readable device and name."""

    @authenticated
    async def get(self) -> None:
        self.send_json({"sessions": await described_sessions(self)})


async def described_sessions(handler: BaseHandler) -> list[dict[str, object]]:
    records = await handler.services.sessions.list_user(handler.current_user.id)
    names = await lifecycle(handler).session_names(records)
    current = handler.session.key
    return [{**api.describe(r, current), "name": names.get(r.key, "")} for r in records]


class SessionHandler(api.SessionHandler):
    """DELETE ends one of the user's sessions; PATCH ``{name}`` names it ("" removes the name)."""

    @authenticated
    async def patch(self, session_id: str) -> None:
        body = self.json_body()
        if "name" not in body:
            raise ApiError(400, "name is required")
        name = session_name(body["name"])
        record = await own_session(self, session_id)
        if record is None:
            raise ApiError(404, "Session not found")
        try:
            await lifecycle(self).name_session(self.current_user.id, record, name, self.origin())
        except Throttled as error:
            message = try_again("Too many session renames", error.retry_after)
            raise ApiError(429, message, error.retry_after) from None
        self.send_json({**api.describe(record, self.session.key), "name": name})

    @authenticated
    async def delete(self, session_id: str) -> None:
        """Another session of the user's ends only after a recent password check (as for all
        others at once); the current one any time (that is signing out)."""
        if not is_current(self, session_id) and not recently_checked(self):
            raise ApiError(403, REAUTH_REQUIRED)
        await super().delete(session_id)


def is_current(handler: BaseHandler, session_id: str) -> bool:
    key = handler.session.key
    return key is not None and session_id == public_id(key)


class RevokeOthersHandler(api.RevokeOthersHandler):
    @reauth_required
    async def post(self) -> None:
        await super().post()


async def admin_send(handler: BaseHandler, user_id: str, what: str) -> User:
    user = await handler.services.users.get(user_id)
    if user is None:
        raise ApiError(404, "User not found")
    origin, cycle = handler.origin(as_admin=True), lifecycle(handler)
    if what == "send-reset":
        await cycle.send_reset(user, origin)
    else:
        await cycle.send_verification(user, origin)
    return user


class AdminSendResetHandler(ApiHandler):
    what = "send-reset"

    @admin_required
    async def post(self, user_id: str) -> None:
        user = await admin_send(self, user_id, self.what)
        self.send_json({"message": f"Sent to {user.email}"}, status=202)


class AdminSendVerificationHandler(AdminSendResetHandler):
    what = "send-verification"


# -- pages ----------------------------------------------------------------------------------------


class AccountPage(PageHandler):
    def notice(self, title: str, message: str, status: int = 200, **link: str) -> None:
        self.set_status(status)
        self.render(
            "account_notice.html",
            title=title,
            message=message,
            error=status >= 400,
            link=link.get("link", ""),
            link_text=link.get("text", ""),
        )

    def bad_link(self, again: str = "/forgot", text: str = "Ask for a new link") -> None:
        self.notice("Link not valid", BAD_LINK + ".", 400, link=again, text=text)

    def email_form(self, kind: str, error: str = "", notice: str = "", email: str = "") -> None:
        title, intro, label, button, action = EMAIL_FORMS[kind]
        self.render(
            "account_email_form.html",
            title=title,
            intro=intro,
            field_label=label,
            button=button,
            action=action,
            error=error,
            notice=notice,
            email=email,
        )

    async def email_request(self, kind: str, send: Callable[..., Any], sent: str) -> None:
        email = self.form("email", 254)
        problem = email_problem(email)
        if problem:
            self.set_status(400)
            self.email_form(kind, error=problem.capitalize() + ".", email=email)
            return
        try:
            await send(email, self.origin())
        except Throttled as error:
            self.set_status(429)
            self.set_header("Retry-After", str(error.retry_after))
            message = try_again(TOO_MANY, error.retry_after)
            self.email_form(kind, error=message + ".", email=email)
            return
        except ApiError as error:  # e.g. the new address is the current one, or changed recently
            if error.status_code >= 500:
                raise
            self.set_status(error.status_code)
            self.email_form(kind, error=error.message.removeprefix("newEmail ") + ".", email=email)
            return
        self.email_form(kind, notice=sent + ".")


EMAIL_FORMS = {
    "forgot": (
        "Forgot your password?",
        "Enter the address of your account: we will email you a link to set a new password.",
        "Email",
        "Send the link",
        "/forgot",
    ),
    "resend": (
        "Verify your email address",
        "Enter the address of your account: we will email you a new verification link.",
        "Email",
        "Send a new link",
        "/verify/resend",
    ),
    "change": (
        "Change your email address",
        "We will email a confirmation link to the new address; it changes when you follow it.",
        "New email address",
        "Send the confirmation link",
        "/email",
    ),
}


class ForgotPage(AccountPage):
    def get(self) -> None:
        self.email_form("forgot")

    async def post(self) -> None:
        await self.email_request("forgot", lifecycle(self).forgot, FORGOT_SENT)


class ResendPage(AccountPage):
    def get(self) -> None:
        self.email_form("resend")

    async def post(self) -> None:
        cycle = lifecycle(self)
        await self.email_request("resend", cycle.resend_verification, RESEND_SENT)


class ResetPage(AccountPage):
    def show(self, token: str, error: str = "") -> None:
        self.render(
            "account_password_form.html",
            title="Set a new password",
            intro="Every session of your account will be signed out.",
            action="/reset",
            hidden={"token": token},
            field_label="New password (8 to 1024 characters)",
            autocomplete="new-password",
            button="Set the password",
            error=error,
        )

    async def get(self) -> None:
        token = self.get_query_argument("token", "")
        if not await lifecycle(self).reset_valid(token):
            self.bad_link()
            return
        self.show(token)

    async def post(self) -> None:
        token = self.form("token", MAX_TOKEN + 1)
        password = self.password()
        problem = password_problem(password)
        if problem:
            self.set_status(400)
            self.show(token, problem.capitalize() + ".")
            return
        cycle = lifecycle(self)
        if await self.unless_abandoned(cycle.reset(token, password, self.origin())) is None:
            self.bad_link()
            return
        self.redirect(self.url("/login?ended=password"))


class ReauthPage(AccountPage):
    def next_url(self) -> str:
        return safe_next(self.get_argument("next", None), self.url("/dashboard"))

    def show(self, error: str = "") -> None:
        self.render(
            "account_password_form.html",
            title="Confirm your password",
            intro="For your security, enter your password again to continue.",
            action="/reauth",
            hidden={"next": self.next_url()},
            field_label="Password",
            autocomplete="current-password",
            button="Continue",
            error=error,
        )

    @authenticated
    def get(self) -> None:
        self.show()

    @authenticated
    async def post(self) -> None:
        user = await self.services.users.get(self.current_user.id)
        password = self.password()
        if user is None or not password or not await reauthenticate(self, user, password):
            self.set_status(401)
            self.show("That password is not right.")
            return
        self.redirect(self.next_url())


class EmailPage(AccountPage):
    @reauth_required
    def get(self) -> None:
        self.email_form("change")

    @reauth_required
    async def post(self) -> None:
        async def send(email: str, origin: Any) -> None:
            await change_email(self, email)

        await self.email_request("change", send, "A confirmation link was sent to the new address")


class LinkActionPage(AccountPage):
    """A page an emailed link opens: a button confirms (mail scanners that open links change
    nothing), then the action runs."""

    title = ""
    message = ""
    button = ""
    style = ""
    ends_sessions = True  # every session of the user ends with the action

    async def get(self) -> None:
        self.render(
            "account_link_action.html",
            title=self.title,
            message=self.message,
            action=self.request.path.removeprefix(self.url("")),
            token=self.get_query_argument("token", "")[: MAX_TOKEN + 1],
            button=self.button,
            style=self.style,
        )

    async def post(self) -> None:
        token = self.form("token", MAX_TOKEN + 1)
        try:
            user = await self.act(token)
        except EmailTaken:
            message = "That address now belongs to another account: nothing was changed."
            self.notice("Address taken", message, 409)
            return
        if user is None:
            self.bad()
            return
        if self.ends_sessions:
            self.current_user = None
        self.finished(user)

    def bad(self) -> None:
        self.bad_link("/login", "Sign in")

    async def act(self, token: str) -> User | None:
        raise NotImplementedError

    def finished(self, user: User) -> None:
        raise NotImplementedError


class VerifyPage(LinkActionPage):
    title = "Verify your email address"
    message = "Confirm that this address is yours?"
    button = "Verify my address"
    ends_sessions = False

    async def act(self, token: str) -> User | None:
        return await lifecycle(self).verify(token, self.origin())

    def bad(self) -> None:
        self.bad_link("/verify/resend")

    def finished(self, user: User) -> None:
        message = f"{user.email} is verified. Thank you."
        self.notice("Address verified", message, link="/dashboard", text="Continue")


class ConfirmEmailPage(LinkActionPage):
    title = "Confirm your new address"
    message = "Use this address for your account from now on? Every session will be signed out."
    button = "Confirm the new address"

    async def act(self, token: str) -> User | None:
        return await lifecycle(self).confirm_email_change(token, self.origin())

    def finished(self, user: User) -> None:
        message = f"Your address is now {user.email}. Sign in with it."
        self.notice("Address changed", message, link="/login", text="Sign in")


class UndoEmailPage(LinkActionPage):
    title = "Undo the email change"
    message = (
        "Put your previous address back, sign out every session and get a link to set a new"
        " password?"
    )
    button = "Undo the change"
    style = "danger"

    async def act(self, token: str) -> User | None:
        return await lifecycle(self).undo_email_change(token, self.origin())

    def finished(self, user: User) -> None:
        message = f"Your address is {user.email} again; every session was signed out and a link"
        message += " to set a new password was sent to it."
        self.notice("Change undone", message)


class NotMePage(LinkActionPage):
    title = "This wasn't me"
    message = "Sign out every session of your account and get a link to set a new password?"
    button = "Sign out everywhere"
    style = "danger"

    async def act(self, token: str) -> User | None:
        return await lifecycle(self).not_me(token, self.origin())

    def finished(self, user: User) -> None:
        message = "Every session was signed out, and a link to set a new password was sent to "
        self.notice("Account secured", message + f"{user.email}.")


class SessionNamePage(AccountPage):
    @authenticated
    async def post(self, session_id: str) -> None:
        try:
            name = session_name(self.form("name", MAX_SESSION_NAME * 4))
        except ApiError as error:
            self.notice("Name not saved", error.message + ".", 400, link="/sessions", text="Back")
            return
        record = await own_session(self, session_id)
        if record is not None:
            try:
                await lifecycle(self).name_session(
                    self.current_user.id, record, name, self.origin()
                )
            except Throttled as error:
                message = try_again("Too many session renames", error.retry_after) + "."
                self.set_header("Retry-After", str(error.retry_after))
                self.notice("Name not saved", message, 429, link="/sessions", text="Back")
                return
        self.redirect(self.url("/sessions"))


class RevokeSessionPage(pages.RevokeSessionPage):
    """Another session ends only after a recent password check; the current one any time."""

    @authenticated
    async def post(self, session_id: str) -> None:
        if not is_current(self, session_id) and not recently_checked(self):
            self.redirect(f"{self.url('/reauth')}?next={urllib.parse.quote(self.url('/sessions'))}")
            return
        await super().post(session_id)


class RevokeOthersPage(pages.RevokeOthersPage):
    reauth_return = "/sessions"

    @reauth_required
    async def post(self) -> None:
        await super().post()


class AdminSendPage(PageHandler):
    @admin_required
    async def post(self, user_id: str, what: str) -> None:
        await admin_send(self, user_id, what)
        self.redirect(self.url("/admin"))


__all__ = ["CHECK_EMAIL", "UNVERIFIED", "EmailNotVerified", "api_routes", "page_routes"]

ID = r"([A-Za-z0-9_-]{1,64})"
SEND = r"(send-reset|send-verification)"


def api_routes() -> list[tuple[str, Any]]:
    """Listed before the other API routes: some extend theirs (the session listing, PATCH)."""
    return [
        (r"/api/password/forgot", ForgotHandler),
        (r"/api/password/reset", ResetHandler),
        (r"/api/verify", VerifyHandler),
        (r"/api/verify/resend", ResendVerificationHandler),
        (r"/api/reauth", ReauthHandler),
        (r"/api/email", EmailHandler),
        (r"/api/sessions", SessionsHandler),
        (r"/api/sessions/revoke-others", RevokeOthersHandler),
        (rf"/api/sessions/{ID}", SessionHandler),
        (rf"/api/admin/users/{ID}/send-reset", AdminSendResetHandler),
        (rf"/api/admin/users/{ID}/send-verification", AdminSendVerificationHandler),
    ]


def page_routes() -> list[tuple[str, Any]]:
    return [
        (r"/forgot", ForgotPage),
        (r"/reset", ResetPage),
        (r"/verify", VerifyPage),
        (r"/verify/resend", ResendPage),
        (r"/reauth", ReauthPage),
        (r"/email", EmailPage),
        (r"/confirm-email", ConfirmEmailPage),
        (r"/undo-email", UndoEmailPage),
        (r"/not-me", NotMePage),
        (r"/sessions/([0-9a-f]{32})/name", SessionNamePage),
        (r"/sessions/([0-9a-f]{32})/revoke", RevokeSessionPage),
        (r"/sessions/revoke-others", RevokeOthersPage),
        (rf"/admin/users/{ID}/{SEND}", AdminSendPage),
    ]
