"""The shared board: notes in their store, pushed live to every open notes socket."""

from __future__ import annotations

from typing import Any, Protocol

from tornado_auth import Origin, User

from .store import Note, NotesStore

DEFAULT_COLOUR = "#3b6ea5"
APP_AUTHOR = "Notes"  # who signs the notes the app writes itself


class Listener(Protocol):
    def write_json(self, payload: dict[str, Any]) -> None: ...


class Board:
    def __init__(self, store: NotesStore) -> None:
        self.store = store
        self.listeners: set[Listener] = set()

    async def post(self, text: str, author: User | None = None) -> Note:
        """Store a note by ``author`` (the app itself if None) and push it to every open tab."""
        if author is None:
            note = Note.new(text, "", APP_AUTHOR, DEFAULT_COLOUR)
        else:
            colour = author.extra.get("colour", DEFAULT_COLOUR)
            note = Note.new(text, author.id, author.name, colour)
        await self.store.add(note)
        self.push({"type": "note", "note": note.public()})
        return note

    async def remove(self, note: Note) -> None:
        if await self.store.remove(note.id):
            self.push({"type": "removed", "id": note.id})

    def push(self, event: dict[str, Any]) -> None:
        # One process: the sockets of this server. Several processes would share events
        # through a broker (e.g. Redis pub/sub); out of scope for the example.
        for listener in list(self.listeners):
            listener.write_json(event)

    async def welcome(self, user: User, origin: Origin) -> None:
        """The ``registered`` hook: everyone sees who joined."""
        await self.post(f"Welcome, {user.name}! Say hello.")
