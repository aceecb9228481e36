"""Second factors as JSON API and pages: the second step of a sign-in, turning an authenticator
app on and off, recovery codes, and an admin's view and reset. The rules are in ``mfa/``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web

from ..mfa import FactorStatus, codes, totp
from ..passkeys import credential_problem
from ..services import Services
from ..throttle import Throttled
from ..users import User
from .base import ApiHandler, BaseHandler
from .decorators import admin_required, authenticated
from .flash import Kind
from .pages import PageHandler, safe_next
from .recovery import reauth_required
from .validation import ApiError, try_again

NO_PENDING = "No sign-in is waiting for a second step"
INVALID_CODE = "Invalid code"
CHANGED = "The account changed meanwhile, sign in again"
AMR = {"totp": "otp", "recovery": "recovery", "passkey": "passkey"}  # method -> session amr
MAX_CODE = 64


def passkey_check(
    services: Services, credential: object, user_id: str
) -> Callable[[], Awaitable[bool]]:
    """A check that the passkey response ``credential`` proves ``user_id``; 400 at once for a
    response that cannot be one (naming what is malformed)."""
    passkeys = services.passkeys
    problem = credential_problem(credential)
    if problem is not None or not isinstance(credential, dict):
        raise ApiError(400, problem or "passkey must be an object")

    async def check() -> bool:
        return await passkeys.verify_authentication(credential, user_id) == user_id

    return check


async def second_step(handler: BaseHandler, method: str, value: Any) -> User:
    """Finish the sign-in this browser started with ``method`` (``totp``, ``recovery``,
    ``passkey``): the real session is made and the pending state used up. 401 for a wrong code
    (the pending state stays), 429 past the throttle."""
    token = handler.pending_token()
    pending = await handler.pending_sign_in()
    if token is None or pending is None:
        raise ApiError(401, NO_PENDING)
    user, mfa, origin = pending.user, handler.services.mfa, handler.origin()
    checks: dict[str, Callable[[], Awaitable[bool]]] = {
        "totp": lambda: mfa.check_totp(user.id, value),
        "recovery": lambda: mfa.check_recovery_code(user, value, origin),
    }
    check = checks.get(method) or passkey_check(handler.services, value, user.id)
    try:
        proven = await handler.unless_abandoned(mfa.attempt(user, method, origin, check))
    except Throttled as throttled:
        message = try_again("Too many failed sign-ins", throttled.retry_after)
        raise ApiError(429, message, throttled.retry_after) from None
    if not proven:
        raise ApiError(401, "Passkey not accepted" if method == "passkey" else INVALID_CODE)
    if not await mfa.take_pending(token):  # a concurrent second step won
        raise ApiError(401, NO_PENDING)
    handler.clear_pending_sign_in()
    signed_in = await handler.finish_sign_in(user, pending.remember_me, ["pwd", AMR[method]])
    if signed_in is None:
        raise ApiError(401, CHANGED)
    return signed_in


async def signed_in_user(handler: BaseHandler) -> User:
    user = await handler.services.users.get(handler.current_user.id)
    if user is None:
        raise ApiError(401, "Not authenticated")
    return user


async def confirm_totp(handler: BaseHandler, code: str) -> list[str]:
    """Turn the app being enrolled on; the new recovery codes (none if the user had some)."""
    user = await signed_in_user(handler)
    mfa = handler.services.mfa
    if await mfa.enrolment_secret(user.id) is None:
        raise ApiError(409, "No authenticator app is being set up: start again")
    recovery = await mfa.confirm_totp(user, code.strip(), handler.origin())
    if recovery is None:
        raise ApiError(400, INVALID_CODE)
    handler.second_factor_used("otp")
    return recovery


def code_field(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string")
    if len(value) > MAX_CODE:
        raise ApiError(400, f"{name} must be at most {MAX_CODE} characters")
    return value


# -- the JSON API ---------------------------------------------------------------------------------


class LoginMfaHandler(ApiHandler):
    FIELDS = {"code": "totp", "recoveryCode": "recovery", "passkey": "passkey"}

    async def post(self) -> None:
        body = self.json_body()
        given = [name for name in self.FIELDS if name in body]
        if len(given) != 1:
            raise ApiError(400, "Give one of code, recoveryCode or passkey")
        name = given[0]
        value = body[name] if name == "passkey" else code_field(body, name)
        user = await second_step(self, self.FIELDS[name], value)
        summary = {"id": user.id, "email": user.email, "name": user.name, "role": user.role}
        self.send_json({"message": "Logged in successfully", "user": summary})


class MfaHandler(ApiHandler):
    @authenticated
    async def get(self) -> None:
        status = await self.services.mfa.status(self.current_user.id)
        self.send_json({**status.public(), "signedInWithMfa": self.current_user.mfa})


class TotpHandler(ApiHandler):
    @reauth_required
    async def post(self) -> None:
        """Start setting up an authenticator app: its secret, as text and as an otpauth URI."""
        user = await signed_in_user(self)
        secret = await self.services.mfa.begin_totp(user)
        uri = self.services.mfa.uri(user, secret)
        self.send_json({"secret": secret, "otpauthUri": uri})

    @reauth_required
    async def delete(self) -> None:
        user = await signed_in_user(self)
        if not await self.services.mfa.remove_totp(user, self.origin()):
            raise ApiError(404, "No authenticator app is set up")
        self.send_json({"message": "Authenticator app removed; your other sessions ended"})


class TotpConfirmHandler(ApiHandler):
    @reauth_required
    async def post(self) -> None:
        body = self.json_body()
        if "code" not in body:
            raise ApiError(400, "code is required")
        recovery = await confirm_totp(self, code_field(body, "code"))
        self.send_json({"message": "Authenticator app turned on", "recoveryCodes": recovery})


class RecoveryCodesHandler(ApiHandler):
    @reauth_required
    async def post(self) -> None:
        user = await signed_in_user(self)
        fresh = await self.services.mfa.regenerate_recovery_codes(user, self.origin())
        if fresh is None:
            raise ApiError(409, "Turn on a second factor first")
        self.send_json({"recoveryCodes": fresh})


class AdminUserMfaHandler(ApiHandler):
    async def user(self, user_id: str) -> User:
        user = await self.services.users.get(user_id)
        if user is None:
            raise ApiError(404, "User not found")
        return user

    @admin_required
    async def get(self, user_id: str) -> None:
        user = await self.user(user_id)
        self.send_json((await self.services.mfa.status(user.id)).public())

    @admin_required
    async def delete(self, user_id: str) -> None:
        user = await self.user(user_id)
        removed = await self.services.mfa.reset(user, self.origin(as_admin=True))
        self.send_json({"reset": removed})


# -- pages ----------------------------------------------------------------------------------------


class LoginMfaPage(PageHandler):
    def next_url(self) -> str:
        return safe_next(self.get_argument("next", None), self.url("/dashboard"))

    def show(self, problem: str = "", methods: list[str] | None = None) -> None:
        self.render(
            "login_mfa.html", problem=problem, next_url=self.next_url(), methods=methods or []
        )

    async def get(self) -> None:
        pending = await self.pending_sign_in()
        if pending is None:
            self.redirect(self.url("/login"))
            return
        self.show(methods=pending.methods)

    async def post(self) -> None:
        typed = self.form("code", MAX_CODE)
        method = "totp" if totp.is_code("".join(typed.split())) else "recovery"
        try:
            user = await second_step(self, method, "".join(typed.split()))
        except ApiError as refused:
            if refused.status_code == 401 and refused.message in (NO_PENDING, CHANGED):
                self.done("/login", Kind.WARNING, "Your sign-in expired. Please start again.")
                return
            if refused.retry_after is not None:
                wait = self.refused_for(refused.retry_after)
                problem = f"Too many failed sign-ins. Try again in {wait}."
            else:
                self.set_status(refused.status_code)
                problem = "That code is not right. Try the current one, or a recovery code."
            pending = await self.pending_sign_in()
            self.show(problem, pending.methods if pending else [])
            return
        if method == "recovery":
            left = (await self.services.mfa.status(user.id)).recovery_codes
            if left <= codes.FEW:
                self.flash(Kind.WARNING, few_codes(left))
        self.redirect(self.next_url())


def few_codes(left: int) -> str:
    return (
        f"You have {left} recovery {'code' if left == 1 else 'codes'} left:"
        " make new ones on the two-step sign-in page."
    )


class MfaPage(PageHandler):
    @authenticated
    async def get(self) -> None:
        status = await self.services.mfa.status(self.current_user.id)
        self.render("mfa.html", status=status, warning=mfa_warning(status))


def mfa_warning(status: FactorStatus) -> str:
    return few_codes(status.recovery_codes) if status.few_recovery_codes else ""


class TotpPage(PageHandler):
    def show(self, user: User, secret: str, problem: str = "") -> None:
        grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
        self.render(
            "mfa_totp.html",
            secret=grouped,
            uri=self.services.mfa.uri(user, secret),
            problem=problem,
        )

    @reauth_required
    async def get(self) -> None:
        user = await signed_in_user(self)
        self.show(user, await self.services.mfa.begin_totp(user))

    @reauth_required
    async def post(self) -> None:
        code = "".join(self.form("code", MAX_CODE).split())
        try:
            recovery = await confirm_totp(self, code)
        except ApiError as refused:
            user = await signed_in_user(self)
            secret = await self.services.mfa.enrolment_secret(user.id)
            if secret is None:
                self.done("/account/mfa", Kind.ERROR, "The setup expired. Please start again.")
                return
            self.set_status(refused.status_code)
            self.show(user, secret, "That code is not right. Enter the current code of the app.")
            return
        if not recovery:
            self.done("/account/mfa", Kind.SUCCESS, "Your authenticator app is turned on.")
            return
        self.render("mfa_codes.html", codes=recovery, fresh=True)


class TotpQrCode(BaseHandler):
    @authenticated
    async def get(self) -> None:
        user = await signed_in_user(self)
        secret = await self.services.mfa.enrolment_secret(user.id)
        if secret is None:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "image/svg+xml")
        self.finish(totp.qr_svg(self.services.mfa.uri(user, secret)))


class TotpRemovePage(PageHandler):
    reauth_return = "/account/mfa"

    @reauth_required
    async def post(self) -> None:
        if not self.confirmed:
            self.confirm(
                "Turn off the authenticator app?",
                "Signing in will need only your password; your other devices are signed out.",
                "Turn off",
                self.url("/account/mfa"),
            )
            return
        user = await signed_in_user(self)
        if await self.services.mfa.remove_totp(user, self.origin()):
            self.done("/account/mfa", Kind.SUCCESS, "The authenticator app was removed.")
        else:
            self.done("/account/mfa", Kind.INFO, "No authenticator app was set up.")


class RecoveryCodesPage(PageHandler):
    reauth_return = "/account/mfa"

    @reauth_required
    async def post(self) -> None:
        if not self.confirmed:
            self.confirm(
                "Make new recovery codes?",
                "Your current recovery codes stop working at once.",
                "Make new codes",
                self.url("/account/mfa"),
            )
            return
        user = await signed_in_user(self)
        fresh = await self.services.mfa.regenerate_recovery_codes(user, self.origin())
        if fresh is None:
            self.done("/account/mfa", Kind.ERROR, "Turn on an authenticator app first.")
            return
        self.render("mfa_codes.html", codes=fresh, fresh=False)


def api_routes() -> list[tuple[str, Any]]:
    user_id = r"([A-Za-z0-9_-]{1,64})"
    return [
        (r"/api/login/mfa", LoginMfaHandler),
        (r"/api/mfa", MfaHandler),
        (r"/api/mfa/totp", TotpHandler),
        (r"/api/mfa/totp/confirm", TotpConfirmHandler),
        (r"/api/mfa/recovery-codes", RecoveryCodesHandler),
        (rf"/api/admin/users/{user_id}/mfa", AdminUserMfaHandler),
    ]


def page_routes() -> list[tuple[str, Any]]:
    return [
        (r"/login/mfa", LoginMfaPage),
        (r"/account/mfa", MfaPage),
        (r"/account/mfa/totp", TotpPage),
        (r"/account/mfa/totp/qr\.svg", TotpQrCode),
        (r"/account/mfa/totp/remove", TotpRemovePage),
        (r"/account/mfa/recovery-codes", RecoveryCodesPage),
    ]
