"""Bad input gets a clear 4xx JSON error and changes nothing in the stores."""

from __future__ import annotations

import json

import pytest

from .conftest import PASSWORD, body
from .counting import count_writes

# refused before any store is asked: the HTTP handling is one, whichever store is behind it
pytestmark = pytest.mark.store_independent


async def user_count(server) -> int:
    return (await server.services.users.page(0, 1))[1]


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        ("not json", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ('"text"', "application/json", 400),
        ("{", "application/json", 400),
        ('{"email": "a@example.com"}', "text/plain", 415),
        ('{"email": "a@example.com"}', "application/x-www-form-urlencoded", 415),
        (b"\xff\xfe{}", "application/json", 400),
    ],
)
async def test_malformed_bodies_are_400(server, raw, content_type, status):
    for path in ("/api/login", "/api/register"):
        response = await server.client().request(
            "POST", path, raw=raw, headers={"Content-Type": content_type}
        )
        assert response.code == status, path
        assert "error" in body(response)
    assert await user_count(server) == 0


@pytest.mark.parametrize(
    "payload",
    [
        {"email": {"$ne": None}, "password": PASSWORD},
        {"email": "ann@example.com", "password": {"$gt": ""}},
        {"email": ["ann@example.com"], "password": PASSWORD},
        {"email": "ann@example.com"},
        {"password": PASSWORD},
        {"email": "ann@example.com", "password": PASSWORD, "rememberMe": "yes"},
        {"email": "a" * 300 + "@example.com", "password": PASSWORD},
        {"email": "ann@example.com", "password": "p" * 1025},
        {"email": 42, "password": 42},
    ],
)
async def test_login_rejects_wrong_types_and_operators_with_400(server, payload):
    await server.add_user("ann@example.com", PASSWORD)
    response = await server.client().post("/api/login", payload)
    assert response.code == 400
    assert set(body(response)) == {"error"}
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "not-an-email", "password": PASSWORD, "name": "X"},
        {"email": "x@example.com", "password": "short", "name": "X"},
        {"email": "x@example.com", "password": "p" * 1025, "name": "X"},
        {"email": "x@example.com", "password": PASSWORD, "name": ""},
        {"email": "x@example.com", "password": PASSWORD, "name": "n" * 101},
        {"email": "x@example.com", "password": PASSWORD},
        {"email": {"$ne": None}, "password": PASSWORD, "name": "X"},
        {"email": "x@example.com", "password": 12345678, "name": "X"},
        # characters that show one address as another on a page, a terminal or a mail header
        {"email": "a\x1b[31m@example.com", "password": PASSWORD, "name": "X"},
        {"email": "x\x7f\b\b@example.com", "password": PASSWORD, "name": "X"},
        {"email": "nimda\u202e@example.com", "password": PASSWORD, "name": "X"},
        {"email": "admin\u200b@example.com", "password": PASSWORD, "name": "X"},
        {"email": "a\u2028b@example.com", "password": PASSWORD, "name": "X"},
    ],
)
async def test_register_rejects_bad_input_and_stores_nothing(server, payload):
    counted = count_writes(server.services.sessions)
    response = await server.client().post("/api/register", payload)
    assert response.code == 400
    assert set(body(response)) == {"error"}
    assert await user_count(server) == 0
    assert counted.writes == 0


async def test_body_over_the_size_limit_is_refused_and_stores_nothing(server):
    limit = server.services.settings["server.max_body_size"]
    payload = json.dumps({"email": "x@example.com", "password": PASSWORD, "name": "n" * limit})
    response = await server.client().request(
        "POST", "/api/register", raw=payload, headers={"Content-Type": "application/json"}
    )
    assert response.code == 413
    assert body(response) == {"error": "Request body too large"}
    assert await user_count(server) == 0


async def test_error_responses_never_show_a_traceback(server, monkeypatch):
    async def broken(email: str):
        raise RuntimeError("user store bug: ann@example.com hunter22")

    monkeypatch.setattr(server.services.users, "by_email", broken)
    response = await server.client().login("ann@example.com", PASSWORD)
    assert response.code == 500
    assert response.headers["Content-Type"].startswith("application/json")
    assert body(response) == {"error": "Internal server error"}
    malformed = await server.client().request(
        "POST", "/api/login", raw="{bad", headers={"Content-Type": "application/json"}
    )
    assert malformed.code == 400
    assert malformed.headers["Content-Type"].startswith("application/json")
    for answer in (response.body, malformed.body):
        assert b"Traceback" not in answer and b"hunter22" not in answer
