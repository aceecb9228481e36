"""A client process of ``bench.sockets``: many idle dashboard sockets from one loopback address.

    python -m bench.socket_clients HOST PORT SOURCE_ADDRESS

Commands come as JSON lines on stdin, answers and events go as JSON lines to stdout:
``{"open": [[index, cookie], ...], "concurrency": n}`` opens those sockets (each counts once the
server's hello arrived) and answers ``{"opened": n, "failed": n, "first_failure": ..., "seconds":
s}``; ``{"close": [index, ...]}`` closes those and answers ``{"closed_here": n}``. Every socket
the server closes is told as ``{"closed": index, "code": c, "reason": r, "at": t}``, ``t`` being
``time.monotonic()`` when its close frame (or the end of its connection) arrived: the same clock
in every process of the machine. End of input: every socket is closed.

A minimal WebSocket client on asyncio protocols, so that the clients cost little beside the
server: it sends a browser's handshake, waits for the hello, answers pings and records the close.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import socket
import struct
import sys
import time
from typing import Any

from bench._common import USER_AGENT

# Linux: the port is picked at connect time, per destination, not reserved at bind time
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
OPEN_TIMEOUT = 60.0
CLOSE, PING, PONG = 0x8, 0x9, 0xA


def tell(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked frame (clients must mask), for the short control frames sent here."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class DashboardClient(asyncio.Protocol):
    def __init__(self, index: int, handshake: bytes) -> None:
        self.index = index
        self.handshake = handshake
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.upgraded = False
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.handshake)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")]).decode("latin1")
            if not status.startswith("HTTP/1.1 101"):
                self._fail(f"handshake answered {status!r}")
                return
            del self.buffer[: end + 4]
            self.upgraded = True
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,), start = struct.unpack_from(">H", buffer, 2), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,), start = struct.unpack_from(">Q", buffer, 2), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._frame(opcode, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == PING:
            self.transport.write(client_frame(PONG, payload))
        elif opcode == CLOSE:
            at = time.monotonic()
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            self._closed(code, payload[2:].decode("utf-8", "replace"), at)
            self.transport.write(client_frame(CLOSE, payload[:2]))
            self.transport.close()
        elif not self.opened.done():  # the server's hello: the socket is registered
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self._fail(f"connection lost before the hello: {exc!r}")
        self._closed(None, "connection lost", time.monotonic())

    def _fail(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        self.closed = True  # never opened: not reported as a close
        if self.transport is not None:
            self.transport.close()

    def _closed(self, code: int | None, reason: str, at: float) -> None:
        if not self.closed:
            self.closed = True
            tell({"closed": self.index, "code": code, "reason": reason, "at": at})

    def close(self) -> None:
        self.closed = True  # closed by us: not reported
        if self.transport is not None:
            self.transport.close()


class Clients:
    def __init__(self, host: str, port: int, source: str) -> None:
        self.address, self.source = (host, port), source
        self.origin = f"http://{host}:{port}"
        self.sockets: dict[int, DashboardClient] = {}

    def handshake(self, cookie: str) -> bytes:
        """What Chrome sends to open a socket (header for header), with this session's cookie."""
        key = base64.b64encode(os.urandom(16)).decode()
        host = f"{self.address[0]}:{self.address[1]}"
        lines = [
            "GET /ws/dashboard HTTP/1.1", f"Host: {host}", "Connection: Upgrade",
            "Pragma: no-cache", "Cache-Control: no-cache", f"User-Agent: {USER_AGENT}",
            "Upgrade: websocket", f"Origin: {self.origin}", "Sec-WebSocket-Version: 13",
            "Accept-Encoding: gzip, deflate, br, zstd", "Accept-Language: en-GB,en;q=0.9",
            f"Cookie: {cookie}", f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        ]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin1")

    async def open_one(self, index: int, cookie: str) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source, 0))
            sock.setblocking(False)
            await loop.sock_connect(sock, self.address)
        except BaseException:
            sock.close()
            raise
        client = DashboardClient(index, self.handshake(cookie))
        await loop.create_connection(lambda: client, sock=sock)
        self.sockets[index] = client
        await asyncio.wait_for(client.opened, OPEN_TIMEOUT)

    async def open(self, batch: list[list[Any]], concurrency: int) -> dict[str, Any]:
        began, limit = time.monotonic(), asyncio.Semaphore(concurrency)

        async def one(index: int, cookie: str) -> None:
            async with limit:
                await self.open_one(index, cookie)

        done = await asyncio.gather(*(one(i, c) for i, c in batch), return_exceptions=True)
        failures = [repr(result) for result in done if isinstance(result, BaseException)]
        return {"opened": len(batch) - len(failures), "failed": len(failures),
                "first_failure": failures[0] if failures else None,
                "seconds": time.monotonic() - began}  # fmt: skip

    def close(self, indexes: list[int]) -> dict[str, Any]:
        for index in indexes:
            self.sockets.pop(index).close()
        return {"closed_here": len(indexes)}


async def main(host: str, port: int, source: str) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader(limit=2**30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    clients = Clients(host, port, source)
    try:
        while line := await commands.readline():
            command = json.loads(line)
            if "open" in command:
                tell(await clients.open(command["open"], command["concurrency"]))
            else:
                tell(clients.close(command["close"]))
    finally:
        clients.close(list(clients.sockets))
        await asyncio.sleep(0)  # the transports' closes run


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
