"""The documents match the code: every ``file.py::test_name`` in SECURITY.md exists, and the
README's settings and API tables list every setting and every endpoint."""

from __future__ import annotations

import re
from pathlib import Path

import tornado.web

from tornado_auth import handlers
from tornado_auth.handlers import ID
from tornado_auth.settings import SCHEMA

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


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def first_cells(section: str) -> list[str]:
    """The first column of every table row of a README section."""
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [row.split(" | ")[0] for row in rows]


def test_the_readme_settings_table_lists_every_setting():
    documented = {
        key
        for cell in first_cells(readme_section("Settings"))
        for key in re.findall(r"`([\w.]+)`", cell)
    }

    assert documented == set(SCHEMA)


METHODS = ("get", "post", "put", "patch", "delete")


def test_the_readme_api_table_lists_every_endpoint():
    routes = {
        (method.upper(), path.replace(ID, "{id}"))
        for path, handler in (*handlers.api_routes(), *handlers.demo_routes())
        for method in METHODS
        if getattr(handler, method) is not getattr(tornado.web.RequestHandler, method)
    }
    documented = {
        (method, path)
        for cell in first_cells(readme_section("HTTP API"))
        for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^\s?`]*)", cell)
    }

    assert len(routes) > 15
    assert documented == routes
