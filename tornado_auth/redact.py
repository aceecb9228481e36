"""Credentials kept out of every message that shows a URL: settings errors, logs, /readyz."""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@host...: the user info runs to the last "@" before the path
_USER_INFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<info>[^\s/?#]*)@", re.IGNORECASE)


def _mask(info: str) -> str:
    user, has_password, _ = info.partition(":")
    return f"{user}:{MASK}" if has_password else info


def redact_url(url: str) -> str:
    """The URL with its password masked; the user info of a store URL runs to its last "@"
    (hosts never hold one), so a password with an unescaped "/" or "@" is masked whole."""
    scheme, separator, rest = url.partition("://")
    info, at, address = rest.rpartition("@")
    if not separator or not at:
        return url
    return f"{scheme}://{_mask(info)}@{address}"


def redact(text: str, *urls: str) -> str:
    """``text`` with each of ``urls`` masked, and the password of any other URL in it."""
    for url in urls:
        if url:
            text = text.replace(url, redact_url(url))
    return _USER_INFO.sub(lambda m: f"{m['scheme']}{_mask(m['info'])}@", text)
