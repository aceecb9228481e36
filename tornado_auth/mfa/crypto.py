"""Second-factor secrets encrypted at rest: Fernet (AES-128-CBC with HMAC-SHA256) under a key
derived with HKDF from the cookie secret, so a copy of the user store alone opens nothing."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["InvalidToken", "SecretBox"]

INFO = b"tornado-auth second-factor secrets v1"


def _fernet(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


class SecretBox:
    """Encrypts with the current cookie secret; decrypts with any configured version, so a
    rotation of ``secrets.cookie_secret`` keeps every enrolled factor working."""

    def __init__(self, secret: str | dict[int, str], version: int | None = None) -> None:
        if isinstance(secret, str):
            keys = [secret]
        else:
            current = secret[version] if version is not None else secret[max(secret)]
            keys = [current, *(value for value in secret.values() if value != current)]
        self._fernet = MultiFernet([_fernet(key) for key in keys])

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        """The plain text; InvalidToken if it was not sealed under any configured secret."""
        return self._fernet.decrypt(sealed.encode()).decode()
