"""Pages rendered with this app's own templates, and links under the prefix it is mounted at."""

from __future__ import annotations

from typing import Any

import tornado.web

from ..resources import STATIC
from .flash import take_flash


class Rendering(tornado.web.RequestHandler):
    def url(self, path: str) -> str:
        """A path of ours under the prefix the app mounted us at."""
        prefix: str = self.settings.get("auth_prefix", "")
        return prefix + path

    def auth_static_url(self, path: str) -> str:
        """The versioned URL of one of our static assets."""
        version = tornado.web.StaticFileHandler.get_version({"static_path": str(STATIC)}, path)
        return f"{self.url('/static/')}{path}?v={version}"

    def get_template_path(self) -> str | None:
        """A key of this application's own template loader. Tornado keeps one loader per
        template path for the whole process, so two apps (one with its own ``template_path``)
        would otherwise both render with whichever loader was used first."""
        loader = self.settings.get("template_loader")
        return f"<loader {id(loader):x}>" if loader is not None else super().get_template_path()

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            url=self.url,
            auth_static_url=self.auth_static_url,
            flash=take_flash(self),  # shown once, by whichever page renders next
            here=self.request.path,  # for the navigation's aria-current
        )
        return namespace
