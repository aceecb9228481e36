"""The OpenAPI 3.1 document of the JSON API, built for the prefix the app mounts it under."""

from __future__ import annotations

import copy
import functools
from importlib.metadata import version
from typing import Any

Schema = dict[str, Any]

TEXT = {"type": "string"}
TIME = {"type": "number", "description": "Unix epoch seconds"}
ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> Schema:
    """A JSON object with these fields (``required`` always present)."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }


def message(**more: Any) -> Schema:
    return obj({"message": TEXT, **more})


SCHEMAS: dict[str, Schema] = {
    "Error": {
        **obj({"error": TEXT}, {"down": {"type": "array", "items": TEXT}}),
        "description": 'Every error: {"error": "<message>"}; a 503 of /readyz also lists the '
        "stores that are down.",
    },
    "UserSummary": obj({"id": TEXT, "email": TEXT, "name": TEXT, "role": TEXT}),
    "User": obj(
        {
            "id": TEXT,
            "email": TEXT,
            "name": TEXT,
            "role": {"type": "string", "enum": ["user", "admin"]},
            "createdAt": TIME,
            "lastLoginAt": {"type": ["number", "null"]},
            "disabled": {"type": "boolean"},
            "emailVerified": {"type": "boolean"},
            "extra": {"type": "object"},
        }
    ),
    "Session": obj(
        {
            "id": TEXT,
            "createdAt": TIME,
            "lastSeenAt": TIME,
            "expiresAt": TIME,
            "ip": TEXT,
            "userAgent": TEXT,
            "device": TEXT,
            "name": TEXT,
            "current": {"type": "boolean"},
        }
    ),
    "AuditEntry": obj(
        {
            "event": TEXT,
            "at": TIME,
            "userId": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
            "ip": TEXT,
            "userAgent": TEXT,
            "session": {"type": ["string", "null"]},
            "detail": {"type": "object"},
        }
    ),
    "Revoked": obj({"revoked": {"type": "integer", "minimum": 0}}),
    "SecondFactors": obj(
        {
            "enabled": {"type": "boolean"},
            "totp": {"type": "boolean"},
            "recoveryCodesLeft": {"type": "integer", "minimum": 0},
            "passkeys": {"type": "integer", "minimum": 0},
            "methods": {"type": "array", "items": TEXT},
        }
    ),
    "Passkey": obj(
        {
            "id": TEXT,
            "name": TEXT,
            "createdAt": TIME,
            "lastUsedAt": {"type": ["number", "null"]},
            "transports": {"type": "array", "items": TEXT},
        }
    ),
    "WebAuthnOptions": {
        "type": "object",
        "description": "PublicKeyCredentialCreationOptions or ...RequestOptions as JSON "
        "(binary values base64url), for navigator.credentials.create or get",
    },
    "SignedIn": message(user=ref("UserSummary")),
    "SecondStepNeeded": {
        **obj({"mfaRequired": {"const": True}, "methods": {"type": "array", "items": TEXT}}),
        "description": "The password is right and the user has a second factor: finish with "
        "POST /api/login/mfa (a short-lived cookie remembers the waiting sign-in)",
    },
}

ERROR_TEXT = {
    400: "Malformed request: the message names the field",
    401: 'Not signed in: {"error": "Not authenticated"}',
    403: "Refused: a cross-site browser request, too few rights, or a password check needed",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large (server.max_body_size)",
    415: "Content-Type must be application/json",
    429: "Throttled: Retry-After says how many seconds to wait",
    431: "Request headers too large (server.max_header_size)",
    503: "A store is unavailable, or the server is shutting down",
}

SECURITY_SCHEMES = {
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "session",
        "description": "The signed session cookie set by POST /api/login or /api/register "
        "(named __Host-session in production). HttpOnly; SameSite per sessions.samesite.",
    }
}

DESCRIPTION = """Cookie sessions and authentication. Bodies are JSON; times are Unix epoch
seconds; every error is `{"error": "<message>"}`, and every 429 carries `Retry-After`.

