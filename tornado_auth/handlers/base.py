"""The one BaseHandler: what every request goes through, composed from one module per job.

    lifecycle.py       counted in flight, cut at shutdown, dropped when its client goes away
    responses.py       JSON in and out; every error in one shape (JSON, or the error page)
    session_cookie.py  ``self.session`` and ``self.current_user`` from the signed cookie;
                       ``finish`` commits the session and sets the cookie before answering
    signin.py          ``log_in``, ``register``, ``start_session``, ``sign_out``, ``origin``
    rendering.py       our templates, and links under the prefix the app mounted us at
    headers.py         the security headers on every response, and the origin check

A request: ``initialize`` (counted in flight), ``prepare`` (refused at shutdown or over the size
limits, then the session from the cookie), the method, ``finish`` (the session committed, the
cookie set, then the response).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from ..logs import RequestContext, current_request
from .headers import SecurityHeaders
from .lifecycle import SHUTTING_DOWN, Lifecycle
from .rendering import Rendering
from .responses import Responses
from .routing import route_of
from .session_cookie import RequestSession, SessionUser
from .signin import SignIn
from .validation import ApiError

__all__ = ["ApiHandler", "BaseHandler", "SessionUser"]


class BaseHandler(SignIn, RequestSession, Responses, Lifecycle, Rendering, SecurityHeaders):
    api = False  # API handlers answer JSON errors; pages answer HTML and redirects
    uses_session = True

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        """Per-request state. An app's handler takes its dependencies here, as Tornado passes a
        route's keyword arguments, and calls ``super().initialize()`` (typed loosely so such an
        override type-checks); anything left over is a mistake in the route."""
        if args or kwargs:
            raise TypeError(f"{type(self).__name__} takes no route arguments: {sorted(kwargs)}")
        self._begin_in_flight()

    def prepare(self) -> Awaitable[None] | None:
        """Refuse the request at shutdown or over the size limits, then resolve its session from
        the cookie: at once from this process's cache, else Tornado awaits the store read."""
        self._task = asyncio.current_task()
        current_request.set(RequestContext(self.request_id, route_of(self)))
        if self._shutting_down:
            raise ApiError(503, SHUTTING_DOWN)
        request = self.request
        size = sum(len(name) + len(value) + 4 for name, value in request.headers.get_all())
        if size > self.settings["max_header_size"]:
            raise ApiError(431, "Request headers too large")
        if len(request.body) > self.settings["max_body_size"]:
            raise ApiError(413, "Request body too large")
        return self._resolve_session() if self.uses_session else None


class ApiHandler(BaseHandler):
    """JSON endpoints: guarded by cross-origin checks and a JSON content type, not XSRF tokens."""

    api = True

    def check_xsrf_cookie(self) -> None:
        return None
