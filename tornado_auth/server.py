"""Running the server: sockets bound once, workers forked, services created after the fork."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal

import tornado.httpserver
import tornado.netutil
import tornado.process

from .app import Services, make_app, start_services
from .handlers.base import InFlight
from .settings import Settings

log = logging.getLogger("tornado_auth")
DEMO_USERS = (
    ("admin@example.com", "Demo Admin", "admin"),
    ("user@example.com", "Demo User", "user"),
)


async def create_demo_users(services: Services) -> None:
    """In development, an empty user store gets a demo admin and user; passwords shown once."""
    if not services.settings["users.demo_users"] or services.settings.production:
        return
    _, total = await services.users.page(0, 1)
    if total:
        return
    for email, name, role in DEMO_USERS:
        password = secrets.token_urlsafe(12)
        await services.accounts.register(email, name, password, role)
        print(f"demo {role}: {email}  password: {password}", flush=True)


async def run_worker(settings: Settings, sockets: list, first: bool) -> None:
    services = await start_services(settings)
    if first:
        await create_demo_users(services)
    in_flight = InFlight()
    app = make_app(services, in_flight=in_flight)
    server = tornado.httpserver.HTTPServer(
        app,
        xheaders=settings["server.xheaders"],
        max_body_size=settings["server.max_body_size"],
        idle_connection_timeout=60,
    )
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: no new connections, %ss grace", settings["server.shutdown_grace"])
    server.stop()
    services.live.close_all()
    try:
        await asyncio.wait_for(in_flight.idle(), settings["server.shutdown_grace"])
    except TimeoutError:
        log.warning("grace period over: %d requests still running are cut", in_flight.active)
    await server.close_all_connections()
    await services.close()


def serve(settings: Settings) -> None:
    host, port = settings["server.host"], settings["server.port"]
    sockets = tornado.netutil.bind_sockets(port, host)
    processes = settings["server.processes"]
    task_id = None
    if processes != 1:
        task_id = tornado.process.fork_processes(processes, max_restarts=100)
    if task_id in (None, 0):
        bound = sockets[0].getsockname()[1]
        print(f"tornado-auth listening on http://{host}:{bound}", flush=True)
    asyncio.run(run_worker(settings, sockets, first=task_id in (None, 0)))
