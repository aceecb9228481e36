"""The route a request matched, as its pattern ("/api/sessions/{}"), never the raw path: what
logs and metrics name a request by, with a bounded set of values."""

from __future__ import annotations

import weakref
from typing import Any

import tornado.web

UNMATCHED = "unmatched"  # the default handler: no route matched
_routes: weakref.WeakKeyDictionary[tornado.web.Application, dict[type, list[tuple[Any, str]]]] = (
    weakref.WeakKeyDictionary()
)


def _pattern(matcher: Any) -> str:
    path = getattr(matcher, "_path", None)
    if path is None:
        return str(matcher.regex.pattern).removesuffix("$")
    return str(path).replace("%s", "{}")


def _index(app: tornado.web.Application) -> dict[type, list[tuple[Any, str]]]:
    index = _routes.get(app)
    if index is None:
        index = {}
        for rule in app.wildcard_router.rules:
            if isinstance(rule.target, type):
                index.setdefault(rule.target, []).append((rule.matcher, _pattern(rule.matcher)))
        _routes[app] = index
    return index


def route_of(handler: tornado.web.RequestHandler) -> str:
    """The pattern of the route that chose this handler's class for this request."""
    candidates = _index(handler.application).get(type(handler), [])
    if len(candidates) == 1:
        return candidates[0][1]
    for matcher, pattern in candidates:  # one class behind several routes
        if matcher.match(handler.request) is not None:
            return pattern
    return UNMATCHED
