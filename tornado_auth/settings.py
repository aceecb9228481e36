"""Settings: typed defaults, an optional YAML file, and TORNADO_AUTH_* environment overrides."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .redact import redact_url

ENV_PREFIX = "TORNADO_AUTH_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|kb|mib|mb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, None: 1}
BACKEND_SCHEMES = (
    "redis://",
    "rediss://",
    "redis+cluster://",
    "redis+sentinel://",
    "mongodb://",
    "mongodb+srv://",
    "sqlite://",
    "memory://",
)


class SettingsError(ValueError):
    """An invalid setting; the message names the key."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``90s``, ``24h``, ``30d``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 24h or 30d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 90s, 24h or 30d, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {value!r}")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from an integer or a string such as ``64KiB``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 65536 or 64KiB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"expected a size such as 65536 or 64KiB, got {value!r}")
        unit = match.group(2).lower() if match.group(2) else None
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    if size <= 0:
        raise ValueError("must be positive")
    return size


def _int(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("expected an integer")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _str(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("expected a string")
    return str(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _str(value).lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _url(value: Any) -> str:
    text = _str(value)
    if not text.startswith(BACKEND_SCHEMES):
        schemes = ", ".join(s.rstrip("/") for s in BACKEND_SCHEMES)
        raise ValueError(f"unsupported URL {redact_url(text)!r}: use one of {schemes}")
    return text


MAIL_SCHEMES = ("smtp://", "smtps://", "file://", "console://")


def _mail_url(value: Any) -> str:
    text = _str(value)
    if not text.startswith(MAIL_SCHEMES):
        schemes = ", ".join(MAIL_SCHEMES)
        raise ValueError(f"unsupported mail URL {redact_url(text)!r}: use one of {schemes}")
    return text


def _public_url(value: Any) -> str:
    text = _str(value).rstrip("/")
    if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", text):
        raise ValueError(f"expected an http(s) base URL such as https://example.com, got {text!r}")
    return text


def _secret(value: Any) -> str | dict[int, str]:
    """A secret string, or a mapping of key version to secret for rotation."""
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("the versioned secret mapping is empty")
        secrets = {}
        for version, secret in value.items():
            secrets[_int(0, 10**6)(version)] = _str(secret)
        return secrets
    return _str(value)


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return _int(0, 10**6)(value)


def _origins(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [origin.strip() for origin in value.split(",") if origin.strip()]
    if isinstance(value, list) and all(isinstance(origin, str) for origin in value):
        return value
    raise ValueError("expected a list of origins such as https://example.com")


def _metrics_listen(value: Any) -> str:
    """off, main, or the host:port of a separate listener."""
    if value is False:  # YAML reads an unquoted off as false
        return "off"
    text = _str(value).strip().lower()
    if text in ("off", "main"):
        return text
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected off, main or host:port such as 127.0.0.1:9464, got {value!r}")
    return text


def _networks(value: Any) -> list[str]:
    """A list of networks in CIDR notation (a single address is a /32 or /128)."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("expected a list of networks such as 10.0.0.0/8")
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise ValueError(f"expected a network such as 10.0.0.0/8, got {item!r}") from None
    return networks


def _log_level(value: Any) -> str:
    return _choice("debug", "info", "warning", "error")(value).upper()


# path -> (default, parser). settings.yaml documents exactly these keys and defaults.
SCHEMA: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "env": ("development", _choice("development", "production")),
    "server.host": ("127.0.0.1", _str),
    "server.port": (8888, _int(0, 65535)),
    "server.processes": (1, _int(0, 256)),
    "server.shutdown_grace": ("10s", parse_duration),
    "server.event_loop": ("auto", _choice("auto", "uvloop", "asyncio")),
    "server.max_connections": (0, _int(0, 10**7)),
    "server.xheaders": (False, _bool),
    "server.max_body_size": ("64KiB", parse_size),
    "server.max_header_size": ("64KiB", parse_size),
    "server.trusted_origins": ([], _origins),
    "secrets.cookie_secret": ("", _secret),
    "secrets.key_version": (None, _optional_int),
    "secrets.secret_file": ("var/cookie_secret", _str),
    "sessions.url": ("sqlite:///var/sessions.db", _url),
    "sessions.cookie_name": ("session", _str),
    "sessions.ttl": ("24h", parse_duration),
    "sessions.remember_me_ttl": ("30d", parse_duration),
    "sessions.absolute_ttl": ("90d", parse_duration),
    "sessions.touch_interval": ("60s", parse_duration),
    "sessions.sweep_interval": ("10m", parse_duration),
    "sessions.samesite": ("lax", _choice("lax", "strict")),
    "sessions.cache_size": (100000, _int(0, 10**7)),
    "sessions.cache_ttl": ("5m", parse_duration),
    "sessions.key_prefix": ("ta:", _str),
    "sessions.max_per_user": (50, _int(0, 10**6)),
    "users.url": ("sqlite:///var/users.db", _url),
    "users.bcrypt_rounds": (12, _int(4, 20)),
    "users.demo_users": (True, _bool),
    "throttle.account_ip_failures": (10, _int(1, 10**9)),
    "throttle.ip_failures": (100, _int(1, 10**9)),
    "throttle.window": ("10m", parse_duration),
    "throttle.ip_registrations": (20, _int(0, 10**9)),
    "throttle.registration_window": ("1h", parse_duration),
    "audit.max_age": ("90d", parse_duration),
    "audit.max_entries": (100000, _int(0, 10**9)),
    "audit.prune_interval": ("1m", parse_duration),
    "live.check_interval": ("2s", parse_duration),
    "live.stats_interval": ("5s", parse_duration),
    "live.ping_interval": ("20s", parse_duration),
    "live.max_sockets_per_session": (10, _int(0, 10**6)),
    "live.max_sockets_per_user": (50, _int(0, 10**6)),
    "server.public_url": ("http://127.0.0.1:8888", _public_url),
    "mail.url": ("file:///var/outbox", _mail_url),
    "mail.from": ("tornado-auth <no-reply@localhost>", _str),
    "mail.retries": (5, _int(0, 100)),
    "mail.retry_backoff": ("2s", parse_duration),
    "security.reauth_ttl": ("10m", parse_duration),
    "security.reset_ttl": ("1h", parse_duration),
    "security.verify_ttl": ("24h", parse_duration),
    "security.email_change_ttl": ("24h", parse_duration),
    "security.undo_ttl": ("7d", parse_duration),
    "security.device_memory": ("90d", parse_duration),
    "security.mfa_pending_ttl": ("5m", parse_duration),
    "security.require_mfa_for_admins": (False, _bool),
    "security.totp_issuer": ("tornado-auth", _str),
    "security.passkey_challenge_ttl": ("5m", parse_duration),
    "users.require_verified_email": (False, _bool),
    "throttle.mail_per_address": (3, _int(1, 10**9)),
    "throttle.mail_per_ip": (20, _int(1, 10**9)),
    "throttle.mail_window": ("1h", parse_duration),
    "logging.level": ("info", _log_level),
    "logging.access_log": (True, _bool),
    "logging.format": ("text", _choice("text", "json")),
    "metrics.listen": ("127.0.0.1:9464", _metrics_listen),
    "metrics.allow": (["127.0.0.1/32", "::1/128"], _networks),
}


@dataclass(frozen=True)
class Settings:
    """Validated settings, read with ``settings["sessions.ttl"]``."""

    values: Mapping[str, Any]

    def __getitem__(self, path: str) -> Any:
        return self.values[path]

    @property
    def production(self) -> bool:
        return bool(self.values["env"] == "production")

    def replace(self, **overrides: Any) -> Settings:
        """A copy with ``section__key=value`` overrides, validated."""
        raw = dict(self.values)
        raw.update({key.replace("__", "."): value for key, value in overrides.items()})
        return Settings(_validate(raw))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in ("secrets.cookie_secret",):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _validate(raw: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for path, value in raw.items():
        if path not in SCHEMA:
            raise SettingsError(f"{path}: unknown setting")
        try:
            values[path] = SCHEMA[path][1](value)
        except ValueError as error:
            raise SettingsError(f"{path}: {error}") from None
    for key in ("sessions.ttl", "sessions.remember_me_ttl", "sessions.absolute_ttl"):
        if values[key] <= 0:
            raise SettingsError(f"{key}: must be positive")
    if values["env"] == "production":
        secret = values["secrets.cookie_secret"]
        secrets = secret.values() if isinstance(secret, dict) else [secret]
        if not secret or any(len(s.encode()) < 32 for s in secrets):
            raise SettingsError(
                "secrets.cookie_secret: production requires a secret of at least 32 bytes"
            )
    secret = values["secrets.cookie_secret"]
    version = values["secrets.key_version"]
    if isinstance(secret, dict) and version not in secret:
        raise SettingsError("secrets.key_version: must name a version of secrets.cookie_secret")
    return values


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        if path not in SCHEMA:
            raise SettingsError(f"{name}: unknown setting {path}")
        overrides[path] = _env_value(path, text)
    return overrides


def _env_value(path: str, text: str) -> Any:
    """Exact text for string settings; YAML (numbers, booleans, lists, mappings) for the rest."""
    parser = SCHEMA[path][1]
    if parser in (_str, _url, _mail_url, _public_url, _metrics_listen) or (
        parser is _secret and not text.lstrip().startswith("{")
    ):
        return text
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_settings(
    config: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then the YAML file, then the environment (``TORNADO_AUTH_*``), then explicit
    overrides; SettingsError naming the key for any invalid value."""
    environ = os.environ if environ is None else environ
    raw = {path: default for path, (default, _) in SCHEMA.items()}
    config = config or environ.get(ENV_PREFIX + "CONFIG")
    if config:
        try:
            tree = yaml.safe_load(Path(config).read_text()) or {}
        except OSError as error:
            raise SettingsError(f"config: cannot read {config}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise SettingsError(f"config: {config} is not valid YAML: {error}") from None
        if not isinstance(tree, Mapping):
            raise SettingsError(f"config: {config} must hold a mapping of settings")
        raw.update(_flatten(tree))
    raw.update(_env_overrides(environ))
    # Overrides may be flat ("sessions.url") or nested ({"sessions": {"url": ...}}).
    raw.update({k: v for k, v in _flatten(overrides or {}).items() if v is not None})
    return Settings(_validate(raw))