**Browsers and cross-origin requests.** API calls that send no `Origin` header (scripts, load
tests) need no XSRF token. A browser's state-changing request (POST, PATCH, DELETE) is refused
with 403 `Cross-site request refused` unless its `Origin` (or `Sec-Fetch-Site`) is this site or
one of `server.trusted_origins`; bodies must be `application/json` (415 otherwise), which a
cross-site HTML form cannot send. The pages' own forms carry Tornado's XSRF token instead.

**Request ids.** Every response carries `X-Request-Id`: the request's own when it is 1 to 128
letters, digits or `. _ : @ = + / -`, else a new one; the server's log lines name it.

**Sign-in.** `POST /api/login` or `POST /api/register` sets the session cookie (the
`sessionCookie` scheme); send it back on every call. Operations marked with that scheme answer
401 `Not authenticated` without it; admin operations answer 403 `Admin access required` to
other users."""


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tornado-auth",
            "version": version("tornado-auth"),
            "description": DESCRIPTION,
        },
        "tags": [
            {"name": "auth", "description": "Signing in and out, registering, passwords"},
            {"name": "account", "description": "The signed-in user's own account and sessions"},
            {"name": "recovery", "description": "Links by email: reset, verification"},
            {"name": "admin", "description": "Administrators only"},
            {"name": "demo", "description": "The cookie demo"},
            {"name": "health", "description": "Liveness and readiness"},
        ],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
    }


def openapi_document(prefix: str = "") -> dict[str, Any]:
    """The document, its paths under ``prefix`` (where the app mounts our routes)."""
    document = copy.deepcopy(_document())
    prefix = prefix.rstrip("/")
    document["paths"] = {prefix + path: item for path, item in document["paths"].items()}
    return document


# -- operations -----------------------------------------------------------------------------------


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def operation(
    operation_id: str,
    summary: str,
    tag: str,
    ok: tuple[int, str, Schema | None],
    *,
    who: str = "anyone",
    body: Schema | None = None,
    errors: tuple[int, ...] = (),
    links: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    text: bool = False,
) -> dict[str, Any]:
    """One operation. ``who``: anyone, session or admin; its body, success and errors."""
    status, description, schema = ok
    success: dict[str, Any] = {"description": description}
    if text:
        success["content"] = {"text/plain": {"schema": TEXT}}
    elif schema is not None:
        success["content"] = json_content(schema)
    if links:
        success["links"] = links
    codes = set(errors) | {431, 503}
    if body is not None:
        codes |= {400, 413, 415}
    if who != "anyone":
        codes.add(401)
    if who == "admin":
        codes.add(403)
    if body is not None or operation_id in STATE_CHANGING_WITHOUT_BODY:
        codes.add(403)  # cross-site browser requests
    responses: dict[str, Any] = {str(status): success}
    for code in sorted(codes):
        error: dict[str, Any] = {
            "description": ERROR_TEXT[code],
            "content": json_content(ref("Error")),
        }
        if code == 429:
            error["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
            }
        responses[str(code)] = error
    spec: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
        "security": [] if who == "anyone" else [{"sessionCookie": []}],
    }
    if parameters:
        spec["parameters"] = parameters
    if body is not None:
        spec["requestBody"] = {"required": True, "content": json_content(body)}
    return spec


STATE_CHANGING_WITHOUT_BODY = {
    "logout",
    "deleteSession",
    "revokeOtherSessions",
    "adminEndUserSessions",
    "adminSendReset",
    "adminSendVerification",
    "startTotp",
    "removeTotp",
    "newRecoveryCodes",
    "adminResetSecondFactors",
    "passkeyRegistrationOptions",
    "passkeySignInOptions",
    "removePasskey",
}


def path_id(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": ID_PATTERN},
    }


def page_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "page",
            "in": "query",
            "description": "From 1 (a 400 outside 1 to 1000000)",
            "schema": {"type": "integer", "minimum": 1, "maximum": 10**6, "default": 1},
        },
        {
            "name": "perPage",
            "in": "query",
            "description": "Items per page (a 400 outside 1 to 200)",
            "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        },
    ]


EMAIL = {"type": "string", "format": "email", "maxLength": 254}
PASSWORD = {"type": "string", "minLength": 1, "maxLength": 1024}
NEW_PASSWORD = {
    "type": "string",
    "minLength": 8,
    "maxLength": 1024,
    "pattern": r"\S",
    "description": "8 to 1024 characters, not only whitespace",
}
NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$",
    "description": "no control characters",
}
SESSION_ID = path_id("id", "A session's id, as GET /api/sessions lists it")
USER_ID = path_id("id", "A user's id")
CURSOR_PARAMETERS = [
    {
        "name": "before",
        "in": "query",
        "description": "The entries older than this cursor (a page's older; empty: the newest "
        "page); not with page or after",
        "schema": {"type": "string", "maxLength": 64},
    },
    {
        "name": "after",
        "in": "query",
        "description": "The entries newer than this cursor (a page's newer; empty: the oldest "
        "page); not with page or before",
        "schema": {"type": "string", "maxLength": 64},
    },
]
PAGED = {"total": {"type": "integer"}, "page": {"type": "integer"}, "perPage": {"type": "integer"}}
LOGIN_ANSWER = {"anyOf": [ref("SignedIn"), ref("SecondStepNeeded")]}
CODE = {"type": "string", "minLength": 1, "maxLength": 64}
CREDENTIAL = {"type": "object", "description": "The browser's PublicKeyCredential as JSON"}
TO_SESSIONS = {
    "ListSessions": {
        "operationId": "listSessions",
        "description": "The new session is listed among the user's sessions",
    }
}

PATHS: dict[str, Any] = {
    "/api/login": {
        "post": operation(
            "login",
            "Sign in: a new session cookie (the token is regenerated)",
            "auth",
            (200, "Signed in, or a second step needed", LOGIN_ANSWER),
            body=obj({"email": EMAIL, "password": PASSWORD}, {"rememberMe": {"type": "boolean"}}),
            errors=(401, 403, 429),
            links=TO_SESSIONS,
        )
    },
    "/api/logout": {
        "post": operation(
            "logout",
            "Sign out: the session is destroyed and the cookie cleared",
            "auth",
            (200, "Signed out", message()),
        )
    },
    "/api/register": {
        "post": operation(
            "register",
            "Register and sign in (202 for any address with users.require_verified_email)",
            "auth",
            (201, "Registered and signed in", obj({"user": ref("UserSummary")})),
            body=obj({"email": EMAIL, "password": NEW_PASSWORD, "name": NAME}),
            errors=(409, 429),
            links={
                "SignIn": {
                    "operationId": "login",
                    "requestBody": {
                        "email": "$request.body#/email",
                        "password": "$request.body#/password",
                    },
                    "description": "The new account signs in",
                },
                **TO_SESSIONS,
            },
        )
    },
    "/api/password": {
        "post": operation(
            "changePassword",
            "Change the password: every other session ends, this one gets a new token",
            "auth",
            (200, "Changed", message(revokedSessions={"type": "integer"})),
            who="session",
            body=obj({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}),
            errors=(409, 429),
        )
    },
    "/api/password/forgot": {
        "post": operation(
            "forgotPassword",
            "Ask for a password reset link (the same answer for any address)",
            "recovery",
            (200, "A link is mailed if the address has an account", message()),
            body=obj({"email": EMAIL}),
            errors=(429,),
        )
    },
    "/api/password/reset": {
        "post": operation(
            "resetPassword",
            "Set a new password with a reset link's token; every session ends",
            "recovery",
            (200, "Changed", message()),
            body=obj({"token": TEXT, "newPassword": NEW_PASSWORD}),
        )
    },
    "/api/verify": {
        "post": operation(
            "verifyEmail",
            "Verify the address with a verification link's token",
            "recovery",
            (200, "Verified", message(email=TEXT)),
            body=obj({"token": TEXT}),
        )
    },
    "/api/verify/resend": {
        "post": operation(
            "resendVerification",
            "Ask for a new verification link (the same answer for any address)",
            "recovery",
            (200, "A link is mailed if an unverified account has the address", message()),
            body=obj({"email": EMAIL}),
            errors=(429,),
        )
    },
    "/api/reauth": {
        "post": operation(
            "reauthenticate",
            "Prove the password again, for security.reauth_ttl",
            "account",
            (200, "Checked", message(expiresIn={"type": "number"})),
            who="session",
            body=obj({"password": PASSWORD}),
            errors=(429,),
        )
    },
    "/api/email": {
        "post": operation(
            "changeEmail",
            "Ask to change the address: a confirmation link goes to the new one",
            "account",
            (202, "Asked", message()),
            who="session",
            body=obj({"newEmail": EMAIL}),
            errors=(403, 409, 429),
        )
    },
    "/api/login/mfa": {
        "post": operation(
            "loginSecondStep",
            "Finish a sign-in waiting for its second step: exactly one of an authenticator "
            "app's code, a recovery code or a passkey response",
            "auth",
            (200, "Signed in: a new session cookie", ref("SignedIn")),
            body={
                "type": "object",
                "properties": {
                    "code": CODE,
                    "recoveryCode": CODE,
                    "passkey": {"type": "object"},
                },
                "minProperties": 1,
                "maxProperties": 1,
            },
            errors=(401, 429),
            links=TO_SESSIONS,
        )
    },
    "/api/login/passkey/options": {
        "post": operation(
            "passkeySignInOptions",
            "A new challenge and the options for navigator.credentials.get (any passkey)",
            "auth",
            (200, "The options", ref("WebAuthnOptions")),
            errors=(429,),
        )
    },
    "/api/login/passkey": {
        "post": operation(
            "passkeySignIn",
            "Sign in with a passkey: the browser's PublicKeyCredential as JSON, no password",
            "auth",
            (200, "Signed in: a new session cookie", ref("SignedIn")),
            body=obj({"credential": CREDENTIAL}, {"rememberMe": {"type": "boolean"}}),
            errors=(401, 403, 429),
            links=TO_SESSIONS,
        )
    },
    "/api/passkeys": {
        "get": operation(
            "listPasskeys",
            "The signed-in user's passkeys, oldest first",
            "account",
            (200, "Passkeys", obj({"passkeys": {"type": "array", "items": ref("Passkey")}})),
            who="session",
        )
    },
    "/api/passkeys/register/options": {
        "post": operation(
            "passkeyRegistrationOptions",
            "A new challenge and the options for navigator.credentials.create (needs a recent "
            "password check)",
            "account",
            (200, "The options", ref("WebAuthnOptions")),
            who="session",
            errors=(403, 409, 429),
        )
    },
    "/api/passkeys/register": {
        "post": operation(
            "registerPasskey",
            "Add a passkey from the browser's response (needs a recent password check)",
            "account",
            (201, "Added", obj({"passkey": ref("Passkey")})),
            who="session",
            body=obj({"credential": CREDENTIAL}, {"name": {"type": "string", "maxLength": 64}}),
            errors=(403, 409),
        )
    },
    "/api/passkeys/{id}": {
        "parameters": [path_id("id", "A passkey's id, as GET /api/passkeys lists it")],
        "patch": operation(
            "renamePasskey",
            "Rename one of the user's passkeys",
            "account",
            (200, "Renamed", obj({"passkey": ref("Passkey")})),
            who="session",
            body=obj({"name": {"type": "string", "minLength": 1, "maxLength": 64}}),
            errors=(404, 429),
        ),
        "delete": operation(
            "removePasskey",
            "Remove one of the user's passkeys; their other sessions end (needs a recent "
            "password check)",
            "account",
            (200, "Removed", message(revoked={"type": "integer", "minimum": 0})),
            who="session",
            errors=(403, 404),
        ),
    },
    "/api/mfa": {
        "get": operation(
            "secondFactors",
            "The signed-in user's second factors",
            "account",
            (
                200,
                "Second factors",
                {"allOf": [ref("SecondFactors"), obj({"signedInWithMfa": {"type": "boolean"}})]},
            ),
            who="session",
        )
    },
    "/api/mfa/totp": {
        "post": operation(
            "startTotp",
            "Start setting up an authenticator app (needs a recent password check)",
            "account",
            (200, "The secret to enter", obj({"secret": TEXT, "otpauthUri": TEXT})),
            who="session",
            errors=(403,),
        ),
        "delete": operation(
            "removeTotp",
            "Remove the authenticator app; the user's other sessions end",
            "account",
            (200, "Removed", message()),
            who="session",
            errors=(403, 404),
        ),
    },
    "/api/mfa/totp/confirm": {
        "post": operation(
            "confirmTotp",
            "Turn the authenticator app on with one of its codes; the recovery codes, once",
            "account",
            (200, "On", message(recoveryCodes={"type": "array", "items": TEXT})),
            who="session",
            body=obj({"code": CODE}),
            errors=(403, 409),
        )
    },
    "/api/mfa/recovery-codes": {
        "post": operation(
            "newRecoveryCodes",
            "Ten new recovery codes; the old ones stop working",
            "account",
            (
                200,
                "The codes, shown once",
                obj({"recoveryCodes": {"type": "array", "items": TEXT}}),
            ),
            who="session",
            errors=(403, 409),
        )
    },
    "/api/dashboard": {
        "get": operation(
            "dashboard",
            "The signed-in user's greeting",
            "account",
            (200, "Welcome", message(userId=TEXT, email=TEXT)),
            who="session",
        )
    },
    "/api/profile": {
        "get": operation(
            "profile",
            "The signed-in user, without any password field",
            "account",
            (200, "The user", ref("User")),
            who="session",
        )
    },
    "/api/sessions": {
        "get": operation(
            "listSessions",
            "The signed-in user's sessions, the current one marked",
            "account",
            (200, "Sessions", obj({"sessions": {"type": "array", "items": ref("Session")}})),
            who="session",
            links={
                "RevokeSession": {
                    "operationId": "deleteSession",
                    "parameters": {"id": "$response.body#/sessions/0/id"},
                    "description": "End a listed session",
                },
                "NameSession": {
                    "operationId": "nameSession",
                    "parameters": {"id": "$response.body#/sessions/0/id"},
                    "description": "Name a listed session",
                },
            },
        )
    },
    "/api/sessions/revoke-others": {
        "post": operation(
            "revokeOtherSessions",
            "End every other session of the user (needs a recent password check)",
            "account",
            (200, "Ended", ref("Revoked")),
            who="session",
            errors=(403,),
        )
    },
    "/api/sessions/{id}": {
        "parameters": [SESSION_ID],
        "patch": operation(
            "nameSession",
            'Name one of the user\'s sessions ("" removes the name)',
            "account",
            (200, "The session with its name", ref("Session")),
            who="session",
            body=obj({"name": {"type": "string", "maxLength": 64}}),
            errors=(404, 429),
        ),
        "delete": operation(
            "deleteSession",
            "End one of the user's sessions (another one needs a recent password check)",
            "account",
            (204, "Ended", None),
            who="session",
            errors=(403, 404),
        ),
    },
    "/api/admin/users": {
        "get": operation(
            "adminListUsers",
            "Users, a page at a time",
            "admin",
            (200, "A page", obj({"users": {"type": "array", "items": ref("User")}, **PAGED})),
            who="admin",
            parameters=page_parameters(),
            errors=(400,),
        )
    },
    "/api/admin/users/{id}": {
        "parameters": [USER_ID],
        "patch": operation(
            "adminChangeUser",
            "Change a user's role or disable them; their sessions end",
            "admin",
            (200, "The user", ref("User")),
            who="admin",
            body={
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["user", "admin"]},
                    "disabled": {"type": "boolean"},
                },
                "minProperties": 1,
                "additionalProperties": False,
            },
            errors=(404, 409),
        ),
    },
    "/api/admin/users/{id}/sessions": {
        "parameters": [USER_ID],
        "delete": operation(
            "adminEndUserSessions",
            "End every session of a user",
            "admin",
            (200, "Ended", ref("Revoked")),
            who="admin",
            errors=(404,),
        ),
    },
    "/api/admin/users/{id}/mfa": {
        "parameters": [USER_ID],
        "get": operation(
            "adminSecondFactors",
            "A user's second factors",
            "admin",
            (200, "Second factors", ref("SecondFactors")),
            who="admin",
            errors=(404,),
        ),
        "delete": operation(
            "adminResetSecondFactors",
            "Remove a user's authenticator app and recovery codes; their sessions end",
            "admin",
            (200, "Reset", obj({"reset": {"type": "boolean"}})),
            who="admin",
            errors=(404,),
        ),
    },
    "/api/admin/users/{id}/send-reset": {
        "parameters": [USER_ID],
        "post": operation(
            "adminSendReset",
            "Mail the user a password reset link",
            "admin",
            (202, "Sent", message()),
            who="admin",
            errors=(404,),
        ),
    },
    "/api/admin/users/{id}/send-verification": {
        "parameters": [USER_ID],
        "post": operation(
            "adminSendVerification",
            "Mail the user a verification link",
            "admin",
            (202, "Sent", message()),
            who="admin",
            errors=(404,),
        ),
    },
    "/api/admin/audit": {
        "get": operation(
            "adminAudit",
            "The audit trail, newest first: by page number (with the total; a deep page costs "
            "what skipping to it costs), or by cursor (each page reads only itself)",
            "admin",
            (
                200,
                "A page: by number with total and page, by cursor with newer and older",
                obj(
                    {
                        "entries": {"type": "array", "items": ref("AuditEntry")},
                        "perPage": {"type": "integer"},
                    },
                    {
                        "total": {"type": "integer"},
                        "page": {"type": "integer"},
                        "newer": {"type": ["string", "null"]},
                        "older": {"type": ["string", "null"]},
                    },
                ),
            ),
            who="admin",
            parameters=[*page_parameters(), *CURSOR_PARAMETERS],
            errors=(400,),
        )
    },
    "/api/openapi.json": {
        "get": operation(
            "openapi",
            "This document",
            "health",
            (200, "The OpenAPI 3.1 document", {"type": "object"}),
        )
    },
    "/api/set-cookie": {
        "get": operation(
            "setCookie",
            "The cookie demo: sets username=john (15 minutes, HttpOnly, SameSite=Strict)",
            "demo",
            (200, "Cookie set", None),
            text=True,
        )
    },
    "/api/get-cookie": {
        "get": operation(
            "getCookie",
            "The cookie demo: reads the username cookie",
            "demo",
            (200, "Username: john, or No username cookie", None),
            text=True,
        )
    },
    "/healthz": {
        "get": operation(
            "health",
            "Liveness",
            "health",
            (200, "Alive", obj({"status": {"const": "ok"}})),
        )
    },
    "/readyz": {
        "get": operation(
            "ready",
            "Readiness: 503 naming each store that is down",
            "health",
            (200, "Ready", obj({"status": {"const": "ready"}})),
        )
    },
}
