"""The session cookie: found in a Cookie header and verified, with recent good ones remembered."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import OrderedDict
from typing import Any, NamedTuple

import tornado.web
from tornado import httputil

from .sessions import token_key


class VerifiedCookie(NamedTuple):
    token: str
    key: str  # the store key: the token's SHA-256
    version: int | None  # the signing key's version
    signed_at: float


class SignedCookies:
    """Finds and verifies the session cookie of a Cookie header, remembering recent good ones:
    the header is parsed and the HMAC checked once per distinct header.

    A remembered cookie still honours its signed timestamp, so it expires exactly when Tornado
    would refuse it. Only verified cookies are remembered; headers longer than
    ``MAX_REMEMBERED_HEADER`` are remembered by their session cookie alone, which bounds memory.
    """

    MAX_REMEMBERED_HEADER = 1024

    def __init__(
        self,
        secret: str | dict[int, str],
        name: str,
        max_age_days: float,
        size: int = 10000,
        key_version: int | None = None,
        attributes: str = "; HttpOnly; Max-Age=%d; Path=/",
        made_for: tuple[bool, str | None] = (False, None),
    ) -> None:
        self.secret, self.name, self.max_age = secret, name, max_age_days * 86400
        self._known: OrderedDict[str, VerifiedCookie] = OrderedDict()
        self.size = size  # headers and cookies remembered: two a session, about 650 bytes
        # what ``set_cookie_header`` writes: the signing key, and the cookie's attributes
        self.key_version = key_version
        key = secret.get(key_version or 0) if isinstance(secret, dict) else secret
        self._mac = None if key is None else hmac.new(key.encode(), digestmod=hashlib.sha256)
        self._prefix = b"2|%d:%d|" % (len(str(key_version or 0)), key_version or 0)
        self._name_field = b"|%d:%s|" % (len(name), name.encode())
        self._attributes = attributes
        self._made_for = made_for  # (secure_cookies, samesite) the attributes were made with

    def made_for(self, settings: dict[str, Any]) -> bool:
        """Whether ``set_cookie_header`` writes the cookie these Application settings call for."""
        return (
            settings["session_cookie"] == self.name
            and settings["key_version"] == self.key_version
            and (settings["secure_cookies"], settings["samesite"]) == self._made_for
        )

    def set_cookie_header(self, token: str, max_age: int) -> str | None:
        """A Set-Cookie header value for ``token``, byte for byte what Tornado's
        ``set_signed_cookie`` writes with these attributes, at a fraction of its cost; None
        when there is no key to sign with (a dict of secrets without a key version) and for a
        Max-Age of 0 (which Tornado leaves out)."""
        if self._mac is None or not max_age:
            return None
        timestamp = str(int(time.time())).encode()
        value = base64.b64encode(token.encode())
        to_sign = b"%s%d:%s%s%d:%s|" % (
            self._prefix, len(timestamp), timestamp, self._name_field, len(value), value
        )  # fmt: skip
        mac = self._mac.copy()
        mac.update(to_sign)
        signed = to_sign.decode() + mac.hexdigest()
        if "=" in signed or "/" in signed:  # as http.cookies quotes it
            signed = f'"{signed}"'
        return f"{self.name}={signed}{self._attributes.replace('%d', str(max_age))}"

    def from_header(self, header: str) -> VerifiedCookie | None:
        """The verified session cookie of a Cookie header; None if absent, bad or expired."""
        known = self._known.get(header)
        if known is None:
            value = httputil.parse_cookie(header).get(self.name)  # a dict, no Morsels
            if not value:
                return None
            known = self._known.get(value) or self._verify(value)
            if known is None:
                return None
            self._remember(value, known)
            if len(header) <= self.MAX_REMEMBERED_HEADER:
                self._remember(header, known)
        if time.time() - known.signed_at > self.max_age:
            return None  # Tornado would refuse it now; the entry ages out of the cache
        return known

    def _verify(self, value: str) -> VerifiedCookie | None:
        token = tornado.web.decode_signed_value(
            self.secret, self.name, value, max_age_days=self.max_age / 86400, min_version=2
        )
        if token is None:
            return None
        try:
            text = token.decode()
        except UnicodeDecodeError:
            return None  # validly signed, yet not one of our tokens: anonymous
        version = tornado.web.get_signature_key_version(value)
        signed_at = float(value.split("|")[2].split(":")[1])  # verified v2: "2|kv|ts|name|..."
        return VerifiedCookie(text, token_key(text), version, signed_at)

    def _remember(self, text: str, cookie: VerifiedCookie) -> None:
        self._known[text] = cookie
        if len(self._known) > self.size:
            self._known.popitem(last=False)
