"""Passkeys as JSON API and pages: register (after a recent password check), list, rename and
remove them (removal also after a recent check), and sign in with one and no password. The use
cases are in ``passkeys/``; the browser side is ``static/js/passkeys.js``."""

from __future__ import annotations

from typing import Any

from ..accounts import EmailNotVerified
from ..passkeys import (
    AUTHENTICATE,
    MAX_NAME,
    MAX_PER_USER,
    REGISTER,
    Passkey,
    Passkeys,
    TooManyPasskeys,
    credential_problem,
    passkey_name,
)
from ..throttle import Throttled
from ..users import User
from . import recovery
from .auth import summary
from .base import ApiHandler, BaseHandler
from .decorators import authenticated
from .flash import Kind
from .pages import ASK, PageHandler
from .recovery import reauth_required
from .validation import ApiError, bool_field, try_again

NOT_ACCEPTED = "Passkey not accepted: start again"
NOT_RECOGNISED = "Passkey not recognised"
NOT_FOUND = "Passkey not found"
TOO_MANY = f"An account has at most {MAX_PER_USER} passkeys: remove one first"


def passkeys(handler: BaseHandler) -> Passkeys:
    return handler.services.passkeys


def credential_field(body: dict[str, Any], ceremony: str = AUTHENTICATE) -> dict[str, Any]:
    """The browser's response, checked for shape; a 400 saying what is malformed."""
    if "credential" not in body:
        raise ApiError(400, "Credential is required")
    credential = body["credential"]
    problem = credential_problem(credential, ceremony)
    if problem:
        raise ApiError(400, problem)
    assert isinstance(credential, dict)
    return credential


def name_field(value: object) -> str:
    try:
        return passkey_name(value)
    except ValueError as error:
        raise ApiError(400, str(error)) from None


def too_many(what: str, error: Throttled) -> ApiError:
    return ApiError(429, try_again(what, error.retry_after), error.retry_after)


async def signed_in_user(handler: BaseHandler) -> User:
    user = await handler.services.users.get(handler.current_user.id)
    if user is None:
        raise ApiError(401, "Not authenticated")
    return user


async def own_passkey(handler: BaseHandler, passkey_id: str) -> Passkey:
    passkey = await passkeys(handler).find(handler.current_user.id, passkey_id)
    if passkey is None:
        raise ApiError(404, NOT_FOUND)
    return passkey


# -- the JSON API ---------------------------------------------------------------------------------


class RegisterOptionsHandler(ApiHandler):
    @reauth_required
    async def post(self) -> None:
        user = await signed_in_user(self)
        try:
            self.send_json(await passkeys(self).registration_options(user, self.origin()))
        except TooManyPasskeys:
            raise ApiError(409, TOO_MANY) from None
        except Throttled as error:
            raise too_many("Too many passkey challenges asked for", error) from None


class RegisterHandler(ApiHandler):
    @reauth_required
    async def post(self) -> None:
        body = self.json_body()
        credential = credential_field(body, REGISTER)
        name = name_field(body.get("name", ""))
        user = await signed_in_user(self)
        try:
            passkey = await passkeys(self).register(user, credential, name, self.origin())
        except TooManyPasskeys:
            raise ApiError(409, TOO_MANY) from None
        if passkey is None:
            raise ApiError(400, NOT_ACCEPTED)
        self.send_json({"passkey": passkey.public()}, 201)


class PasskeysHandler(ApiHandler):
    @authenticated
    async def get(self) -> None:
        found = await passkeys(self).of_user(self.current_user.id)
        self.send_json({"passkeys": [passkey.public() for passkey in found]})


