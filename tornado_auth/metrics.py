"""Prometheus metrics (``prometheus_client``): requests by route and status, sign-ins, sessions,
sockets, store operations and the bcrypt queue; correct across ``serve --processes N`` through
the client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, managed by ``serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import inspect
import ipaddress
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)

from . import tasks
from .errors import StoreUnavailable
from .users import passwords

log = logging.getLogger("tornado_auth")

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
BACKENDS = ("redis", "mongodb", "sqlite", "memory")
LIVE_SESSIONS_INTERVAL = 5.0  # seconds between counts of the live sessions in the store
MIN_VALUES_FILE = 8  # bytes: a values file's header, written when it is created
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR))


class Metrics:
    """This process's metrics. Each instance has a registry of its own (several apps in one
    process, as in the tests); under ``serve`` the values go to the multiprocess directory
    and ``exposition`` reads every process's."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        on = self.registry
        self.requests = Counter(
            "tornado_auth_http_requests_total",
            "HTTP requests answered, by method, route pattern and status",
            ["method", "route", "status"],
            registry=on,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.request_seconds = Histogram(
            "tornado_auth_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route pattern and status",
            ["method", "route", "status"],
            registry=on,
        )
        self.sign_ins = Counter(
            "tornado_auth_signins_total",
            "Sign-ins by outcome: ok, failed (wrong, disabled, unverified) or throttled",
            ["outcome"],
            registry=on,
        )
        self.sessions_created = Counter(
            "tornado_auth_sessions_created_total",
            "Sessions stored (sign-ins, registrations, regenerations)",
            registry=on,
        )
        self.sessions_ended = Counter(
            "tornado_auth_sessions_ended_total",
            "Sessions ended by this server, by reason (logout, revoked, expired, ...)",
            ["reason"],
            registry=on,
        )
        self.sessions_live = Gauge(
            "tornado_auth_sessions_live",
            "Unexpired sessions in the session store (counted every few seconds)",
            multiprocess_mode="livemax",
            registry=on,
        )
        self.sockets_open = Gauge(
            "tornado_auth_websockets_open",
            "Open live dashboard WebSockets",
            multiprocess_mode="livesum",
            registry=on,
        )
        self.connections_open = Gauge(
            "tornado_auth_http_connections_open",
            "Open HTTP connections (a WebSocket leaves this count once upgraded)",
            multiprocess_mode="livesum",
            registry=on,
        )
        self.store_seconds = Histogram(
            "tornado_auth_store_operation_duration_seconds",
            "Time of a store operation, by store (sessions, users), backend and operation",
            ["store", "backend", "operation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=on,
        )
        self.store_errors = Counter(
            "tornado_auth_store_errors_total",
            "Store operations that failed because the store was unavailable",
            ["store", "backend", "operation"],
            registry=on,
        )
        self.bcrypt_queue = Gauge(
            "tornado_auth_bcrypt_queue_length",
            "Password hashing jobs waiting for a bcrypt thread",
            multiprocess_mode="livesum",
            registry=on,
        )
        self.bcrypt_wait = Histogram(
            "tornado_auth_bcrypt_wait_seconds",
            "Time a password hashing job waited for a bcrypt thread",
            registry=on,
        )
        self._task: asyncio.Task[None] | None = None
        passwords.watchers.append(self)

    # -- what the rest of the server tells -------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, status)
        children = self._request_children.get(labels)
        if children is None:  # a few dozen of them: looked up once, not on every request
            named = (method, route, str(status))
            children = self.requests.labels(*named), self.request_seconds.labels(*named)
            self._request_children[labels] = children
        children[0].inc()
        children[1].observe(seconds)

    def sign_in(self, outcome: str) -> None:
        self.sign_ins.labels(outcome).inc()

    def session_created(self) -> None:
        self.sessions_created.inc()

    def sessions_end(self, keys: list[str], user_id: str | None, reason: str) -> None:
        self.sessions_ended.labels(str(reason)).inc(len(keys))

    def queued(self, change: int) -> None:
        self.bcrypt_queue.inc(change)

    def waited(self, seconds: float) -> None:
        self.bcrypt_wait.observe(seconds)

    def timed(self, store: Any, kind: str, backend: str) -> Any:
        """``store`` with each of its coroutine methods timed, and outages counted."""
        return TimedStore(store, self, kind, backend)

    def count_live_sessions(self, count: Callable[[float], Any]) -> None:
        """Every few seconds, the store's count of live sessions (less often where a count takes
        long: ``tasks.pause_after``)."""

        async def every() -> None:
            while True:
                began = time.monotonic()
                try:
                    self.sessions_live.set(await count(time.time()))
                except StoreUnavailable:
                    pass  # the store's outage is counted and logged where it happened
                except Exception:  # any other failure is logged; the counts go on
                    log.exception("the count of live sessions failed")
                took = time.monotonic() - began
                await asyncio.sleep(tasks.pause_after(LIVE_SESSIONS_INTERVAL, took))

        self._task = asyncio.create_task(every())

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            passwords.watchers.remove(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def exposition(self) -> bytes:
        """The text format: every process's values in multiprocess mode, else this registry's."""
        return generate_latest(collected() if multiprocess_mode() else self.registry)


class SettledFiles(multiprocess.MultiProcessCollector):
    """The multiprocess collector, skipping a values file another process is creating this
    instant: it exists empty until its first size is set, and reading it then fails."""

    def collect(self) -> Any:
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            with contextlib.suppress(OSError):  # a worker's files go when it is marked dead
                if os.path.getsize(path) >= MIN_VALUES_FILE:
                    files.append(path)
        return self.merge(files, accumulate=True)


def collected() -> CollectorRegistry:
    """A registry reading every process's values from the multiprocess directory."""
    registry = CollectorRegistry()
    SettledFiles(registry)
    return registry


class TimedStore:
    """A store whose coroutine methods are timed (``store_seconds``) and whose outages are
    counted (``store_errors``); everything else passes through."""

    def __init__(self, inner: Any, metrics: Metrics, kind: str, backend: str) -> None:
        self._inner = inner
        self._metrics = metrics
        self._labels = (kind, backend)
        self._methods: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        timed = self._methods.get(name)  # the request path asks for the same few methods
        if timed is not None:
            return timed
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        timed = self._methods[name] = self._time(name, attribute)
        return timed

    def _time(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        seconds = self._metrics.store_seconds.labels(*self._labels, name)
        errors = self._metrics.store_errors.labels(*self._labels, name)

        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            except StoreUnavailable:
                errors.inc()
                raise
            finally:
                seconds.observe(time.perf_counter() - start)

        return timed


def backend_name(url: str) -> str:
    """The label of a store's kind from its URL: redis, mongodb, sqlite or memory."""
    scheme = url.split("://", 1)[0]
    return next((kind for kind in BACKENDS if scheme.startswith(kind)), scheme)


# -- where the metrics are served ----------------------------------------------------------------


def allowed(remote_ip: str | None, networks: list[Network]) -> bool:
    if not remote_ip:
        return False
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def parse_listen(value: str) -> tuple[str, int] | None:
    """``host:port`` of a separate metrics listener, or None for ``off`` and ``main``."""
    if value in ("off", "main"):
        return None
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def multiprocess_values(listen: str) -> Iterator[None]:
    """For ``serve``: the multiprocess directory (ours, unless the operator named one) for the
    life of the server, set before any store or worker counts. A no-op with ``off``."""
    if listen == "off":
        yield
        return
    own = not os.environ.get(MULTIPROC_DIR)
    directory = os.environ.get(MULTIPROC_DIR) or tempfile.mkdtemp(prefix="tornado-auth-metrics-")
    if not own:  # values left by an earlier run would be counted again
        for stale in os.listdir(directory):
            if stale.endswith(".db"):
                os.remove(os.path.join(directory, stale))
    os.environ[MULTIPROC_DIR] = directory
    values.ValueClass = values.get_value_class()  # chosen at import, before the variable was set
    try:
        yield
    finally:
        if own:
            os.environ.pop(MULTIPROC_DIR, None)
            values.ValueClass = values.get_value_class()
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def metrics_listener(listen: str) -> Iterator[None]:
    """For ``serve``, once the stores are ready: the separate listener ``metrics.listen`` names
    (``host:port``), serving every process's values."""
    address = parse_listen(listen)
    server = None
    if address is not None:
        try:
            server, _ = start_http_server(address[1], address[0], registry=collected())
            log.info("metrics on http://%s:%d/metrics", *address)
        except OSError as error:  # serving sign-ins matters more than serving metrics
            log.error("metrics: cannot listen on %s: %s; /metrics is not served", listen, error)
    try:
        yield
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def process_ended(pid: int) -> None:
    """A worker exited: its live gauges (sockets, connections, queue) stop counting."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)
