"""The documents point at tests that exist: every ``file.py::test_name`` in SECURITY.md."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`(?:tests/)?(test_\w+\.py)?((?:::\w+)?)`")


def references(text: str) -> list[tuple[str, str]]:
    """(file, test or "") pairs; ``::name`` alone means the file named just before it."""
    found, current = [], None
    for match in REFERENCE.finditer(text):
        name, test = match.group(1), match.group(2).removeprefix("::")
        if name is None and not test:
            continue
        current = name or current
        assert current is not None, f"{match.group(0)} names no file"
        found.append((current, test))
    return found


def test_every_test_security_md_names_exists():
    text = (REPO / "SECURITY.md").read_text()
    named = references(text)
    assert len(named) > 30
    for name, test in named:
        path = REPO / "tests" / name
        assert path.exists(), f"SECURITY.md names {name}, which does not exist"
        if test:
            assert re.search(rf"def {test}\b", path.read_text()), f"{name}::{test} is missing"
