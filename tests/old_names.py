"""Sessions as Redis held them before raw names: a copy of that encoding (``<prefix>s:`` and the
SHA-256 key in base64url, 43 characters, and the same in the user index members), and a way to
put a session committed now under it, exactly as the code before wrote it (the value, expiry,
User-Agent and counts are the same in both)."""

from __future__ import annotations

import base64
import hashlib
import math

import msgpack  # type: ignore[import-untyped]

from tornado_auth.sessions.redis import INDEX_BUCKETS, RedisSessionStore


def old_name(key: str) -> bytes:
    """The name before raw names (a copy of that ``_name``)."""
    if len(key) == 64:
        try:
            return base64.urlsafe_b64encode(bytes.fromhex(key)).rstrip(b"=")
        except ValueError:
            pass
    return f"~{key}".encode()


def old_session_key(store: RedisSessionStore, key: str) -> bytes:
    return f"{store.prefix}s:".encode() + old_name(key)


def old_index_entry(store: RedisSessionStore, user_id: str, key: str) -> tuple[str, bytes]:
    """(bucket, member) before raw names (a copy of that ``index_entry``)."""
    digest = hashlib.sha256(user_id.encode()).hexdigest()
    bucket = int(digest[:4], 16) % INDEX_BUCKETS
    return f"{store.prefix}ui:{bucket:04x}", f"{digest[4:10]}".encode() + old_name(key)


async def put_under_old_name(store: RedisSessionStore, key: str) -> None:
    """Move a session committed now to where the code before raw names kept it."""
    client = store.client
    new = store.session_key(key)
    stored = await client.get(new)
    assert stored, f"no session {key}"
    expiry = await client.pexpiretime(new)
    await client.set(old_session_key(store, key), stored, pxat=expiry)
    await client.delete(new)
    fields = msgpack.unpackb(stored)
    if len(fields) > 8:  # signed in: its index member too
        bucket, member = store.index_entry(fields[8], key)
        await client.zrem(bucket, member)
        old_bucket, old_member = old_index_entry(store, fields[8], key)
        await client.zadd(old_bucket, {old_member: math.ceil(fields[3])})
