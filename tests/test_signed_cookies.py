"""The verified-cookie cache: one HMAC per distinct Cookie header, never a bad or stale answer."""

from __future__ import annotations

import time

import pytest
import tornado.web

from tornado_auth.cookies import SignedCookies
from tornado_auth.sessions import token_key

SECRET = "s" * 43
NAME = "session"


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every cookie value whose signature was actually checked."""
    calls: list[str] = []
    real = tornado.web.decode_signed_value

    def counting(secret, name, value, *args, **kwargs):
        calls.append(value)
        return real(secret, name, value, *args, **kwargs)

    monkeypatch.setattr(tornado.web, "decode_signed_value", counting)
    return calls


def signed(token: str, at: float | None = None, secret: str = SECRET) -> str:
    clock = (lambda: at) if at is not None else None
    return tornado.web.create_signed_value(secret, NAME, token, clock=clock).decode()


def test_the_session_cookie_among_others_is_verified_once(verifications):
    cookies = SignedCookies(SECRET, NAME, max_age_days=1)
    value = signed("tok")
    header = f"_xsrf=2|abc|def|123; {NAME}={value}; theme=dark"
    for _ in range(3):
        cookie = cookies.from_header(header)
        assert cookie is not None and cookie.token == "tok" and cookie.key == token_key("tok")
    # The same cookie in other headers is remembered by its value: no second check either.
    assert cookies.from_header(f"{NAME}={value}").token == "tok"
    assert cookies.from_header(header.replace("dark", "light")).token == "tok"
    assert verifications == [value]


def test_a_header_without_the_session_cookie_or_with_a_bad_one_is_anonymous(verifications):
    cookies = SignedCookies(SECRET, NAME, max_age_days=1)
    assert cookies.from_header("theme=dark") is None
    assert cookies.from_header(f"{NAME}=") is None
    assert not verifications  # nothing to verify
    good = signed("tok")
    tampered = good[:-1] + ("0" if good[-1] != "0" else "1")
    for value in (tampered, signed("tok", secret="other" * 9), "garbage"):
        header = f"{NAME}={value}"
        assert cookies.from_header(header) is None
        assert cookies.from_header(header) is None  # a bad cookie is never remembered
    assert len(verifications) == 6


def test_a_remembered_cookie_expires_when_its_signature_does(monkeypatch, verifications):
    cookies = SignedCookies(SECRET, NAME, max_age_days=1)
    now = time.time()
    header = f"{NAME}={signed('tok', at=now - 86400 + 5)}"  # 5 s of validity left
    assert cookies.from_header(header) is not None
    monkeypatch.setattr(time, "time", lambda: now + 10)
    assert cookies.from_header(header) is None  # remembered, yet now too old
    value = header.split("=", 1)[1]
    assert tornado.web.decode_signed_value(SECRET, NAME, value, max_age_days=1) is None
    assert len(verifications) == 2


def test_long_headers_are_remembered_by_their_cookie_alone(verifications):
    cookies = SignedCookies(SECRET, NAME, max_age_days=1)
    padding = "; ".join(f"c{i}={'x' * 40}" for i in range(40))
    value = signed("tok")
    for i in range(3):
        header = f"{padding}; n={i}; {NAME}={value}"
        assert len(header) > SignedCookies.MAX_REMEMBERED_HEADER
        assert cookies.from_header(header).token == "tok"
    assert len(verifications) == 1
    assert list(cookies._known) == [value]


def test_the_cache_is_bounded(verifications):
    cookies = SignedCookies(SECRET, NAME, max_age_days=1)
    cookies.size = 10
    for i in range(50):
        assert cookies.from_header(f"{NAME}={signed(f'tok{i}')}").token == f"tok{i}"
    assert len(cookies._known) <= 10


def test_the_signing_key_version_is_reported():
    secrets = {1: SECRET, 2: "t" * 43}
    cookies = SignedCookies(secrets, NAME, max_age_days=1)
    value = tornado.web.create_signed_value(secrets, NAME, "tok", key_version=2).decode()
    assert cookies.from_header(f"{NAME}={value}").version == 2


def test_the_app_remembers_the_cookies_of_as_many_sessions_as_it_caches(tmp_path):
    from tornado_auth import load_settings
    from tornado_auth.app import auth_settings

    for cached, remembered in ((100_000, 200_000), (0, 10_000)):
        settings = load_settings(environ={}, overrides={"sessions.cache_size": cached,
                                 "secrets.secret_file": f"{tmp_path}/secret"})  # fmt: skip
        services = type("Services", (), {"settings": settings, "cookie_secret": SECRET})()
        assert auth_settings(services)["signed_cookies"].size == remembered


@pytest.mark.parametrize(
    ("secret", "key_version", "secure", "samesite", "name"),
    [
        (SECRET, None, False, "Lax", NAME),
        ({1: SECRET, 2: "t" * 43}, 2, True, "Strict", "__Host-session"),
        (SECRET, None, True, None, NAME),
    ],
)
@pytest.mark.parametrize("token", ["x" * 43, "tok", "a/b+c="])
def test_the_set_cookie_header_is_the_one_tornado_writes(
    monkeypatch, secret, key_version, secure, samesite, name, token
):
    from unittest import mock

    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    from tornado_auth.app import signed_cookies

    monkeypatch.setattr(time, "time", lambda: 1_900_000_000.5)
    settings = dict(cookie_secret=secret, key_version=key_version, session_cookie=name,
                    session_cookie_days=31, secure_cookies=secure, samesite=samesite)  # fmt: skip
    request = HTTPServerRequest(connection=mock.Mock(), headers=HTTPHeaders(Host="example.com"),
                                start_line=RequestStartLine("GET", "/", "HTTP/1.1"))  # fmt: skip
    handler = tornado.web.RequestHandler(tornado.web.Application(**settings), request)
    handler.set_signed_cookie(name, token, expires_days=None, version=None, max_age=86400,
                              path="/", httponly=True, secure=secure,
                              samesite=samesite)  # fmt: skip
    expected = handler._new_cookie[name].OutputString(None)
    assert signed_cookies(settings).set_cookie_header(token, 86400) == expected
    assert signed_cookies(settings).set_cookie_header(token, 0) is None  # Tornado's own, then
