"""Commands to one Redis server over one pipelined connection, as ioredis and node-redis do.

Every command asked for while the event loop runs is written with the others in one write, and
the replies are matched to the commands in order. A session load then costs a few microseconds
of this process's time instead of a pooled round trip through redis-py (a connection checked
out and back, a retry wrapper and a response parser per command), which is what a server with
many sessions, each seen now and then, pays on almost every request.

Only idempotent commands go through here: a session's load, and its touch, whose script only
moves the expiry forward and sets fields to given values. A command lost with its connection is
sent once more, on a new connection, as redis-py's own retry does. The connection is opened at
the first command, and again after it is lost; a command unanswered within ``timeout`` closes
it. Plain
``redis://`` and ``unix://`` URLs only (``for_url`` says which): TLS, Sentinel and Cluster keep
redis-py's clients.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import hiredis
from redis.asyncio.connection import parse_url

SUPPORTED = ("redis://", "unix://")


class Script(NamedTuple):
    """A Lua script and its SHA-1, as EVALSHA names it."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


class RedisUnavailable(ConnectionError):
    """No connection, a lost one, or no answer in time."""


class RedisTimeout(RedisUnavailable):
    """A command unanswered within the timeout (not sent again: the server is slow, not gone)."""


class ReplyError(Exception):
    """An error reply of the server (``WRONGTYPE ...``, ``LOADING ...``)."""


def encode(*args: str | bytes) -> bytes:
    """A command in RESP: an array of bulk strings (text as UTF-8, bytes as they are)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    """One connection: commands waiting to be written, and the replies they wait for."""

    def __init__(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        # values as bytes (sessions are MessagePack), error replies as text
        self.reader = hiredis.Reader(replyError=ReplyError)
        self.transport: asyncio.Transport | None = None
        self.outgoing: list[bytes] = []
        # futures of sent commands, oldest first, with when they were asked for
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.lost: BaseException | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise RedisUnavailable(str(self.lost))
        future = self.loop.create_future()
        if not self.outgoing:
            self.loop.call_soon(self._flush)  # the commands of this loop iteration go together
        self.outgoing.append(command)
        self.waiting.append((future, self.loop.time()))
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self.timeout, self._check)
        return future

    def _flush(self) -> None:
        if self.transport is not None and self.outgoing and self.lost is None:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:
                self._fail(RedisUnavailable("redis: a reply nobody asked for"))
                return
            future, _ = self.waiting.popleft()
            if not future.done():  # its caller may have gone away
                future.set_result(reply)

    def _check(self) -> None:
        """Close the connection when its oldest command waited ``timeout`` seconds."""
        self._watchdog = None
        if not self.waiting or self.lost is not None:
            return
        due = self.waiting[0][1] + self.timeout
        if self.loop.time() >= due:
            self._fail(RedisTimeout(f"redis: no answer within {self.timeout:g} s"))
        else:
            self._watchdog = self.loop.call_at(due, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisUnavailable(f"redis: connection lost ({exc or 'closed by the server'})"))

    def _fail(self, error: RedisUnavailable) -> None:
        if self.lost is None:
            self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)
        self.outgoing.clear()
        if self.transport is not None:
            self.transport.abort()


class PipelinedConnection:
    """Idempotent commands over one lazily (re)opened, pipelined connection."""

    def __init__(self, url: str, timeout: float = 5.0, connect_timeout: float = 2.0) -> None:
        options: dict[str, Any] = dict(parse_url(url))
        self.path: str | None = options.get("path")
        self.host: str = options.get("host", "localhost")
        self.port: int = int(options.get("port", 6379))
        self.setup: list[bytes] = []  # sent first on every new connection
        password, username = options.get("password"), options.get("username")
        if password is not None:
            self.setup.append(encode("AUTH", *([username] if username else []), password))
        if int(options.get("db", 0)):
            self.setup.append(encode("SELECT", str(options["db"])))
        self.timeout = float(options.get("socket_timeout") or timeout)
        self.connect_timeout = float(options.get("socket_connect_timeout") or connect_timeout)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._closed = False

    @classmethod
    def for_url(cls, url: str, **options: Any) -> PipelinedConnection | None:
        """A connection for a plain server's URL; None for TLS, Sentinel and Cluster URLs."""
        return cls(url, **options) if url.startswith(SUPPORTED) else None

    async def command(self, *args: str | bytes) -> Any:
        """The server's reply; RedisUnavailable, or ReplyError for an error reply."""
        command = encode(*args)
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connection()
        try:
            reply = await protocol.send(command)
        except RedisUnavailable as error:
            reply = await (await self._again(error)).send(command)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def commands(self, *commands: Sequence[str | bytes]) -> list[Any]:
        """The replies of several commands sent together, error replies as ReplyError values."""
        encoded = [encode(*args) for args in commands]
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connection()
        try:  # gather reads every reply's failure, so none is left unretrieved
            return await asyncio.gather(*[protocol.send(each) for each in encoded])
        except RedisUnavailable as error:
            protocol = await self._again(error)
            return await asyncio.gather(*[protocol.send(each) for each in encoded])

    async def _again(self, error: RedisUnavailable) -> _Protocol:
        """The connection to send lost commands once more on: the server may have restarted
        since the last command. Not after a timeout (the server is slow, not gone)."""
        if isinstance(error, RedisTimeout) or self._closed:
            raise error
        return await self._connection()

    async def script(self, script: Script, keys: Sequence[str | bytes], args: Sequence[str]) -> Any:
        """A Lua script's reply, by its digest, or by its text when the server does not know it."""
        counts = [str(len(keys)), *keys, *args]
        try:
            return await self.command("EVALSHA", script.sha, *counts)
        except ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        return await self.command("EVAL", script.source, *counts)

    async def _connection(self) -> _Protocol:
        """The open connection, or a new one (callers meanwhile share its opening)."""
        if self._closed:
            raise RedisUnavailable("redis: closed")
        if self._protocol is not None and self._protocol.lost is None:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, opening: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not opening.cancelled() and opening.exception() is None:
            self._protocol = opening.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        timeout = self.timeout

        def factory() -> _Protocol:
            return _Protocol(timeout)

        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path is not None:
                    _, protocol = await loop.create_unix_connection(factory, self.path)
                else:
                    _, protocol = await loop.create_connection(factory, self.host, self.port)
            for reply in await asyncio.gather(*(protocol.send(step) for step in self.setup)):
                if isinstance(reply, ReplyError):
                    protocol.transport.abort()  # type: ignore[union-attr]
                    raise RedisUnavailable(f"redis: {reply}")
        except (OSError, TimeoutError) as error:
            raise RedisUnavailable(f"redis: cannot connect ({error or 'timed out'})") from error
        if self._closed:
            protocol.transport.abort()  # type: ignore[union-attr]
            raise RedisUnavailable("redis: closed")
        return protocol

    def close(self) -> None:
        self._closed = True
        if self._protocol is not None:
            self._protocol._fail(RedisUnavailable("redis: closed"))
            self._protocol = None
