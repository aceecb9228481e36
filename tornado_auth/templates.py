"""A template loader over several folders: an app's templates replace ours by name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tornado.template


class LayeredLoader(tornado.template.Loader):
    """Finds each template in the first folder that has it, so an app can replace one page, or
    ``base.html`` to restyle them all, and keep the rest of ours."""

    def __init__(self, roots: Sequence[Path], **kwargs: Any) -> None:
        super().__init__(str(roots[-1]), **kwargs)
        self.roots = [Path(root) for root in roots]

    def _create_template(self, name: str) -> tornado.template.Template:
        for root in self.roots:
            path = (root / name).resolve()
            if path.is_relative_to(root.resolve()) and path.is_file():
                return tornado.template.Template(path.read_bytes(), name=name, loader=self)
        raise FileNotFoundError(f"template not found: {name}")
