"""A password is opaque: whatever registration accepts signs in, through the API and the pages."""

from __future__ import annotations

import pytest

from tornado_auth.users.passwords import password_problem

from .conftest import Server, body
from .helpers import submit

pytestmark = pytest.mark.parametrize("store", ["sqlite", "mongodb"], indirect=True)

BLANK = ["        ", "\t\t\t\t\n\n\n\n", " \u3000\u2003 \r\n\x0b\x0c "]
# Spaces around and inside, a control character, a tab, non-ASCII: kept exactly, byte for byte.
ODD = "  pass\x01word\t\u00e9 "
EIGHT_SPACES = " " * 8


@pytest.mark.parametrize("password", BLANK, ids=["spaces", "newlines", "unicode"])
async def test_registration_refuses_a_password_of_only_whitespace_with_a_clear_400(
    server: Server, password: str
):
    client = server.client()
    fields = {"email": "ann@example.com", "password": password, "name": "Ann"}
    response = await client.post("/api/register", fields)
    assert response.code == 400
    assert body(response) == {"error": "Password must not be only whitespace"}
    page = await submit(server.client(), "/register", fields)
    assert page.code == 400
    assert b"Password must not be only whitespace." in page.body
    assert await server.services.users.by_email("ann@example.com") is None


async def test_a_new_password_of_only_whitespace_is_refused_and_the_old_one_kept(server: Server):
    await server.add_user("ann@example.com", "password123")
    client = server.client()
    assert (await client.login("ann@example.com", "password123")).code == 200
    change = {"currentPassword": "password123", "newPassword": EIGHT_SPACES}
    response = await client.post("/api/password", change)
    assert response.code == 400
    assert body(response) == {"error": "New password must not be only whitespace"}
    assert (await server.client().login("ann@example.com", "password123")).code == 200


async def test_an_account_with_a_password_of_spaces_signs_in_and_changes_it(server: Server):
    # Registered before whitespace-only passwords were refused: it must still sign in.
    assert password_problem(EIGHT_SPACES) is not None
    await server.add_user("ann@example.com", EIGHT_SPACES)
    api = server.client()
    assert (await api.login("ann@example.com", EIGHT_SPACES)).code == 200
    page = await submit(
        server.client(), "/login", {"email": "ann@example.com", "password": EIGHT_SPACES}
    )
    assert page.code == 302 and page.headers["Location"] == "/dashboard"
    change = {"currentPassword": EIGHT_SPACES, "newPassword": "a real password"}
    assert (await api.post("/api/password", change)).code == 200
    assert (await server.client().login("ann@example.com", "a real password")).code == 200


async def test_a_password_registered_on_the_page_signs_in_through_the_api_exactly(server: Server):
    fields = {"email": "ann@example.com", "password": ODD, "name": "Ann"}
    assert (await submit(server.client(), "/register", fields)).code == 302
    assert (await server.client().login("ann@example.com", ODD)).code == 200
    for altered in (ODD.strip(), ODD.replace("\x01", " "), ODD + " "):
        assert (await server.client().login("ann@example.com", altered)).code == 401


async def test_a_password_registered_through_the_api_signs_in_on_the_page_exactly(
    server: Server,
):
    fields = {"email": "ann@example.com", "password": ODD, "name": "Ann"}
    assert (await server.client().post("/api/register", fields)).code == 201
    page = await submit(server.client(), "/login", {"email": "ann@example.com", "password": ODD})
    assert page.code == 302
    stripped = {"email": "ann@example.com", "password": ODD.strip()}
    assert (await submit(server.client(), "/login", stripped)).code == 401


async def test_an_empty_or_missing_password_at_sign_in_is_still_a_400(server: Server):
    await server.add_user("ann@example.com", "password123")
    for fields in ({"email": "ann@example.com", "password": ""}, {"email": "ann@example.com"}):
        response = await server.client().post("/api/login", fields)
        assert response.code == 400
        assert body(response) == {"error": "Password is required"}
    change = {"currentPassword": "", "newPassword": "password456"}
    client = server.client()
    await client.login("ann@example.com", "password123")
    response = await client.post("/api/password", change)
    assert response.code == 400
    assert body(response) == {"error": "Current password is required"}


async def test_a_page_password_longer_than_the_limit_is_refused_not_cut(server: Server):
    await server.add_user("ann@example.com", "p" * 1024)
    too_long = {"email": "ann@example.com", "password": "p" * 1024 + "x"}
    page = await submit(server.client(), "/login", too_long)
    assert page.code == 400
    assert b"at most 1024 characters" in page.body
