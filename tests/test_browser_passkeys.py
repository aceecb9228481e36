"""Passkeys in headless Chromium with a virtual authenticator (the DevTools WebAuthn domain):
add one on the account page, sign out, sign in with it and no password, then remove it."""

from __future__ import annotations

from typing import Any

import pytest

from tornado_auth.passkeys import relying_party

from .conftest import PASSWORD, Server
from .helpers import axe_violations, browser_sign_in, shot

pytestmark = pytest.mark.browser

AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


def served_at_localhost(app: Server) -> str:
    """The app's address as http://localhost:PORT: browsers accept a domain, never an IP
    address, as the relying party; the passkeys' relying party follows."""
    base = f"http://localhost:{app.port}"
    passkeys = app.services.passkeys
    passkeys.public_url = base
    passkeys.rp_id, passkeys.origin = relying_party(base)
    return base


async def with_authenticator(context: Any, page: Any) -> tuple[Any, str]:
    devtools = await context.new_cdp_session(page)
    await devtools.send("WebAuthn.enable")
    added = await devtools.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return devtools, added["authenticatorId"]


async def test_add_a_passkey_sign_in_with_it_without_a_password_then_remove_it(app, browser):
    await app.add_user("ann@example.com", PASSWORD, name="Ann")
    base = served_at_localhost(app)
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    devtools, authenticator = await with_authenticator(context, page)
    found: list[str] = []

    await browser_sign_in(page, base, "ann@example.com")
    await page.goto(f"{base}/account")
    assert "You have no passkeys yet." in await page.locator("#passkeys").inner_text()
    await page.get_by_label("Name of the new passkey").fill("This laptop")
    await page.get_by_role("button", name="Add a passkey").click()
    await page.locator(".passkey", has_text="This laptop").wait_for()
    found += await axe_violations(page)
    await shot(page, "passkeys-account")
    held = await devtools.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    assert len(held["credentials"]) == 1 and held["credentials"][0]["isResidentCredential"]

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base}/login")
    await page.get_by_role("button", name="Sign in with a passkey").wait_for()
    found += await axe_violations(page)
    await shot(page, "passkeys-login")
    await page.get_by_role("button", name="Sign in with a passkey").click()
    await page.wait_for_url(f"{base}/dashboard")
    assert await page.get_by_label("Password", exact=True).count() == 0

    await page.goto(f"{base}/account")
    assert "Never" not in await page.locator(".passkey").inner_text()  # last used: just now
    await page.get_by_role("button", name="Remove the passkey This laptop").click()
    await page.locator("#confirm-dialog[open]").wait_for()
    found += await axe_violations(page)
    await page.locator("#confirm-dialog").get_by_role("button", name="Remove").click()
    await page.locator(".flash-success", has_text="The passkey was removed.").wait_for()
    assert "You have no passkeys yet." in await page.locator("#passkeys").inner_text()
    found += await axe_violations(page)

    events = [entry.public() for entry in (await app.services.audit.page(0, 50))[0]]
    names = [e["event"] for e in events]
    assert {"passkey_added", "passkey_removed"} <= set(names)
    assert any(e["event"] == "signin" and e["detail"] == {"method": "passkey"} for e in events)
    assert found == [], "\n".join(found)
    assert errors == []
    await context.close()


async def test_a_passkey_the_site_does_not_know_is_refused_on_the_page(app, browser):
    await app.add_user("ann@example.com", PASSWORD, name="Ann")
    base = served_at_localhost(app)
    context = await browser.new_context()
    page = await context.new_page()
    await with_authenticator(context, page)
    await browser_sign_in(page, base, "ann@example.com")
    await page.goto(f"{base}/account")
    await page.get_by_role("button", name="Add a passkey").click()
    await page.locator(".passkey", has_text="Passkey").wait_for()

    user = await app.services.users.by_email("ann@example.com")
    for passkey in await app.services.passkeys.of_user(user.id):  # forgotten by the site
        await app.services.passkeys.store.remove(passkey.credential_id)
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_role("button", name="Sign in with a passkey").click()
    status = page.locator("#passkey-signin-status")
    await status.filter(has_text="Passkey not recognised").wait_for()
    assert page.url.startswith(f"{base}/login")
    await context.close()
