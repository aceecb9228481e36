"""Signing in and out, registering, changing a password: the seed's login system."""

from __future__ import annotations

from ..accounts import AccountChanged, AccountDisabled, EmailNotVerified, SecondFactorRequired
from ..throttle import Throttled
from ..users import EmailTaken, email_problem, name_problem
from . import recovery
from .base import ApiHandler
from .decorators import authenticated
from .signin import ACCOUNT_DISABLED
from .validation import (
    ApiError,
    bool_field,
    new_password_field,
    password_field,
    required_text,
    try_again,
)

MAX_NAME = 100


def summary(user) -> dict[str, str]:
    return {"id": user.id, "email": user.email, "name": user.name, "role": user.role}


class LoginHandler(ApiHandler):
    async def post(self) -> None:
        body = self.json_body()
        email = required_text(body, "email", 254)
        password = password_field(body, "password")
        remember_me = bool_field(body, "rememberMe") or False
        try:
            user = await self.log_in(email, password, remember_me)
        except EmailNotVerified:
            raise ApiError(403, recovery.UNVERIFIED) from None
        except SecondFactorRequired as needed:  # the pending cookie is set: POST /api/login/mfa
            self.send_json({"mfaRequired": True, "methods": needed.methods})
            return
        if user is None:
            raise ApiError(401, "Invalid credentials")
        self.send_json({"message": "Logged in successfully", "user": summary(user)})


class LogoutHandler(ApiHandler):
    async def post(self) -> None:
        await self.sign_out()
        self.send_json({"message": "Logged out successfully"})


class RegisterHandler(ApiHandler):
    async def post(self) -> None:
        body = self.json_body()
        email = required_text(body, "email", 254)
        name = required_text(body, "name", MAX_NAME)
        problem = email_problem(email) or name_problem(name)
        if problem:
            raise ApiError(400, problem)
        password = new_password_field(body, "password")
        if self.services.lifecycle.quiet_registration:  # tells no one if the address is taken
            await recovery.register_quietly(self, email, name, password)
            self.send_json({"message": recovery.CHECK_EMAIL}, status=202)
            return
        try:
            user = await self.register(email, name, password)
        except EmailTaken:
            raise ApiError(409, "Email already registered") from None
        self.send_json({"user": summary(user)}, status=201)


class PasswordHandler(ApiHandler):
    @authenticated
    async def post(self) -> None:
        body = self.json_body()
        current = password_field(body, "currentPassword")
        new = new_password_field(body, "newPassword")
        user = await self.services.users.get(self.current_user.id)
        if user is None:
            raise ApiError(401, "Not authenticated")
        try:
            revoked = await self.unless_abandoned(
                self.services.accounts.change_password(user, current, new, self.origin())
            )
        except Throttled as throttled:
            message = try_again("Too many failed password checks", throttled.retry_after)
            raise ApiError(429, message, throttled.retry_after) from None
        except AccountDisabled:  # disabled since this session began
            raise ApiError(401, ACCOUNT_DISABLED) from None
        except AccountChanged:
            raise ApiError(409, "The account changed meanwhile, sign in again") from None
        if revoked is None:
            raise ApiError(401, "Current password is incorrect")
        self.session.regenerate()
        self.send_json({"message": "Password changed", "revokedSessions": revoked})
