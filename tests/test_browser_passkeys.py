"""Passkeys in headless Chromium with a virtual authenticator (the DevTools WebAuthn domain):
add one on the account page, sign out, sign in with it and no password, use it as the second
step after a password, then remove it."""

from __future__ import annotations

from typing import Any

import pyotp
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


async def use_passkey(page: Any, base: str, button: str, screenshot: str) -> list[str]:
    """Press the page's passkey button once it shows; land on the dashboard. What axe found."""
    await page.get_by_role("button", name=button).wait_for()
    found = await axe_violations(page)
    await shot(page, screenshot)
    await page.get_by_role("button", name=button).click()
    await page.wait_for_url(f"{base}/dashboard")
    return found


async def with_authenticator(context: Any, page: Any) -> tuple[Any, str]:
    devtools = await context.new_cdp_session(page)
    await devtools.send("WebAuthn.enable")
    added = await devtools.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return devtools, added["authenticatorId"]


async def test_a_passkey_signs_in_alone_and_as_a_second_step_then_is_removed(app, browser):
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
    found += await use_passkey(page, base, "Sign in with a passkey", "passkeys-login")
    assert await page.get_by_label("Password", exact=True).count() == 0

    # with two-step sign-in on, the passkey is the second step after the password
    started = await page.request.post(f"{base}/api/mfa/totp", data={})
    assert started.ok, await started.text()
    code = pyotp.TOTP((await started.json())["secret"]).now()
    confirmed = await page.request.post(f"{base}/api/mfa/totp/confirm", data={"code": code})
    assert confirmed.ok, await confirmed.text()
    await page.goto(f"{base}/dashboard")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base}/login")
    await page.get_by_label("Email", exact=True).fill("ann@example.com")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(f"{base}/login/mfa*")
    found += await use_passkey(page, base, "Use a passkey", "passkeys-second-step")
    user = await app.services.users.by_email("ann@example.com")
    amrs = [r.data.get("amr") for r in await app.services.sessions.list_user(user.id)]
    assert ["pwd", "passkey"] in amrs

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
