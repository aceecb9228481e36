"""Recovery codes: ten per user, 80 random bits each, written in an alphabet without look-alike
characters and grouped for reading (``k7m2-x9pq-4rtw-hn3c``)."""

from __future__ import annotations

import secrets

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i
LENGTH = 16  # 16 characters of 31: 79 bits, beyond guessing even from a copy of the hashes
COUNT = 10
FEW = 3  # at or below this many left, the pages warn


def new_codes(count: int = COUNT) -> list[str]:
    codes = ["".join(secrets.choice(ALPHABET) for _ in range(LENGTH)) for _ in range(count)]
    return ["-".join(code[i : i + 4] for i in range(0, LENGTH, 4)) for code in codes]


def normalize(value: str) -> str | None:
    """A code as typed (any case, spaces or dashes) in its stored form; None if it cannot be one."""
    code = "".join(value.split()).replace("-", "").lower()
    if len(code) != LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code
