"""Logging: plain text, or one JSON object a line (``logging.format: json``), each record of a
request carrying its id, route and user; and the request id itself, taken from ``X-Request-Id``
when it is safe, else made here."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

REQUEST_ID_HEADER = "X-Request-Id"
# What a caller's id may be: bounded, and nothing a log line or a header could be bent with.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@=+/-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# The request fields a JSON line carries when a record has them.
REQUEST_FIELDS = ("request_id", "method", "route", "status", "duration_ms", "user_id")


@dataclass
class RequestContext:
    """The request being served, as every log record made while serving it sees it."""

    request_id: str
    route: str | None = None
    user_id: str | None = None


current_request: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)


class _RequestIds:
    """New request ids: 32 hex digits, a random half drawn when the process starts (again in a
    forked worker) and a counter, so that ids are unique across processes and restarts without
    asking the kernel for randomness on every request."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_request_ids = _RequestIds()


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-Id`` if it is safe, else a new one."""
    if header is not None and SAFE_REQUEST_ID.fullmatch(header):
        return header
    return _request_ids.new()


def request_id_of(headers: Any) -> str:
    """The request id of a request's headers (``tornado.httputil.HTTPHeaders``): the caller's if
    it is safe (repeated headers count as one, joined, so they are not), else a new one. Read with
    ``get_list``: ``get`` raises and catches a KeyError when there is none, the usual case."""
    given = headers.get_list(REQUEST_ID_HEADER)
    return request_id_from(",".join(given) if given else None)


class RequestFields(logging.Filter):
    """Adds the current request's id, route and user to a record that has none of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_request.get()
        if context is not None:
            for name in ("request_id", "route", "user_id"):
                if getattr(record, name, None) is None:
                    setattr(record, name, getattr(context, name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and the request's
    fields when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in REQUEST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{moment}.{int(record.msecs):03d}Z"


def configure_logging(level: str, output_format: str = "text") -> None:
    """The root logger writes to stderr in the chosen format, request fields added."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if output_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(RequestFields())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
