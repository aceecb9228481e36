"""The application factory: services built inside the running loop, then the route table."""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.web

from . import handlers
from .accounts import Accounts
from .audit import Audit, Retention
from .errors import StoreUnavailable
from .live import LiveHub
from .sessions import Lifetime, SessionManager, backend_for_url
from .settings import Settings, SettingsError
from .throttle import Limits, LoginThrottle
from .users import UserStore, store_for_url

log = logging.getLogger("tornado_auth")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Services:
    settings: Settings
    sessions: SessionManager
    users: UserStore
    accounts: Accounts
    live: LiveHub
    throttle: LoginThrottle
    audit: Audit
    cookie_secret: str | dict[int, str]

    async def close(self) -> None:
        await self.audit.close()
        await self.live.close()
        await self.sessions.close()
        await self.users.close()

    async def down(self) -> list[str]:
        """The stores that do not answer, e.g. ``session store (redis)``."""
        down = []
        for store in (self.sessions.backend, self.users):
            try:
                await store.ping()
            except StoreUnavailable as error:
                down.append(f"{error.store} store ({store.name})")
        return down


def cookie_secret(settings: Settings) -> str | dict[int, str]:
    """The configured secret, or in development one generated once and kept on disk."""
    secret = settings["secrets.cookie_secret"]
    if secret:
        return secret
    if settings.production:
        raise SettingsError("secrets.cookie_secret: production requires a configured secret")
    path = Path(settings["secrets.secret_file"])
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def audit_retention(settings: Settings) -> Retention:
    return Retention(
        max_age=settings["audit.max_age"],
        max_entries=settings["audit.max_entries"],
        prune_interval=settings["audit.prune_interval"],
    )


async def start_services(settings: Settings) -> Services:
    """Connect the stores (inside the running loop, after any fork)."""
    backend = backend_for_url(settings["sessions.url"], settings["sessions.key_prefix"])
    if backend.name == "memory":
        log.warning(
            "memory:// sessions live in one process and vanish on restart: not for production"
        )
    try:
        users = store_for_url(settings["users.url"])
    except ValueError as error:
        raise SettingsError(f"users.url: {error}") from None
    lifetime = Lifetime(
        ttl=settings["sessions.ttl"],
        remember_me_ttl=settings["sessions.remember_me_ttl"],
        absolute_ttl=settings["sessions.absolute_ttl"],
        touch_interval=settings["sessions.touch_interval"],
    )
    await backend.start()
    sessions = SessionManager(
        backend,
        lifetime,
        cache_size=settings["sessions.cache_size"],
        cache_ttl=settings["sessions.cache_ttl"],
    )
    await users.start()
    if backend.name != "redis":
        sessions.start_sweeper(settings["sessions.sweep_interval"])
    live = LiveHub(sessions, settings["live.check_interval"], settings["live.stats_interval"])
    live.start()
    limits = Limits(
        account_ip_failures=settings["throttle.account_ip_failures"],
        ip_failures=settings["throttle.ip_failures"],
        window=settings["throttle.window"],
        ip_registrations=settings["throttle.ip_registrations"],
        registration_window=settings["throttle.registration_window"],
    )
    secret = cookie_secret(settings)
    current = secret[settings["secrets.key_version"]] if isinstance(secret, dict) else secret
    audit = Audit(users, current.encode(), audit_retention(settings))
    audit.start()
    throttle = LoginThrottle(backend, limits)
    rounds = settings["users.bcrypt_rounds"]
    accounts = Accounts(users, sessions, throttle, audit, live, rounds)
    await accounts.start()
    return Services(settings, sessions, users, accounts, live, throttle, audit, secret)


def make_app(services: Services, **overrides: Any) -> tornado.web.Application:
    settings = services.settings
    longest = max(settings["sessions.remember_me_ttl"], settings["sessions.ttl"])
    app_settings: dict[str, Any] = {
        "services": services,
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
        "xsrf_cookie_kwargs": {
            "httponly": True,
            "samesite": "Strict",
            "secure": settings.production,
        },
        "template_path": str(ROOT / "templates"),
        "static_path": str(ROOT / "static"),
        "login_url": "/login",
        "serve_traceback": False,
        "log_function": handlers.base.log_request,
        "default_handler_class": handlers.pages.PageNotFoundHandler,
        "access_log": settings["logging.access_log"],
        "max_header_size": settings["server.max_header_size"],
        "max_body_size": settings["server.max_body_size"],
        "websocket_ping_interval": settings["live.ping_interval"],
        "websocket_ping_timeout": settings["live.ping_interval"],
    }
    app_settings.update(overrides)
    app_settings["signed_cookies"] = handlers.base.SignedCookies(
        app_settings["cookie_secret"],
        app_settings["session_cookie"],
        app_settings["session_cookie_days"],
    )
    return tornado.web.Application(handlers.routes(), **app_settings)
