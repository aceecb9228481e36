"""Errors shared by every layer."""


class StoreUnavailable(Exception):
    """A backing store cannot be reached; the request gets a 503 naming the store."""

    def __init__(self, store: str, detail: str) -> None:
        super().__init__(f"{store} store unavailable: {detail}")
        self.store = store

    @property
    def public_message(self) -> str:
        return f"{self.store.capitalize()} store unavailable"
