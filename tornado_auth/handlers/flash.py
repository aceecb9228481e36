"""One-time messages that survive a redirect (and a sign-out): a short-lived signed cookie."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import NamedTuple

from tornado.web import RequestHandler

COOKIE = "auth_flash"
TAKEN = "_flash_taken"  # where a handler keeps the message its response shows
MAX_AGE = 120  # seconds: long enough for a redirect, too short to greet a later visit


class Kind(StrEnum):
    """How a message is shown: its colour and its role for assistive technology."""

    SUCCESS = "success"  # an action the user asked for was done
    INFO = "info"  # news that is neither good nor bad (a deliberate sign-out)
    WARNING = "warning"  # something happened to the user they did not ask for here
    ERROR = "error"  # the action was not done


class Flash(NamedTuple):
    kind: Kind
    text: str


def set_flash(handler: RequestHandler, kind: Kind, text: str) -> None:
    """Show ``text`` on the next page this browser renders."""
    handler.set_signed_cookie(
        COOKIE,
        json.dumps([str(kind), text]),
        expires_days=None,
        version=None,
        max_age=MAX_AGE,
        path="/",
        httponly=True,
        secure=handler.settings["secure_cookies"],
        samesite="Lax",
    )


def take_flash(handler: RequestHandler) -> Flash | None:
    """The message waiting for this page, which is then gone; None if there is none. The same
    for every template of one response (each template module asks again)."""
    taken: Flash | None = handler.__dict__.get(TAKEN, None)
    if taken is not None or COOKIE not in handler.request.cookies:
        return taken
    value = handler.get_signed_cookie(COOKIE, max_age_days=1)
    handler.clear_cookie(COOKIE, path="/", httponly=True, samesite="Lax")
    try:
        kind, text = json.loads(value or b"")
        flash = Flash(Kind(kind), str(text))
    except (ValueError, TypeError):
        return None
    handler.__dict__[TAKEN] = flash
    return flash
