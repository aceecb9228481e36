"""The notes example (examples/notes), served in-process on SQLite and on Redis + MongoDB."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest

from examples.notes.app import Running, start
from tornado_auth import Origin

from .conftest import PASSWORD, Client, Store, body, settings_for

# Users and notes in SQLite; sessions in Redis with users and notes in MongoDB; all in MongoDB.
pytestmark = pytest.mark.stores("sqlite", "redis", "mongodb")

SESSION_ENDED = 4001


@asynccontextmanager
async def serving(store: Store) -> AsyncIterator[Running]:
    running = await start(settings_for(store, server__port=0))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def notes(store: Store) -> AsyncIterator[Running]:
    async with serving(store) as running:
        yield running


def client_of(running: Running) -> Client:
    return Client(f"http://127.0.0.1:{running.port}")


async def member(running: Running, email: str, role: str = "user", name: str = "Ann") -> Client:
    """A signed-in client, through the API mounted under /auth."""
    if await running.services.users.by_email(email) is None:
        await running.services.accounts.register(email, name, PASSWORD, Origin(), role)
    client = client_of(running)
    response = await client.post("/auth/api/login", {"email": email, "password": PASSWORD})
    assert response.code == 200, response.body
    return client


async def submit(client: Client, path: str, fields: dict[str, str], page: str) -> Any:
    """Post a form as a browser does: with the XSRF token from the page that holds it."""
    html = (await client.get(page)).body
    token = re.search(rb'name="_xsrf" value="([^"]+)"', html)
    assert token is not None, f"no form on {page}"
    raw = urllib.parse.urlencode({**fields, "_xsrf": token.group(1).decode()})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return await client.request("POST", path, raw=raw, headers=headers)


async def open_socket(client: Client) -> tornado.websocket.WebSocketClientConnection:
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    url = client.base_url.replace("http://", "ws://") + "/ws/notes"
    socket = await tornado.websocket.websocket_connect(HTTPRequest(url, headers={"Cookie": cookie}))
    hello = await socket.read_message()
    assert hello is not None and json.loads(hello)["type"] == "hello"
    return socket


async def next_message(socket: tornado.websocket.WebSocketClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(socket.read_message(), 2.0)
    assert message is not None, f"closed with {socket.close_code}"
    return json.loads(message)


async def texts(client: Client) -> list[str]:
    response = await client.get("/api/notes")
    assert response.code == 200
    return [note["text"] for note in body(response)["notes"]]


@pytest.mark.store_independent  # refused before any store is asked
async def test_anonymous_pages_go_to_the_mounted_login_and_the_api_is_401(notes):
    anonymous = client_of(notes)
    for path in ("/", "/admin/notes"):
        response = await anonymous.get(path)
        assert response.code == 302
        assert response.headers["Location"] == f"/auth/login?next={path}"
    for method, path in [
        ("GET", "/api/notes"),
        ("POST", "/api/notes"),
        ("DELETE", "/api/notes/" + "0" * 32),
        ("PATCH", "/api/preferences"),
        ("GET", "/api/admin/notes"),
    ]:
        response = await anonymous.request(method, path, {"text": "x"} if method != "GET" else None)
        assert (response.code, body(response)) == (401, {"error": "Not authenticated"}), path
    login_page = await anonymous.get("/auth/login?next=/")
    assert login_page.code == 200 and b"Sign in" in login_page.body
    assert b'<a class="brand" href="/">Notes</a>' in login_page.body  # the app's base.html


async def test_sign_in_through_the_prefix_then_create_list_and_remove_notes(notes):
    ann = await member(notes, "ann@example.com")
    bob = await member(notes, "bob@example.com", name="Bob")
    created = await ann.post("/api/notes", {"text": "  Buy milk  "})
    assert created.code == 201
    note = body(created)["note"]
    assert (note["text"], note["author"]) == ("Buy milk", "Ann")
    assert "Buy milk" in await texts(bob)

    refused = await bob.request("DELETE", f"/api/notes/{note['id']}")
    assert (refused.code, body(refused)) == (
        403,
        {"error": "Only its author or an admin can remove a note"},
    )
    assert (await ann.request("DELETE", f"/api/notes/{note['id']}")).code == 204
    assert "Buy milk" not in await texts(bob)
    gone = await ann.request("DELETE", f"/api/notes/{note['id']}")
    assert (gone.code, body(gone)) == (404, {"error": "Note not found"})


@pytest.mark.store_independent  # refused before any store is asked
async def test_bad_notes_are_400_and_store_nothing(notes):
    ann = await member(notes, "ann@example.com")
    before = await texts(ann)
    for bad, error in [
        ({"text": "   "}, "Text is required"),
        ({"text": 42}, "Text must be a string"),
        ({"text": "x" * 1001}, "Text must be at most 1000 characters"),
        ({}, "Text is required"),
    ]:
        response = await ann.post("/api/notes", bad)
        assert (response.code, body(response)) == (400, {"error": error})
    not_json = await ann.request(
        "POST", "/api/notes", raw="text=hi", headers={"Content-Type": "text/plain"}
    )
    assert not_json.code == 415 and "error" in body(not_json)
    assert await texts(ann) == before


async def test_board_page_posts_and_removes_notes_with_forms(notes):
    await notes.services.accounts.register("ann@example.com", "Ann", PASSWORD, Origin())
    browser = client_of(notes)
    signed_in = await submit(
        browser,
        "/auth/login",
        {"email": "ann@example.com", "password": PASSWORD, "next": "/"},
        page="/auth/login?next=/",
    )
    assert (signed_in.code, signed_in.headers["Location"]) == (302, "/")
    posted = await submit(browser, "/", {"text": "<script>alert(1)</script>"}, page="/")
    assert (posted.code, posted.headers["Location"]) == (302, "/")
    board = (await browser.get("/")).body
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in board
    assert b"<script>alert" not in board
    note_id = re.search(rb'action="/notes/([0-9a-f]{32})/remove"', board).group(1).decode()
    removed = await submit(browser, f"/notes/{note_id}/remove", {}, page="/")
    assert removed.code == 302
    assert b"alert(1)" not in (await browser.get("/")).body


async def test_admin_view_is_403_for_a_user_and_open_to_an_admin(notes):
    ann = await member(notes, "ann@example.com")
    root = await member(notes, "root@example.com", role="admin", name="Root")
    note = body(await ann.post("/api/notes", {"text": "mine"}))["note"]

    refused = await ann.get("/api/admin/notes")
    assert (refused.code, body(refused)) == (403, {"error": "Access denied for this role"})
    page = await ann.get("/admin/notes")
    assert page.code == 403 and page.headers["Content-Type"].startswith("text/html")

    stats = body(await root.get("/api/admin/notes"))
    assert stats["byAuthor"]["Ann"] == 1 and stats["total"] >= 1
    assert (await root.get("/admin/notes")).code == 200
    assert (await root.request("DELETE", f"/api/notes/{note['id']}")).code == 204


@pytest.mark.store_independent  # refused before any store is asked
async def test_socket_is_refused_without_a_session(notes):
    url = f"ws://127.0.0.1:{notes.port}/ws/notes"
    with pytest.raises(HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(url)
    assert refused.value.code == 401


async def test_socket_receives_notes_posted_and_removed_in_another_client(notes):
    ann = await member(notes, "ann@example.com")
    bob = await member(notes, "bob@example.com", name="Bob")
    socket = await open_socket(ann)
    note = body(await bob.post("/api/notes", {"text": "hello from Bob"}))["note"]
    assert await next_message(socket) == {"type": "note", "note": note}
    assert (await bob.request("DELETE", f"/api/notes/{note['id']}")).code == 204
    assert await next_message(socket) == {"type": "removed", "id": note["id"]}
    socket.close()


async def test_socket_closes_with_4001_when_signing_out_in_another_tab(notes):
    """Correctness, with a deadline for a loaded machine: how fast is bench/sockets.py's."""
    tab = await member(notes, "ann@example.com")
    socket = await open_socket(tab)
    (server_side,) = notes.board.listeners
    closed, on_close = asyncio.Event(), server_side.on_close

    def close_seen() -> None:
        on_close()
        closed.set()

    server_side.on_close = close_seen  # the app lets go of it when the close handshake ends
    other_tab = client_of(notes)
    other_tab.cookies = dict(tab.cookies)
    assert (await other_tab.post("/auth/api/logout")).code == 200
    assert await asyncio.wait_for(socket.read_message(), 10.0) is None
    assert (socket.close_code, socket.close_reason) == (SESSION_ENDED, "logout")
    await asyncio.wait_for(closed.wait(), 10.0)
    assert not notes.board.listeners


