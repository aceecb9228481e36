"""What a handler answers: JSON bodies, and every error in one shape (JSON for the API, a page
otherwise), never a traceback."""

from __future__ import annotations

import json
import logging
import urllib.parse
from http import HTTPStatus
from typing import Any

import orjson
import tornado.web

from ..errors import StoreUnavailable
from .lifecycle import SHUTTING_DOWN, Lifecycle
from .validation import ApiError, json_object

log = logging.getLogger("tornado_auth")

JSON_TYPE = "application/json; charset=UTF-8"
# One encoder for every JSON response: json.dumps with separators builds a new one per call.
_standard_json = json.JSONEncoder(separators=(",", ":")).encode
_FLAT = frozenset({str, int, bool, type(None)})  # values orjson writes as the standard library does


def to_json(payload: Any) -> bytes | str:
    """Compact JSON, exactly as the standard library writes it (non-ASCII and DEL as \\u
    escapes). A flat object of strings, integers, booleans and nulls (most answers) is written by
    orjson, about ten times faster, when its text is the same: pure ASCII without DEL, and nothing
    orjson refuses (an integer past 64 bits, a key that is not a string). Anything else (floats,
    whose notation differs for some values, nested values) is the standard library's."""
    if type(payload) is dict:
        for value in payload.values():
            if type(value) not in _FLAT:
                return _standard_json(payload)
        try:
            text = orjson.dumps(payload)
        except TypeError:  # orjson.JSONEncodeError is one
            return _standard_json(payload)
        if text.isascii() and b"\x7f" not in text:
            return text
    return _standard_json(payload)


class Responses(Lifecycle):
    """JSON in and out, and errors as ``{"error": message}`` (``api``) or the error page."""

    api: bool  # set on BaseHandler: API handlers answer JSON errors, pages HTML and redirects

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400."""
        return json_object(self.request)

    def send_json(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self._headers["Content-Type"] = JSON_TYPE  # a constant: no need of set_header's check
        self.finish(to_json(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if self._shutting_down:
            self.set_status(503)
            message = SHUTTING_DOWN
        elif isinstance(error, StoreUnavailable):
            self.set_status(503)
            message = error.public_message
        elif isinstance(error, ApiError):
            message = error.message
            if error.retry_after is not None:
                self.set_header("Retry-After", str(error.retry_after))
        elif isinstance(error, tornado.web.HTTPError) and status_code == 403 and error.log_message:
            message = "Cross-site request refused"
        else:
            message = (
                HTTPStatus(status_code).phrase.capitalize()
                if status_code in HTTPStatus._value2member_map_
                else "Error"
            )
        self._write_error_body(message)

    def deny(self, status: int, message: str) -> None:
        """Refuse an anonymous (401) or under-privileged (403) request, as API or page."""
        if status == 401 and not self.api and self.request.method in ("GET", "HEAD"):
            next_url = urllib.parse.quote(self.request.uri or "/", safe="/")
            self.redirect(f"{self.get_login_url()}?next={next_url}")
            return
        self.set_status(status)
        self._write_error_body(message)

    def _answer_instead(self, status: int, message: str) -> None:
        """Replace the response being built with an error."""
        self.clear()
        self.set_status(status)
        self._write_error_body(message)

    def _write_error_body(self, message: str) -> None:
        if self.api:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"error": message}))
        else:
            self.render("error.html", status=self.get_status(), message=message)

    def _request_summary(self) -> str:
        # Tornado's warnings name the request; without the query, which may carry a token.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, StoreUnavailable):
            log.warning("%s %s: %s", self.request.method, self.request.path, value)
        else:
            super().log_exception(typ, value, tb)
