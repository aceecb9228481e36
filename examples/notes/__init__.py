"""Shared notes for signed-in users: an application built only on tornado-auth's public API."""

from .app import make_notes_app, start
from .board import Board
from .store import notes_store

__all__ = ["Board", "make_notes_app", "notes_store", "start"]
