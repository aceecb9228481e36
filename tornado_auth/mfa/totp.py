"""Time-based one-time passwords (RFC 6238, through pyotp): secrets, codes within one step either
side of now, and the enrolment QR code as SVG."""

from __future__ import annotations

import hmac
import io

import pyotp
import segno

STEP = 30  # seconds a code lasts
DIGITS = 6
SKEW = 1  # steps accepted either side of now: clocks drift, people type slowly


def new_secret() -> str:
    """160 random bits in base32, as authenticator apps expect."""
    return pyotp.random_base32(32)


def is_code(value: str) -> bool:
    return len(value) == DIGITS and value.isascii() and value.isdigit()


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step ``code`` belongs to, if it is one of now's (one step either side)."""
    if not is_code(code):
        return None
    totp, current = pyotp.TOTP(secret, digits=DIGITS, interval=STEP), int(now // STEP)
    found = None
    for step in range(current - SKEW, current + SKEW + 1):  # every step compared: constant time
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def uri(secret: str, account: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg(text: str) -> bytes:
    """``text`` as a QR code: an SVG image, dark on white (readable in a dark theme too)."""
    out = io.BytesIO()
    segno.make(text, error="m").save(
        out, kind="svg", scale=5, border=4, dark="#000", light="#fff", xmldecl=False,
        title="QR code of your authenticator app's secret",
    )  # fmt: skip
    return out.getvalue()