async def test_sort_order_lives_in_the_session_and_colour_with_the_user(store):
    async with serving(store) as notes:
        ann = await member(notes, "ann@example.com")
        for text in ("first", "second"):
            assert (await ann.post("/api/notes", {"text": text})).code == 201
        changed = await ann.request(
            "PATCH", "/api/preferences", {"sort": "oldest", "colour": "#aa0000"}
        )
        assert body(changed) == {"sort": "oldest", "colour": "#aa0000"}
        for bad in ({"sort": "random"}, {"colour": "red"}, {"sort": "newest", "colour": 3}):
            refused = await ann.request("PATCH", "/api/preferences", bad)
            assert refused.code == 400 and "error" in body(refused)
        user = await notes.services.users.by_email("ann@example.com")
        assert user.extra == {"colour": "#aa0000"}

    # Both survive a restart: the sort order in the session store, the colour in the user store.
    async with serving(store) as restarted:
        ann.base_url = client_of(restarted).base_url
        listed = body(await ann.get("/api/notes"))
        assert listed["sort"] == "oldest"
        mine = [note["text"] for note in listed["notes"] if note["author"] == "Ann"]
        assert mine == ["first", "second"]
        note = body(await ann.post("/api/notes", {"text": "third"}))["note"]
        assert note["colour"] == "#aa0000"
        # Another session of the same user has its own sort order, and the same colour.
        phone = await member(restarted, "ann@example.com")
        assert body(await phone.get("/api/preferences")) == {"sort": "newest", "colour": "#aa0000"}


async def test_registering_posts_a_welcome_note_live(notes):
    bob = await member(notes, "bob@example.com", name="Bob")
    socket = await open_socket(bob)
    newcomer = client_of(notes)
    registered = await newcomer.post(
        "/auth/api/register",
        {"email": "cat@example.com", "password": PASSWORD, "name": "Cat"},
    )
    assert registered.code == 201
    event = await next_message(socket)
    assert event["type"] == "note"
    assert (event["note"]["author"], event["note"]["text"]) == ("Notes", "Welcome, Cat! Say hello.")
    assert "Welcome, Cat! Say hello." in await texts(newcomer)
    socket.close()


async def test_notes_store_out_of_service_is_a_503_not_a_traceback(notes):
    ann = await member(notes, "ann@example.com")
    await notes.board.store.close()
    for method, path, payload in [
        ("GET", "/api/notes", None),
        ("POST", "/api/notes", {"text": "lost"}),
        ("GET", "/", None),
    ]:
        response = await ann.request(method, path, payload)
        assert response.code == 503, path
        assert b"Notes store unavailable" in response.body and b"Traceback" not in response.body
