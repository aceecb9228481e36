"""Running the server: sockets bound once, workers forked, services created after the fork."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import secrets
import signal
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.iostream import IOStream

from .accounts import Origin
from .app import make_app
from .live import LiveHub
from .metrics import metrics_listener, multiprocess_values, process_ended
from .oversized import READ_LIMIT
from .services import Services, start_services
from .settings import Settings, SettingsError
from .tasks import settle

if TYPE_CHECKING:
    from .handlers.lifecycle import Lifecycle

log = logging.getLogger("tornado_auth")
DEMO = Origin(user_agent="tornado-auth serve")  # who created the demo users, for the audit trail
DEMO_USERS = (
    ("admin@example.com", "Demo Admin", "admin"),
    ("user@example.com", "Demo User", "user"),
)


class InFlight:
    """The requests being served, so a shutdown can wait for them, then cut those still running."""

    def __init__(self) -> None:
        self.handlers: set[Lifecycle] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        return len(self.handlers)

    def begin(self, handler: Lifecycle) -> None:
        self.handlers.add(handler)
        self._idle.clear()

    def end(self, handler: Lifecycle) -> None:
        self.handlers.discard(handler)
        if not self.handlers:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()

    async def cut(self) -> None:
        """Stop every request still running; each answers 503 if it has not begun answering."""
        stopped = [work for handler in list(self.handlers) if (work := handler.cut()) is not None]
        if stopped:
            await asyncio.wait(stopped)


async def create_demo_users(services: Services) -> None:
    """In development, an empty user store gets a demo admin and user; passwords shown once."""
    if not services.settings["users.demo_users"] or services.settings.production:
        return
    _, total = await services.users.page(0, 1)
    if total:
        return
    for email, name, role in DEMO_USERS:
        password = secrets.token_urlsafe(12)
        await services.accounts.register(email, name, password, DEMO, role)
        print(f"demo {role}: {email}  password: {password}", flush=True)


async def run_worker(settings: Settings, sockets: list) -> None:
    services = await start_services(settings)
    in_flight = InFlight()
    app = make_app(services, in_flight=in_flight)
    server = http_server(app, settings)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await shut_down(server, services, in_flight, settings["server.shutdown_grace"])


async def shut_down(
    server: tornado.httpserver.HTTPServer, services: Services, in_flight: InFlight, grace: float
) -> None:
    """No new connections; running requests get ``grace`` seconds, then those still running are
    cut (503) before the stores close, so none of them reaches a closed store."""
    log.info("shutting down: no new connections, %ss grace", grace)
    server.stop()
    services.live.close_all()
    try:
        await asyncio.wait_for(in_flight.idle(), grace)
    except TimeoutError:
        log.warning("grace period over: %d requests still running get 503", in_flight.active)
        await in_flight.cut()
    await server.close_all_connections()
    await settle(grace)  # work that runs to its end (a password stored, its sessions ended)
    await services.close()


FILES_KEPT_FREE = 128  # descriptors left for stores, logs and the listening sockets


class CappedHTTPServer(tornado.httpserver.HTTPServer):
    """Closes connections past ``max_connections`` as they arrive: with no descriptor left,
    every accept would fail and the loop would spin on it. Open dashboard sockets count too:
    Tornado forgets a connection once it became a WebSocket, its descriptor stays in use."""

    max_connections = 0
    connections_open: Any = None  # the gauge of open connections, when metrics are kept
    live: LiveHub | None = None  # the app's open sockets, when it has a live hub

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        sockets = self.live.open_sockets if self.live is not None else 0
        if self.max_connections and len(self._connections) + sockets >= self.max_connections:
            stream.close()
            return
        super().handle_stream(stream, address)
        if self.connections_open is not None:
            self.connections_open.inc()

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        if self.connections_open is not None:
            self.connections_open.dec()


def connection_cap(setting: int) -> int:
    """``server.max_connections``, or with 0 the open-file limit less what the process needs
    besides connections. Either way the soft open-file limit is raised to the hard limit first:
    every open connection and dashboard socket holds a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return setting or max(16, soft - FILES_KEPT_FREE)


