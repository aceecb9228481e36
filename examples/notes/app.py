"""The notes app: its routes with ours under /auth, its templates over ours, and a server."""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path

import tornado.httpserver
import tornado.netutil
import tornado.web

from tornado_auth import (
    PARTS,
    Services,
    Settings,
    SettingsError,
    load_settings,
    make_app,
    start_services,
)

from . import handlers
from .board import Board
from .store import notes_store

HERE = Path(__file__).parent
AUTH_PREFIX = "/auth"  # our sign-in, account pages and API; the app owns everything else
NOTE_ID = r"([0-9a-f]{32})"


def make_notes_app(services: Services, board: Board) -> tornado.web.Application:
    """The notes routes, with tornado-auth's API, pages and dashboard socket under /auth."""
    services.accounts.hooks.add("registered", board.welcome)
    deps = {"board": board}
    routes = [
        (r"/", handlers.BoardPage, deps),
        (rf"/notes/{NOTE_ID}/remove", handlers.RemovePage, deps),
        (r"/preferences", handlers.PreferencesPage, deps),
        (r"/admin/notes", handlers.AdminPage, deps),
        (r"/api/notes", handlers.NotesApi, deps),
        (rf"/api/notes/{NOTE_ID}", handlers.NoteApi, deps),
        (r"/api/preferences", handlers.PreferencesApi, deps),
        (r"/api/admin/notes", handlers.AdminApi, deps),
        (r"/ws/notes", handlers.NotesSocket, deps),
    ]
    return make_app(
        services,
        routes,
        prefix=AUTH_PREFIX,
        parts=PARTS,  # the API, the pages and the dashboard socket; not the cookie demo
        template_path=HERE / "templates",  # its base.html restyles our pages too
        static_path=HERE / "static",  # the app's own /static/, ours stay under /auth/static/
        default_handler_class=handlers.NotFoundPage,
    )


@dataclass
class Running:
    services: Services
    board: Board
    http: tornado.httpserver.HTTPServer
    port: int

    async def stop(self) -> None:
        """No new connections; open sockets told to go away (1001); then the stores close."""
        self.http.stop()
        self.services.live.close_all()
        await self.http.close_all_connections()
        await self.board.store.close()
        await self.services.close()


async def start(settings: Settings) -> Running:
    """Start the services and the notes store inside the running loop, then listen."""
    services = await start_services(settings)
    store = notes_store(settings)
    await store.start()
    board = Board(store)
    app = make_notes_app(services, board)
    sockets = tornado.netutil.bind_sockets(settings["server.port"], settings["server.host"])
    http = tornado.httpserver.HTTPServer(app, xheaders=settings["server.xheaders"])
    http.add_sockets(sockets)
    return Running(services, board, http, sockets[0].getsockname()[1])


async def serve(settings: Settings) -> None:
    running = await start(settings)
    print(f"notes on http://{settings['server.host']}:{running.port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await running.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.notes", description=__doc__)
    parser.add_argument("--config", help="a tornado-auth settings file (YAML)")
    parser.add_argument("--port", type=int, help="default: server.port (8888)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, overrides={"server": {"port": args.port}})
    except SettingsError as error:
        parser.exit(2, f"{error}\n")
    asyncio.run(serve(settings))
