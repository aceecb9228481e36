"""Errors shared by every layer."""

from typing import Any, NoReturn

from .redact import redact


class StoreUnavailable(Exception):
    """A backing store cannot be reached; the request gets a 503 naming the store."""

    def __init__(self, store: str, detail: str) -> None:
        super().__init__(f"{store} store unavailable: {redact(detail)}")
        self.store = store

    @property
    def public_message(self) -> str:
        return f"{self.store.capitalize()} store unavailable"


class ClosedClient:
    """Stands in for a store's client once it is closed: any use raises StoreUnavailable, so a
    late call (a request cut at shutdown, a background task) is an outage, not a library error."""

    def __init__(self, store: str, detail: str) -> None:
        self._error = (store, detail)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise StoreUnavailable(*self._error)

    def __getattr__(self, name: str) -> NoReturn:
        self._refuse()

    __getitem__ = __call__ = _refuse
