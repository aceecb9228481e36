"""The application factory and the routes an app mounts: the JSON API, the pages and the
dashboard socket, under a URL prefix of the app's choosing."""

from __future__ import annotations

import http.cookies
import ipaddress
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import tornado.web

from . import handlers
from .cookies import SignedCookies
from .handlers.access_log import log_request
from .handlers.headers import StaticFiles
from .handlers.metrics import metrics_routes
from .oversized import Application
from .resources import STATIC, TEMPLATES
from .services import Services
from .templates import LayeredLoader

PARTS = ("api", "pages", "socket")  # what auth_routes can mount; "demo" adds the cookie demo
Rule = tuple[Any, ...]


def auth_routes(prefix: str = "", parts: Iterable[str] = PARTS) -> list[Rule]:
    """The routes to mount, for the chosen parts, each path under ``prefix`` (e.g. "/auth").

    "api": the JSON API, /healthz and /readyz; "pages": the browser pages; "socket": the live
    dashboard socket; "demo": the cookie demo. The pages' CSS and scripts come with "pages".
    """
    chosen = set(parts)
    unknown = chosen - {*PARTS, "demo"}
    if unknown:
        raise ValueError(f"unknown parts: {', '.join(sorted(unknown))}")
    prefix = prefix.rstrip("/")
    rules: list[Rule] = []
    if "api" in chosen:
        rules += handlers.api_routes()
    if "demo" in chosen:
        rules += handlers.demo_routes()
    if "socket" in chosen:
        rules += handlers.socket_routes()
    if "api" in chosen:
        rules += handlers.api_fallback_routes()
    if "pages" in chosen:
        rules += [(r"/static/(.*)", StaticFiles, {"path": str(STATIC)})]
        rules += handlers.recovery.page_routes()
        rules += handlers.mfa.page_routes()
        rules += handlers.passkeys.page_routes()
        rules += handlers.pages.page_routes()
    return [(prefix + rule[0], *rule[1:]) for rule in rules]


def make_app(
    services: Services,
    routes: Sequence[Rule] = (),
    *,
    prefix: str = "",
    parts: Iterable[str] = (*PARTS, "demo"),
    template_path: str | Path | None = None,
    **overrides: Any,
) -> tornado.web.Application:
    """A Tornado application with the app's own ``routes`` (matched first) and ours. It answers
    a declared body over ``server.max_body_size`` with a 413 before reading it.

    ``template_path``: a folder of templates that replace ours by name (e.g. its own
    ``base.html`` restyles every page); any other Tornado setting can be passed as a keyword.
    """
    app_settings = auth_settings(services, prefix=prefix, template_path=template_path)
    if not routes:
        app_settings["default_handler_class"] = handlers.pages.PageNotFoundHandler
    app_settings.update(overrides)
    # overrides may change the secret or the cookie's name
    remembered = app_settings["signed_cookies"].size
    app_settings["signed_cookies"] = signed_cookies(app_settings, remembered)
    own_metrics = [
        (prefix.rstrip("/") + path, handler)
        for path, handler in metrics_routes(services.settings["metrics.listen"])
    ]
    return Application([*routes, *own_metrics, *auth_routes(prefix, parts)], **app_settings)


def auth_settings(
    services: Services, prefix: str = "", template_path: str | Path | None = None
) -> dict[str, Any]:
    """The Application settings our handlers need, from the services' settings: with
    ``auth_routes``, what mounts us into any ``tornado.web.Application``."""
    settings = services.settings
    prefix = prefix.rstrip("/")
    longest = max(settings["sessions.remember_me_ttl"], settings["sessions.ttl"])
    roots = [Path(template_path)] if template_path else []
    values = {
        "services": services,
        "auth_prefix": prefix,
        "cookie_secret": services.cookie_secret,
        "key_version": settings["secrets.key_version"],
        "session_cookie": ("__Host-" if settings.production else "")
        + settings["sessions.cookie_name"],
        "session_cookie_days": math.ceil(min(longest, settings["sessions.absolute_ttl"]) / 86400)
        + 1,
        "secure_cookies": settings.production,
        "samesite": settings["sessions.samesite"].capitalize(),
        "cross_origin_protection": True,
        "trusted_origins": settings["server.trusted_origins"],
        "xsrf_cookies": True,
        "static_handler_class": StaticFiles,  # for an app's own static_path too
        "xsrf_cookie_kwargs": {
            "httponly": True,
            "samesite": "Strict",
            "secure": settings.production,
        },
        "template_loader": LayeredLoader([*roots, TEMPLATES]),
        "login_url": prefix + "/login",
        "serve_traceback": False,
        "log_function": log_request,
        "access_log": settings["logging.access_log"],
        "max_header_size": settings["server.max_header_size"],
        "max_body_size": settings["server.max_body_size"],
        "websocket_ping_interval": settings["live.ping_interval"],
        "websocket_ping_timeout": settings["live.ping_interval"],
        "metrics_allow": [ipaddress.ip_network(net) for net in settings["metrics.allow"]],
    }
    # as many sessions' cookies remembered as their records are cached: a header and a cookie each
    remembered = 2 * max(settings["sessions.cache_size"], 5000)
    values["signed_cookies"] = signed_cookies(values, remembered)
    return values


def signed_cookies(app_settings: dict[str, Any], size: int = 10000) -> SignedCookies:
    """How our handlers read and write the session cookie, from the Application settings."""
    morsel: http.cookies.Morsel[str] = http.cookies.Morsel()
    morsel.set("n", "v", "v")  # the attributes as RequestSession._set_session_cookie sets them
    attributes: dict[str, Any] = {"path": "/", "httponly": True, "max-age": "%d"}
    if app_settings["secure_cookies"]:
        attributes["secure"] = True
    if app_settings["samesite"]:
        attributes["samesite"] = app_settings["samesite"]
    morsel.update(attributes)
    return SignedCookies(
        app_settings["cookie_secret"],
        app_settings["session_cookie"],
        app_settings["session_cookie_days"],
        size,
        key_version=app_settings.get("key_version"),
        attributes=morsel.OutputString().removeprefix("n=v"),
        made_for=(app_settings["secure_cookies"], app_settings["samesite"]),
    )
