"""The headers every response carries (CSP, no-store, HSTS under TLS, the request id) and the
origin check."""

from __future__ import annotations

import time

import tornado.web
from tornado import httputil

from ..logs import REQUEST_ID_HEADER, request_id_of

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
# The headers every response starts with after the request id, in the order they are sent;
# constants, so they skip Tornado's per-value check. HSTS is added under secure cookies.
FIXED_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    # Every response here depends on the session (or tells who is signed in): none may be kept
    # for Back after sign-out. Static assets are not served by these handlers and keep theirs.
    ("Cache-Control", "no-store"),
)
HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
FIXED_HEADERS_TLS = (*FIXED_HEADERS, HSTS)
# static assets keep Tornado's caching headers
STATIC_HEADERS = tuple(header for header in FIXED_HEADERS if header[0] != "Cache-Control")


class _HttpDate:
    """The Date header as Tornado writes it (to the second), formatted once a second rather
    than on every response."""

    second, text = -1, ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second, self.text = second, httputil.format_timestamp(second)
        return self.text


http_date = _HttpDate().now


class SecurityHeaders(tornado.web.RequestHandler):
    _request_id: str | None = None

    @property
    def request_id(self) -> str:
        """The caller's ``X-Request-Id`` when it is safe, else one made for this request."""
        if self._request_id is None:
            self._request_id = request_id_of(self.request.headers)
        return self._request_id

    def clear(self) -> None:
        """Tornado's ``clear`` without its ``Server`` header, and cheaper: the same headers in
        the same order (Content-Type, Date, then ``set_default_headers``), built without
        formatting the date on every request or checking constant values."""
        headers = httputil.HTTPHeaders()
        headers["Content-Type"] = "text/html; charset=UTF-8"
        headers["Date"] = http_date()
        self._headers = headers
        self.set_default_headers()
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    def set_default_headers(self) -> None:
        headers = self._headers
        headers[REQUEST_ID_HEADER] = self.request_id  # a safe caller's id, or one of ours
        secure = self.application.settings.get("secure_cookies")
        for name, value in FIXED_HEADERS_TLS if secure else FIXED_HEADERS:
            headers[name] = value

    def compute_etag(self) -> str | None:
        """None: every response here is no-store, so no client revalidates it (and none pays for
        a hash of the body)."""
        return None

    def check_etag_header(self) -> bool:
        # Tornado asks after computing an etag; with none (compute_etag above) nothing matches,
        # and the If-None-Match header need not be parsed.
        if "Etag" not in self._headers:
            return False
        return super().check_etag_header()

    def _origin_matches_host(self, origin: str) -> bool:
        # Tornado 6.6 lets urlsplit's ValueError (Origin: http://[) escape its cross-origin
        # check as a 500; an origin that does not parse matches no host, so the request is a 403.
        try:
            return super()._origin_matches_host(origin)
        except ValueError:
            return False


class StaticFiles(tornado.web.StaticFileHandler):
    """Static assets (ours, and an app's ``static_path``): cached as Tornado caches them, with
    the other security headers and no Server header, on their errors too."""

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header(REQUEST_ID_HEADER, request_id_of(self.request.headers))
        secure = self.application.settings.get("secure_cookies")
        for name, value in (*STATIC_HEADERS, HSTS) if secure else STATIC_HEADERS:
            self.set_header(name, value)
