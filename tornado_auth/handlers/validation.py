"""Input checks for JSON bodies: each problem is a 400 naming the field, as ``ApiError``.

Every API error message has one style: sentence case, no full stop at the end, a field named in
words ("Current password is required"), a wait in seconds ("try again in 60 s")."""

from __future__ import annotations

import json
import re
from typing import Any

import tornado.web
from tornado.httputil import HTTPServerRequest

from ..users.passwords import MAX_LENGTH, password_problem


class ApiError(tornado.web.HTTPError):
    """An error whose message the client sees as ``{"error": message}``."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(status, message)
        self.message = message
        self.retry_after = retry_after


def label(name: str) -> str:
    """A field's name as the start of a sentence: ``currentPassword`` -> ``Current password``."""
    words = re.sub(r"(?<=[a-z0-9])([A-Z])", r" \1", name).lower()
    return words[:1].upper() + words[1:]


def try_again(message: str, retry_after: int) -> str:
    """A refusal with the wait before the next try."""
    return f"{message}, try again in {retry_after} s"


def json_object(request: HTTPServerRequest) -> dict[str, Any]:
    """The request body as a JSON object, or an ApiError (400, or 415 for another type)."""
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415 if request.body else 400, "Content-Type must be application/json")
    try:
        body = json.loads(request.body or b"null")
        # Escapes of lone surrogates ("\ud800") decode to text that no store, hash or
        # throttle key can encode: refuse them here (UnicodeEncodeError is a ValueError).
        json.dumps(body, ensure_ascii=False).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise ApiError(400, "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def text_field(
    body: dict[str, Any], name: str, max_length: int, required: bool = True
) -> str | None:
    """A string field of a JSON body, or a 400 naming the field."""
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{label(name)} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{label(name)} must be a string")
    if len(value) > max_length:
        raise ApiError(400, f"{label(name)} must be at most {max_length} characters")
    if required and not value.strip():
        raise ApiError(400, f"{label(name)} is required")
    return value


def required_text(body: dict[str, Any], name: str, max_length: int) -> str:
    """A required string field of a JSON body, or a 400 naming the field."""
    value = text_field(body, name, max_length)
    assert value is not None  # text_field answers 400 for a missing required field
    return value


def new_password_field(body: dict[str, Any], name: str) -> str:
    """A new password from a JSON body, or a 400 saying what is wrong with it."""
    value = body.get(name)
    problem = password_problem(value)
    if problem:
        raise ApiError(400, problem.replace("Password", label(name), 1))
    assert isinstance(value, str)
    return value


def password_field(body: dict[str, Any], name: str) -> str:
    """A password from a JSON body: any non-empty string, kept exactly (spaces too: it is opaque,
    and must sign in whatever registration accepted)."""
    value = text_field(body, name, MAX_LENGTH, required=False)
    if not value:
        raise ApiError(400, f"{label(name)} is required")
    return value


def bool_field(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"{label(name)} must be true or false")
    return value
