"""The headers every response carries (CSP, no-store, HSTS under TLS, the request id) and the
origin check."""

from __future__ import annotations

import tornado.web

from ..logs import REQUEST_ID_HEADER, request_id_from

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


class SecurityHeaders(tornado.web.RequestHandler):
    _request_id: str | None = None

    @property
    def request_id(self) -> str:
        """The caller's ``X-Request-Id`` when it is safe, else one made for this request."""
        if self._request_id is None:
            self._request_id = request_id_from(self.request.headers.get(REQUEST_ID_HEADER))
        return self._request_id

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header(REQUEST_ID_HEADER, self.request_id)
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "DENY")
        # Every response here depends on the session (or tells who is signed in): none may be kept
        # for Back after sign-out. Static assets are not served by these handlers and keep theirs.
        self.set_header("Cache-Control", "no-store")
        if self.application.settings.get("secure_cookies"):
            self.set_header("Strict-Transport-Security", "max-age=63072000; includeSubDomains")

    def compute_etag(self) -> str | None:
        """None: every response here is no-store, so no client revalidates it (and none pays for
        a hash of the body)."""
        return None

    def _origin_matches_host(self, origin: str) -> bool:
        # Tornado 6.6 lets urlsplit's ValueError (Origin: http://[) escape its cross-origin
        # check as a 500; an origin that does not parse matches no host, so the request is a 403.
        try:
            return super()._origin_matches_host(origin)
        except ValueError:
            return False
