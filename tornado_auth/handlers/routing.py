"""The route a request matched, as its pattern ("/api/sessions/{}"), never the raw path: what
logs and metrics name a request by, with a bounded set of values; and the routes of fixed paths
as a table, so that such a request is routed without trying each pattern in turn."""

from __future__ import annotations

import weakref
from types import SimpleNamespace
from typing import Any, cast

import tornado.web
from tornado.routing import AnyMatches, PathMatches

UNMATCHED = "unmatched"  # the default handler: no route matched
REGEX_SYNTAX = frozenset("\\.^$*+?{}[]|()")
Target = tuple[type[tornado.web.RequestHandler], dict[str, Any]]
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


def fixed_paths(app: tornado.web.Application) -> dict[str, Target]:
    """The handler class and its arguments of each path that a route names exactly (no groups,
    no regex syntax), for the paths that no earlier route matches: the handler Tornado's routing
    would choose for that path. Empty unless every route matches on the path alone (a host
    pattern or another matcher could choose differently for the same path)."""
    default = app.default_router.rules
    if len(default) != 1 or not isinstance(default[0].matcher, AnyMatches):
        return {}
    if default[0].target is not app.wildcard_router:
        return {}
    rules = app.wildcard_router.rules
    matchers = [rule.matcher for rule in rules]
    if not all(isinstance(matcher, PathMatches) for matcher in matchers):
        return {}
    table: dict[str, Target] = {}
    for number, rule in enumerate(rules):
        regex = cast(PathMatches, rule.matcher).regex
        path = regex.pattern.removeprefix("^").removesuffix("$")
        if regex.groups or REGEX_SYNTAX.intersection(path) or path in table:
            continue
        target = rule.target
        if not (isinstance(target, type) and issubclass(target, tornado.web.RequestHandler)):
            continue
        probe: Any = SimpleNamespace(path=path)  # what a path matcher reads of a request
        if rule.matcher.match(probe) is None:
            continue
        if any(earlier.match(probe) is not None for earlier in matchers[:number]):
            continue
        table[path] = (target, rule.target_kwargs)
    return table
