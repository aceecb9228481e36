"""``/metrics`` on the main port (``metrics.listen: main``): only to the networks of
``metrics.allow``; anyone else gets the same 404 as for any unknown path."""

from __future__ import annotations

from typing import Any

import tornado.web

from ..metrics import CONTENT_TYPE, allowed
from .base import BaseHandler


class MetricsHandler(BaseHandler):
    uses_session = False

    def get(self) -> None:
        if not allowed(self.request.remote_ip, self.settings["metrics_allow"]):
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.services.metrics.exposition())


def metrics_routes(listen: str) -> list[tuple[str, Any]]:
    return [(r"/metrics", MetricsHandler)] if listen == "main" else []
