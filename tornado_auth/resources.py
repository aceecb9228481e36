"""Where the templates and static assets are: inside the installed package (a wheel), else at
the top of the checkout (an editable install or a source tree, where the package maps them)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def _folder(name: str) -> Path:
    packaged = Path(str(importlib.resources.files(__package__) / name))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / name


TEMPLATES = _folder("templates")
STATIC = _folder("static")
