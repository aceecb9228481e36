"""The access log: method, path without the query, status and time; never cookies or bodies."""

from __future__ import annotations

import logging

import tornado.web

access_log = logging.getLogger("tornado.access")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log: method, path without the query, status, time. Never cookies or bodies."""
    if not handler.application.settings.get("access_log", True):
        return
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(
            level,
            "%d %s %s %s %.1fms",
            status,
            request.method,
            request.path,
            request.remote_ip,
            1000.0 * request.request_time(),
        )
