"""Headless Chromium through the emailed links: register, verify the address from the captured
message, sign out, forget the password, reset it from the captured message, and see that a
session in a second browser was ended."""

from __future__ import annotations

import pytest

from .conftest import PASSWORD
from .helpers import shot
from .mailbox import outbox

pytestmark = pytest.mark.browser
NEW_PASSWORD = "a brand new passphrase"


async def test_register_verify_forget_and_reset_ending_the_other_session(app, browser):
    app.services.lifecycle.public_url = app.base_url  # links lead back to this server
    base = app.base_url
    first = await browser.new_context()
    page = await first.new_page()
    await page.goto(f"{base}/register")
    await page.get_by_label("Name", exact=True).fill("Zoe")
    await page.get_by_label("Email", exact=True).fill("zoe@example.com")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url(f"{base}/dashboard")
    assert "not verified yet" in await page.locator("#email-state").inner_text()

    box = await outbox(app.services)
    await page.goto(box.link("zoe@example.com", "Confirm your email"))
    await page.get_by_role("button", name="Verify my address").click()
    await page.get_by_role("heading", name="Address verified").wait_for()
    assert "zoe@example.com is verified" in await page.locator("main").inner_text()
    await page.goto(f"{base}/dashboard")
    assert "is verified" in await page.locator("#email-state").inner_text()

    second = await browser.new_context()
    other = await second.new_page()
    await other.goto(f"{base}/login")
    await other.get_by_label("Email", exact=True).fill("zoe@example.com")
    await other.get_by_label("Password", exact=True).fill(PASSWORD)
    await other.get_by_role("button", name="Sign in", exact=True).click()
    await other.wait_for_url(f"{base}/dashboard")

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base}/login")
    await page.get_by_role("link", name="Forgot your password?").click()
    await page.get_by_label("Email", exact=True).fill("zoe@example.com")
    await page.get_by_role("button", name="Send the link").click()
    await page.get_by_role("status").wait_for()
    assert "on its way" in await page.get_by_role("status").inner_text()

    box = await outbox(app.services)
    await page.goto(box.link("zoe@example.com", "Reset your password"))
    await page.get_by_role("textbox", name="New password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Set the password").click()
    await page.wait_for_url(f"{base}/login?ended=password")
    await page.get_by_label("Email", exact=True).fill("zoe@example.com")
    await page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(f"{base}/dashboard")
    await shot(page, "lifecycle-after-reset")

    await other.goto(f"{base}/dashboard")
    assert "/login?next=/dashboard" in other.url  # the earlier session was ended
    box = await outbox(app.services)
    assert box.last("zoe@example.com", "Your password was changed")
    await first.close()
    await second.close()
