"""Browser pages."""

from __future__ import annotations

import tornado.web

from .base import BaseHandler


class RootHandler(BaseHandler):
    uses_session = False

    def get(self) -> None:
        self.redirect("/dashboard")


class PageNotFoundHandler(BaseHandler):
    uses_session = False

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)
