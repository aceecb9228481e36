"""Request bodies over ``server.max_body_size`` get the JSON 413 before they are read.

A declared ``Content-Length`` over the limit is answered as soon as the headers are in (before
Tornado would send ``100 Continue``): the connection is taken from Tornado, the 413 is sent with
``Connection: close``, and what the client still sends is read and dropped for a bounded time, so
that closing does not reset the connection before the client has read the answer. A chunked body
is answered when it passes the limit; the rest of it is dropped, never buffered.

This works in any ``HTTPServer`` serving the application, since the server asks the application
for a delegate per request. Tornado's own limit (``max_body_size`` of the server) still ends a
chunked body that goes on past it: ``tornado_auth.server.http_server`` sets that at
``READ_LIMIT`` times the setting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable
from typing import Any

import tornado.web
from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError

from .handlers.headers import FIXED_HEADERS, FIXED_HEADERS_TLS
from .handlers.routing import Target, fixed_paths
from .logs import REQUEST_ID_HEADER, request_id_of

access_log = logging.getLogger("tornado.access")
READ_LIMIT = 16  # times a size setting: what Tornado itself reads at most
LINGER_SECONDS = 5.0  # how long a refused client may go on sending before the socket closes
TOO_LARGE = json.dumps({"error": "Request body too large"}).encode()
STATUS = httputil.ResponseStartLine("HTTP/1.1", 413, "Request Entity Too Large")
BODY_HEADERS = (
    ("Content-Type", "application/json; charset=UTF-8"),
    ("Content-Length", str(len(TOO_LARGE))),
)


def refusal_headers(headers: httputil.HTTPHeaders, tls: bool) -> list[tuple[str, str]]:
    """The 413's headers: every response's own (the request id, the security headers)."""
    fixed = FIXED_HEADERS_TLS if tls else FIXED_HEADERS
    return [*BODY_HEADERS, (REQUEST_ID_HEADER, request_id_of(headers)), *fixed]


def closing_answer(headers: list[tuple[str, str]]) -> bytes:
    """The whole answer on a connection taken from Tornado, which then closes."""
    lines = [f"{STATUS.version} {STATUS.code} {STATUS.reason}"]
    lines += [f"{name}: {value}" for name, value in (*headers, ("Connection", "close"))]
    return "\r\n".join(lines).encode("latin1") + b"\r\n\r\n" + TOO_LARGE


_lingering: set[asyncio.Task[None]] = set()  # refusals still draining: kept from the collector


def declared_length(headers: httputil.HTTPHeaders) -> int | None:
    """The Content-Length, if there is one that Tornado would accept."""
    if "Content-Length" not in headers:  # most requests: no body (and no KeyError raised)
        return None
    text = headers["Content-Length"]
    if "," in text:  # repeated by a proxy: Tornado accepts it when every copy is the same
        values = {value.strip() for value in text.split(",")}
        if len(values) != 1:
            return None
        (text,) = values
    return int(text) if text.isascii() and text.isdigit() else None


async def linger(stream: IOStream, answer: bytes, limit: int) -> None:
    """Send the 413, then drop up to ``limit`` bytes the client still sends, then close."""
    try:
        await stream.write(answer)
        stream.socket.shutdown(socket.SHUT_WR)  # the client sees the end of the answer
        async with asyncio.timeout(LINGER_SECONDS):
            while limit > 0:
                limit -= len(await stream.read_bytes(min(limit, 65536), partial=True))
    except (StreamClosedError, OSError, TimeoutError):
        pass  # the client closed, or had its time: either way the answer was sent first
    finally:
        stream.close()


def log_refusal(start_line: httputil.RequestStartLine, connection: HTTP1Connection) -> None:
    access_log.warning(
        "413 %s %s %s (body too large)",
        start_line.method,
        start_line.path.split("?", 1)[0],
        getattr(connection.context, "remote_ip", None),
    )


class BodyLimit(httputil.HTTPMessageDelegate):
    """Passes a request on to the application unless its body is over the limit. One is made
    per request, so it keeps little: what a request without a body costs is a wrapper."""

    __slots__ = (
        "connection", "delegate", "headers", "limit", "received", "refused", "start_line", "tls",
    )  # fmt: skip

    def __init__(
        self,
        delegate: httputil.HTTPMessageDelegate,
        connection: HTTP1Connection,
        limit: int,
        tls: bool,
    ) -> None:
        self.delegate, self.connection, self.limit, self.tls = delegate, connection, limit, tls
        self.headers: httputil.HTTPHeaders | None = None
        self.received = 0
        self.refused = False
        self.start_line: httputil.RequestStartLine | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.start_line, self.headers = start_line, headers
        length = declared_length(headers)
        if length is not None and length > self.limit:
            self.refused = True
            log_refusal(start_line, self.connection)
            stream = self.connection.detach()  # Tornado reads no body and sends no 100 Continue
            answer = closing_answer(refusal_headers(headers, self.tls))
            task = asyncio.ensure_future(
                linger(stream, answer, min(length, self.limit * READ_LIMIT))
            )
            _lingering.add(task)
            task.add_done_callback(_lingering.discard)
            self.delegate.on_connection_close()
            return None
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused:
            return None
        self.received += len(chunk)
        if self.received <= self.limit:
            return self.delegate.data_received(chunk)
        # A chunked body past the limit: answer now, drop the rest as it comes, and finish
        # the response when the body ends, so the connection stays in step with the client.
        self.refused = True
        assert self.start_line is not None
        log_refusal(self.start_line, self.connection)
        self.delegate.on_connection_close()
        assert self.headers is not None
        answer = httputil.HTTPHeaders()
        for name, value in refusal_headers(self.headers, self.tls):
            answer.add(name, value)
        self.connection.write_headers(STATUS, answer, TOO_LARGE)
        return None

    def finish(self) -> None:
        if self.refused:
            self.connection.finish()
        else:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.delegate.on_connection_close()


class Application(tornado.web.Application):
    """A Tornado application that refuses oversized bodies before reading them, and routes a
    request for a fixed path (``/api/dashboard``, ``/healthz``) by a table lookup instead of
    trying each route's pattern in turn; any other path is routed by Tornado."""

    _fixed: dict[str, Target] = {}  # replaced, never changed in place
    _fixed_for: tuple[int, int] | None = None  # the number of rules the table was built for

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> tornado.web._HandlerDelegate:
        rules = len(self.default_router.rules), len(self.wildcard_router.rules)
        if rules != self._fixed_for:  # built on first use, again after add_handlers
            self._fixed, self._fixed_for = fixed_paths(self), rules
        target = self._fixed.get(request.path)
        if target is None:
            return super().find_handler(request, **kwargs)
        return self.get_handler_delegate(request, target[0], target[1])

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        limit = self.settings.get("max_body_size")
        if limit is None or not isinstance(request_conn, HTTP1Connection):
            return delegate
        return BodyLimit(delegate, request_conn, limit, bool(self.settings.get("secure_cookies")))