class PasskeyHandler(ApiHandler):
    @authenticated
    async def patch(self, passkey_id: str) -> None:
        body = self.json_body()
        if "name" not in body:
            raise ApiError(400, "Name is required")
        name = name_field(body["name"])
        if not name:
            raise ApiError(400, "Name is required")
        passkey = await own_passkey(self, passkey_id)
        user = await signed_in_user(self)
        try:
            renamed = await passkeys(self).rename(user, passkey, name, self.origin())
        except Throttled as error:
            raise too_many("Too many passkey renames", error) from None
        self.send_json({"passkey": renamed.public()})

    @reauth_required
    async def delete(self, passkey_id: str) -> None:
        passkey = await own_passkey(self, passkey_id)
        user = await signed_in_user(self)
        revoked = await passkeys(self).remove(user, passkey, self.origin())
        if revoked is None:
            raise ApiError(404, NOT_FOUND)
        self.send_json({"message": "Passkey removed", "revoked": revoked})


class LoginOptionsHandler(ApiHandler):
    async def post(self) -> None:
        try:
            options = await passkeys(self).authentication_options(origin=self.origin())
        except Throttled as error:
            raise too_many("Too many passkey challenges asked for", error) from None
        self.send_json(options)


class LoginHandler(ApiHandler):
    async def post(self) -> None:
        body = self.json_body()
        credential = credential_field(body)
        remember_me = bool_field(body, "rememberMe") or False
        try:
            user = await self.log_in_with_passkey(credential, remember_me)
        except EmailNotVerified:
            raise ApiError(403, recovery.UNVERIFIED) from None
        if user is None:
            raise ApiError(401, NOT_RECOGNISED)
        self.send_json({"message": "Logged in successfully", "user": summary(user)})


# -- pages ----------------------------------------------------------------------------------------


class PasskeyNamePage(PageHandler):
    @authenticated
    async def post(self, passkey_id: str) -> None:
        try:
            name = passkey_name(self.form("name", MAX_NAME * 4))
        except ValueError as error:
            self.done("/account", Kind.ERROR, f"{error}.")
            return
        passkey = await passkeys(self).find(self.current_user.id, passkey_id)
        user = await self.services.users.get(self.current_user.id)
        if passkey is None or user is None:
            self.done("/account", Kind.ERROR, "That passkey was removed.")
            return
        if not name:
            self.done("/account", Kind.ERROR, "Name is required.")
            return
        try:
            await passkeys(self).rename(user, passkey, name, self.origin())
        except Throttled as error:
            self.done(
                "/account", Kind.ERROR, try_again("Too many renames", error.retry_after) + "."
            )
            return
        self.done("/account", Kind.SUCCESS, "The passkey was renamed.")


class PasskeyRemovePage(PageHandler):
    reauth_return = "/account"

    @reauth_required
    async def post(self, passkey_id: str) -> None:
        if not self.confirmed:
            self.confirm(*ASK["passkey"], self.url("/account"))
            return
        passkey = await passkeys(self).find(self.current_user.id, passkey_id)
        user = await self.services.users.get(self.current_user.id)
        revoked = None
        if passkey is not None and user is not None:
            revoked = await passkeys(self).remove(user, passkey, self.origin())
        if revoked is None:
            self.done("/account", Kind.ERROR, "That passkey was removed already.")
            return
        ended = f"{revoked} other {'session was' if revoked == 1 else 'sessions were'} signed out."
        self.done(
            "/account", Kind.SUCCESS, "The passkey was removed." + (f" {ended}" if revoked else "")
        )


ID = r"([A-Za-z0-9_-]{1,64})"


def api_routes() -> list[tuple[str, Any]]:
    return [
        (r"/api/passkeys", PasskeysHandler),
        (r"/api/passkeys/register/options", RegisterOptionsHandler),
        (r"/api/passkeys/register", RegisterHandler),
        (rf"/api/passkeys/{ID}", PasskeyHandler),
        (r"/api/login/passkey/options", LoginOptionsHandler),
        (r"/api/login/passkey", LoginHandler),
    ]


def page_routes() -> list[tuple[str, Any]]:
    passkey_id = r"([0-9a-f]{32})"
    return [
        (rf"/account/passkeys/{passkey_id}/name", PasskeyNamePage),
        (rf"/account/passkeys/{passkey_id}/remove", PasskeyRemovePage),
    ]
