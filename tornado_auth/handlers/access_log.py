"""The access log and the request metrics: method, route, path without the query, status,
time, request id and user; never cookies, tokens, bodies or the query string."""

from __future__ import annotations

import logging

import tornado.web

from .routing import route_of

access_log = logging.getLogger("tornado.access")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """One record per request: a line of text, or with ``logging.format: json`` its fields."""
    status = handler.get_status()
    services = handler.application.settings.get("services")
    if services is not None:
        request = handler.request
        services.metrics.request(request.method, route_of(handler), status, request.request_time())
    if not handler.application.settings.get("access_log", True):
        return
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        duration = round(1000.0 * request.request_time(), 1)
        request_id = getattr(handler, "request_id", None)
        user = getattr(handler, "_current_user", None)
        access_log.log(
            level,
            "%d %s %s %s %.1fms %s",
            status,
            request.method,
            request.path,
            request.remote_ip,
            duration,
            request_id or "-",
            extra={
                "request_id": request_id,
                "method": request.method,
                "route": route_of(handler),
                "status": status,
                "duration_ms": duration,
                "user_id": getattr(user, "id", None),
            },
        )
