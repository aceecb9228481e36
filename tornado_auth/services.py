"""The services an app runs on (stores, accounts, live hub, throttle, audit), started inside the
running loop and closed with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pymongo.errors import ConfigurationError

from .accounts import Accounts
from .audit import Audit, Retention
from .errors import StoreUnavailable
from .lifecycle import Lifecycle
from .live import LiveHub
from .mail import Mailer, mailer_for_settings
from .metrics import Metrics, backend_name
from .mfa import SecondFactors, SecretBox
from .passkeys import Passkeys, passkeys_for
from .redact import redact
from .sessions import Backend, Lifetime, SessionManager, backend_for_url
from .settings import Settings, SettingsError
from .throttle import Limits, LoginThrottle
from .tokens import TokenStore, tokens_for
from .users import UserStore, store_for_url

log = logging.getLogger("tornado_auth")
CLOSE_WAITS_FOR_TOUCHES = 10.0  # seconds: a store that does not answer fails them within 5


@dataclass
class Services:
    settings: Settings
    backend: Backend
    sessions: SessionManager
    users: UserStore
    accounts: Accounts
    live: LiveHub
    throttle: LoginThrottle
    audit: Audit
    cookie_secret: str | dict[int, str]
    mailer: Mailer
    tokens: TokenStore
    lifecycle: Lifecycle
    mfa: SecondFactors
    passkeys: Passkeys
    metrics: Metrics

    def __post_init__(self) -> None:
        self.mfa.passkeys = self.passkeys  # a passkey is a second factor too

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):  # touches queued by the last responses first
            await asyncio.wait_for(self.sessions.touches_written(), CLOSE_WAITS_FOR_TOUCHES)
        await self.metrics.close()
        await self.lifecycle.close()
        await self.mailer.close()
        await self.audit.close()
        await self.live.close()
        await self.backend.close()
        await self.users.close()

    async def down(self) -> list[str]:
        """The stores that do not answer, e.g. ``session store (redis)``."""
        down = []
        for store in (self.backend.store, self.users):
            try:
                await store.ping()
            except StoreUnavailable as error:
                down.append(f"{error.store} store ({store.name})")
        return down


def cookie_secret(settings: Settings) -> str | dict[int, str]:
    """The configured secret, or in development one generated once and kept on disk."""
    secret: str | dict[int, str] = settings["secrets.cookie_secret"]
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


@contextmanager
def url_setting(settings: Settings, key: str) -> Iterator[None]:
    """A store that refuses its URL (a bad port, an unknown option) is an invalid setting naming
    the key, and the message never shows the URL's password."""
    url = settings[key]
    try:
        yield
    except SettingsError as error:
        raise SettingsError(redact(str(error), url)) from None
    except (ValueError, ConfigurationError) as error:
        raise SettingsError(f"{key}: {redact(str(error), url)}") from None


async def start_services(settings: Settings) -> Services:
    """Connect the stores (inside the running loop, after any fork)."""
    with url_setting(settings, "sessions.url"):
        backend = backend_for_url(
            settings["sessions.url"],
            settings["sessions.key_prefix"],
            cache_size=settings["sessions.cache_size"],
            cache_ttl=settings["sessions.cache_ttl"],
        )
    if backend.store.in_process:
        log.warning("sessions in process memory vanish on restart: not for production")
    with url_setting(settings, "users.url"):
        stored_users = store_for_url(settings["users.url"])
    metrics = Metrics()
    users: UserStore = metrics.timed(stored_users, "users", backend_name(settings["users.url"]))
    lifetime = Lifetime(
        ttl=settings["sessions.ttl"],
        remember_me_ttl=settings["sessions.remember_me_ttl"],
        absolute_ttl=settings["sessions.absolute_ttl"],
        touch_interval=settings["sessions.touch_interval"],
    )
    with url_setting(settings, "sessions.url"):
        await backend.start()
    session_store = metrics.timed(backend.store, "sessions", backend_name(settings["sessions.url"]))
    sessions = SessionManager(
        session_store, backend.events, lifetime, max_per_user=settings["sessions.max_per_user"]
    )
    sessions.on_create(metrics.session_created)
    sessions.on_end(metrics.sessions_end)
    metrics.count_live_sessions(sessions.store.count)
    with url_setting(settings, "users.url"):
        await users.start()
    backend.start_sweeper(settings["sessions.sweep_interval"], sessions.clock)
    live = LiveHub(
        sessions,
        settings["live.check_interval"],
        settings["live.stats_interval"],
        max_per_session=settings["live.max_sockets_per_session"],
        max_per_user=settings["live.max_sockets_per_user"],
        ping_interval=settings["live.ping_interval"],
    )
    live.start()
    live.on_count.append(metrics.sockets_open.set)
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
    throttle = LoginThrottle(backend.counters, limits)
    rounds = settings["users.bcrypt_rounds"]
    accounts = Accounts(users, sessions, throttle, audit, live, rounds)
    accounts.sign_in_outcomes.append(metrics.sign_in)
    await accounts.start()
    with url_setting(settings, "mail.url"):
        mailer = mailer_for_settings(settings)
    tokens = tokens_for(stored_users)
    with url_setting(settings, "users.url"):
        await tokens.start()
    lifecycle = Lifecycle(settings, accounts, tokens, mailer, backend.counters)
    passkey_store = passkeys_for(stored_users)
    with url_setting(settings, "users.url"):
        await passkey_store.start()
    passkeys = Passkeys(settings, accounts, passkey_store, tokens, mailer)
    mfa = SecondFactors(
        accounts,
        tokens,
        SecretBox(secret, settings["secrets.key_version"]),
        mailer,
        public_url=settings["server.public_url"],
        issuer=settings["security.totp_issuer"],
        pending_ttl=settings["security.mfa_pending_ttl"],
    )
    return Services(
        settings, backend, sessions, users, accounts, live, throttle, audit, secret,
        mailer, tokens, lifecycle, mfa, passkeys, metrics,
    )  # fmt: skip
