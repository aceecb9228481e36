"""Whether a service answers: Redis's RESP and MongoDB's OP_MSG spoken over a socket.

Standard library only, so that scripts/services runs before any virtualenv exists; the test
fixtures and the benchmarks ask the same questions through these functions.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any, BinaryIO

HOST = "127.0.0.1"


def listening(port: int, host: str = HOST) -> bool:
    """Whether anything accepts connections on ``port``."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


class ServiceError(Exception):
    """A service gave an error reply or could not be started; the message says why."""


# ---------------------------------------------------------------- Redis: RESP over a socket


def redis_command(port: int, *args: str | int, host: str = HOST, timeout: float = 3) -> Any:
    """One command to the Redis server or sentinel on ``port``; its reply, decoded to str."""
    parts = [str(arg).encode() for arg in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        with sock.makefile("rb") as reply:
            return _resp(reply)


def _resp(reply: BinaryIO) -> Any:
    line = reply.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("connection closed before a complete reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise ServiceError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else reply.read(int(rest) + 2)[:-2].decode()
    if kind == b"*":
        return None if int(rest) < 0 else [_resp(reply) for _ in range(int(rest))]
    raise OSError(f"not a Redis reply: {line[:40]!r}")


def _fields(flat: list[str]) -> dict[str, str]:
    """A reply of alternating names and values (SENTINEL MASTER, SENTINEL REPLICAS) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def redis_answers(port: int, host: str = HOST) -> bool:
    """Whether a Redis server answers PING on ``port``."""
    try:
        return bool(redis_command(port, "PING", host=host) == "PONG")
    except (OSError, ServiceError):
        return False


def cluster_answers(ports: Sequence[int], host: str = HOST) -> bool:
    """Whether every node answers and says the cluster is whole."""
    try:
        infos = [redis_command(port, "CLUSTER", "INFO", host=host) for port in ports]
    except (OSError, ServiceError):
        return False
    return all("cluster_state:ok" in i and "cluster_slots_assigned:16384" in i for i in infos)


def sentinel_master(sentinels: Sequence[int], name: str, host: str = HOST) -> int | None:
    """The port of the master the first answering sentinel names, if that master answers."""
    for port in sentinels:
        try:
            address = redis_command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name, host=host)
        except (OSError, ServiceError):
            continue
        if address and redis_answers(int(address[1]), address[0]):
            return int(address[1])
    return None


def sentinel_answers(sentinels: Sequence[int], name: str) -> bool:
    """Whether every sentinel sees the master (no failover under way), a linked replica and all
    the other sentinels: a group that can fail over."""
    try:
        for port in sentinels:
            master = _fields(redis_command(port, "SENTINEL", "MASTER", name))
            replicas = [_fields(r) for r in redis_command(port, "SENTINEL", "REPLICAS", name)]
            others = int(master["num-other-sentinels"])
            linked = [
                r for r in replicas if r["flags"] == "slave" and r["master-link-status"] == "ok"
            ]
            if master["flags"] != "master" or others != len(sentinels) - 1 or not linked:
                return False
    except (OSError, ServiceError, KeyError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- MongoDB: OP_MSG with BSON

OP_MSG = 2013
_FIXED_SIZES = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
_NUMBERS = {0x01: "<d", 0x10: "<i", 0x12: "<q"}


def mongo_command(
    port: int, command: dict[str, int | str], host: str = HOST, timeout: float = 3
) -> dict[str, Any]:
    """One command (``{"ping": 1}``, ``{"hello": 1}``) on the admin database of the MongoDB
    wire-protocol server on ``port``; the reply document."""
    body = struct.pack("<iB", 0, 0) + _bson(command | {"$db": "admin"})  # flags, section kind 0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("<iiii", 16 + len(body), 1, 0, OP_MSG) + body)
        length, _, _, opcode = struct.unpack("<iiii", _receive(sock, 16))
        reply = _receive(sock, length - 16)
    if opcode != OP_MSG or reply[4] != 0:
        raise OSError(f"not an OP_MSG reply (opcode {opcode})")
    return _unbson(reply, 5)


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed before a complete reply")
        data += chunk
    return data


def _bson(document: dict[str, int | str]) -> bytes:
    """The BSON of a command whose values are int32s and strings."""
    out = b""
    for key, value in document.items():
        if isinstance(value, int):
            out += b"\x10" + key.encode() + b"\0" + struct.pack("<i", value)
        else:
            text = value.encode() + b"\0"
            out += b"\x02" + key.encode() + b"\0" + struct.pack("<i", len(text)) + text
    return struct.pack("<i", len(out) + 5) + out + b"\0"


def _unbson(data: bytes, start: int = 0) -> dict[str, Any]:
    """A BSON document: numbers, bools, strings, documents and arrays decoded, the rest raw."""
    end = start + struct.unpack_from("<i", data, start)[0] - 1
    position, document = start + 4, {}
    while position < end:
        kind, name_end = data[position], data.index(b"\0", position + 1)
        name, position = data[position + 1 : name_end].decode(), name_end + 1
        if kind in (0x03, 0x04):  # document, array
            size = struct.unpack_from("<i", data, position)[0]
            value: Any = _unbson(data, position)
            value = list(value.values()) if kind == 0x04 else value
        elif kind in (0x02, 0x05, 0x0D, 0x0E):  # string, binary, code, symbol
            size = struct.unpack_from("<i", data, position)[0] + (5 if kind == 0x05 else 4)
            value = data[position + 4 : position + size - 1].decode(errors="replace")
        elif kind in _FIXED_SIZES:
            size = _FIXED_SIZES[kind]
            raw = data[position : position + size]
            value = struct.unpack(_NUMBERS[kind], raw)[0] if kind in _NUMBERS else raw
            value = bool(raw[0]) if kind == 0x08 else value
        else:
            raise OSError(f"unexpected BSON type {kind:#x} in a reply")
        document[name] = value
        position += size
    return document


def mongo_answers(port: int, host: str = HOST) -> bool:
    """Whether a MongoDB wire-protocol server answers ``ping`` with ok: 1 on ``port``."""
    try:
        return mongo_command(port, {"ping": 1}, host=host).get("ok") == 1
    except (OSError, ValueError, IndexError, struct.error):
        return False
