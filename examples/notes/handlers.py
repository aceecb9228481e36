"""The notes' handlers: pages with forms, the same as JSON, an admin view, and the live socket."""

from __future__ import annotations

import re
from typing import Any

import tornado.web

from tornado_auth import (
    ApiError,
    ApiHandler,
    BaseHandler,
    SessionWebSocket,
    User,
    admin_required,
    authenticated,
    role_required,
    text_field,
)

from .board import DEFAULT_COLOUR, Board
from .store import Note

MAX_TEXT = 1000
SORTS = ("newest", "oldest")
COLOUR = re.compile(r"^#[0-9a-f]{6}$")


class NotesHandler(BaseHandler):
    """What every notes handler shares: the board, the author, the sort order."""

    def initialize(self, board: Board) -> None:
        super().initialize()
        self.board = board

    async def author(self) -> User:
        """The signed-in user's record: name and display colour."""
        user = await self.services.users.get(self.current_user.id)
        if user is None:  # deleted while signed in
            raise ApiError(401, "Not authenticated")
        return user

    @property
    def sort(self) -> str:
        """The order this visitor chose, kept in their session."""
        return self.session.get("sort", "newest")

    async def notes(self) -> list[Note]:
        return await self.board.store.latest(newest_first=self.sort == "newest")

    async def note_to_remove(self, note_id: str) -> Note:
        """The note, if this user may remove it (its author or an admin); else 404 or 403."""
        note = await self.board.store.get(note_id)
        if note is None:
            raise ApiError(404, "Note not found")
        if note.author_id != self.current_user.id and not self.current_user.is_admin:
            raise ApiError(403, "Only its author or an admin can remove a note")
        return note

    def set_preferences(self, sort: str | None, colour: str | None) -> None:
        if sort is not None and sort not in SORTS:
            raise ApiError(400, f"Sort must be one of {', '.join(SORTS)}")
        if colour is not None and not COLOUR.match(colour):
            raise ApiError(400, "Colour must look like #1a2b3c")
        if sort is not None:
            self.session["sort"] = sort

    def note_text(self, text: str | None) -> str:
        text = (text or "").strip()
        if not text:
            raise ApiError(400, "Text is required")
        if len(text) > MAX_TEXT:
            raise ApiError(400, f"Text must be at most {MAX_TEXT} characters")
        return text


# -- pages ---------------------------------------------------------------------------------------


class BoardPage(NotesHandler):
    @authenticated
    async def get(self) -> None:
        user = await self.author()
        colour = user.extra.get("colour", DEFAULT_COLOUR)
        self.render("notes.html", notes=await self.notes(), sort=self.sort, colour=colour)

    @authenticated
    async def post(self) -> None:
        text = self.note_text(self.get_body_argument("text", ""))
        await self.board.post(text, await self.author())
        self.redirect("/")


class RemovePage(NotesHandler):
    @authenticated
    async def post(self, note_id: str) -> None:
        await self.board.remove(await self.note_to_remove(note_id))
        self.redirect("/")


class PreferencesPage(NotesHandler):
    @authenticated
    async def post(self) -> None:
        colour = self.get_body_argument("colour", None)
        self.set_preferences(self.get_body_argument("sort", None), colour)
        if colour is not None:
            await self.services.accounts.set_extra(self.current_user.id, colour=colour)
        self.redirect("/")


class AdminPage(NotesHandler):
    @admin_required
    async def get(self) -> None:
        counts = await self.board.store.count_by_author()
        self.render("admin_notes.html", counts=counts, listeners=len(self.board.listeners))


class NotFoundPage(BaseHandler):
    """Any other path: our error page, in the app's style."""

    uses_session = False

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


# -- JSON ----------------------------------------------------------------------------------------


class NotesApi(NotesHandler, ApiHandler):
    @authenticated
    async def get(self) -> None:
        notes = [note.public() for note in await self.notes()]
        self.send_json({"notes": notes, "sort": self.sort})

    @authenticated
    async def post(self) -> None:
        text = self.note_text(text_field(self.json_body(), "text", MAX_TEXT))
        note = await self.board.post(text, await self.author())
        self.send_json({"note": note.public()}, 201)


class NoteApi(NotesHandler, ApiHandler):
    @authenticated
    async def delete(self, note_id: str) -> None:
        await self.board.remove(await self.note_to_remove(note_id))
        self.set_status(204)


class PreferencesApi(NotesHandler, ApiHandler):
    @authenticated
    async def get(self) -> None:
        user = await self.author()
        self.send_json({"sort": self.sort, "colour": user.extra.get("colour", DEFAULT_COLOUR)})

    @authenticated
    async def patch(self) -> None:
        body = self.json_body()
        colour = text_field(body, "colour", 7, required=False)
        self.set_preferences(text_field(body, "sort", 10, required=False), colour)
        user = await self.author()
        if colour is not None:
            user = await self.services.accounts.set_extra(user.id, colour=colour) or user
        self.send_json({"sort": self.sort, "colour": user.extra.get("colour", DEFAULT_COLOUR)})


class AdminApi(NotesHandler, ApiHandler):
    @role_required("admin")
    async def get(self) -> None:
        counts = await self.board.store.count_by_author()
        self.send_json(
            {
                "total": sum(counts.values()),
                "byAuthor": counts,
                "listeners": len(self.board.listeners),
            }
        )


# -- the live socket -----------------------------------------------------------------------------


class NotesSocket(SessionWebSocket):
    """Every new or removed note, live; closed with 4001 when the session ends."""

    def initialize(self, board: Board) -> None:
        super().initialize()
        self.board = board

    def opened(self, *args: Any, **kwargs: Any) -> None:
        self.board.listeners.add(self)
        self.write_json({"type": "hello", "email": self.current_user.email})

    def on_message(self, message: str | bytes) -> None:
        """Notes are posted over HTTP; the socket only listens."""

    def on_close(self) -> None:
        self.board.listeners.discard(self)
        super().on_close()