def http_server(app: tornado.web.Application, settings: Settings) -> tornado.httpserver.HTTPServer:
    """The HTTP server for the app. Past its own limits Tornado closes the connection without a
    response (headers) or with a bare 400 (a chunked body), so it reads up to READ_LIMIT times
    the settings, and the app answers anything over a setting with a JSON 431 or 413 (a declared
    Content-Length over the limit at once: see ``oversized``). Connections past
    ``server.max_connections`` (open dashboard sockets included) are closed as they arrive."""
    server = CappedHTTPServer(
        app,
        xheaders=settings["server.xheaders"],
        max_body_size=settings["server.max_body_size"] * READ_LIMIT,
        max_header_size=settings["server.max_header_size"] * READ_LIMIT,
        idle_connection_timeout=60,
    )
    server.max_connections = connection_cap(settings["server.max_connections"])
    services = app.settings.get("services")
    if services is not None:
        server.connections_open = services.metrics.connections_open
        server.live = services.live
    return server


async def prepare_stores(settings: Settings) -> None:
    """Once, before any worker starts: indexes, tables and, in development, the demo users."""
    services = await start_services(settings)
    try:
        await create_demo_users(services)
    finally:
        await services.close()


def event_loop(settings: Settings) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The name and factory of the event loop ``serve`` runs on (``server.event_loop``)."""
    choice = settings["server.event_loop"]
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SettingsError("server.event_loop: uvloop is not installed") from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def run_on(settings: Settings, work: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=event_loop(settings)[1]) as runner:
        runner.run(work)


def serve(settings: Settings) -> None:
    loop_name = event_loop(settings)[0]  # an event loop that cannot be had fails here, at once
    host, port = settings["server.host"], settings["server.port"]
    sockets = tornado.netutil.bind_sockets(port, host)
    processes = settings["server.processes"] or os.cpu_count() or 1
    listen = settings["metrics.listen"]
    with multiprocess_values(listen):  # every process counts there, summed on each scrape
        asyncio.run(prepare_stores(settings))  # its clients are closed before any fork
        url = f"http://{host}:{sockets[0].getsockname()[1]}"
        with metrics_listener(listen):
            if processes == 1:
                print(f"tornado-auth listening on {url} ({loop_name})", flush=True)
                run_on(settings, run_worker(settings, sockets))
            else:
                Supervisor(settings, sockets, processes).run(url)


class Supervisor:
    """Forks the workers, restarts one that dies, and passes SIGTERM/SIGINT on to every worker."""

    MAX_RESTARTS = 100

    def __init__(self, settings: Settings, sockets: list, processes: int) -> None:
        self.settings, self.sockets, self.processes = settings, sockets, processes
        self.children: dict[int, int] = {}
        self.stopping = False
        self.restarts = 0

    def run(self, url: str) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._forward)
        for index in range(self.processes):
            self._spawn(index)
        print(f"tornado-auth listening on {url} with {self.processes} worker processes "
              f"({event_loop(self.settings)[0]})", flush=True)  # fmt: skip
        while self.children:
            pid, status = os.wait()
            process_ended(pid)
            index = self.children.pop(pid, -1)
            if index < 0 or self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.error("worker %d (pid %d) exited with %d", index, pid, code)
            if self.restarts >= self.MAX_RESTARTS:
                log.error("too many worker restarts: stopping")
                self._forward(signal.SIGTERM, None)
                continue
            self.restarts += 1
            time.sleep(1)  # a worker that dies at once must not spin the machine
            if not self.stopping:
                self._spawn(index)
                log.info("worker %d restarted", index)

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            code = 0
            try:
                run_on(self.settings, run_worker(self.settings, self.sockets))
            except Exception:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = index

    def _forward(self, signum: int, frame: object) -> None:
        self.stopping = True
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
