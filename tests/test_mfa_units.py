"""The pieces of second factors on their own: secrets sealed under the cookie secret (and its
rotation), TOTP steps and skew, recovery codes as typed."""

from __future__ import annotations

import pyotp
import pytest

from tornado_auth.mfa import codes, totp
from tornado_auth.mfa.crypto import InvalidToken, SecretBox

NOW = 1_900_000_000.0


def test_a_sealed_secret_opens_only_under_a_configured_cookie_secret():
    box = SecretBox("first secret " * 3)
    sealed = box.seal("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert box.open(sealed) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(InvalidToken):
        SecretBox("another secret " * 3).open(sealed)


def test_after_a_rotation_old_secrets_open_and_new_ones_seal_under_the_current_version():
    old = SecretBox("old secret " * 4)
    sealed = old.seal("secret-a")
    rotated = SecretBox({1: "old secret " * 4, 2: "new secret " * 4}, version=2)
    assert rotated.open(sealed) == "secret-a"
    assert SecretBox("new secret " * 4).open(rotated.seal("secret-b")) == "secret-b"


def test_a_code_matches_its_step_one_step_either_side_and_no_further():
    secret = totp.new_secret()
    step = int(NOW // totp.STEP)
    for offset in (-1, 0, 1):
        code = pyotp.TOTP(secret).at(NOW + offset * totp.STEP)
        assert totp.matching_step(secret, code, NOW) == step + offset
    for offset in (-2, 2):
        code = pyotp.TOTP(secret).at(NOW + offset * totp.STEP)
        if code not in {pyotp.TOTP(secret).at(NOW + o * totp.STEP) for o in (-1, 0, 1)}:
            assert totp.matching_step(secret, code, NOW) is None
    for bad in ("", "12345", "1234567", "12345a", "١٢٣٤٥٦"):
        assert totp.matching_step(secret, bad, NOW) is None


def test_recovery_codes_are_ten_distinct_and_read_in_any_case_with_or_without_dashes():
    fresh = codes.new_codes()
    assert len(set(fresh)) == 10
    code = fresh[0]
    assert len(code) == 19 and code.count("-") == 3
    plain = code.replace("-", "")
    for typed in (code, code.upper(), plain, f" {code[:9]} {code[10:]} "):
        assert codes.normalize(typed) == plain
    for bad in ("", plain[:-1], plain + "a", plain[:-1] + "0", plain[:-1] + "é"):
        assert codes.normalize(bad) is None


def test_the_qr_code_is_an_svg_image_dark_on_white():
    svg = totp.qr_svg(totp.uri(totp.new_secret(), "ann@example.com", "tornado-auth"))
    assert svg.startswith(b"<svg") and b'fill="#fff"' in svg and b"<script" not in svg
