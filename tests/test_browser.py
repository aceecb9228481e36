"""A real browser (Debian's headless Chromium, driven by Playwright) against the running app."""

from __future__ import annotations

import re

import pytest

from .conftest import (
    PASSWORD,
)
from .helpers import browser_sign_in, shot

pytestmark = pytest.mark.browser


async def test_sign_in_see_live_status_and_get_signed_out_by_another_device(app, browser):
    await app.add_user("ann@example.com", PASSWORD, name="Ann")
    await app.add_user("root@example.com", PASSWORD, role="admin", name="Root")

    first = await browser.new_context()
    page = await first.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(f"{app.base_url}/login")
    await shot(page, "login")
    await browser_sign_in(page, app.base_url, "ann@example.com")
    status = page.locator("#live-status")
    await status.and_(page.locator("[data-state=open]")).wait_for(timeout=5000)
    assert "connected" in (await status.text_content())
    await shot(page, "dashboard")

    second = await browser.new_context()
    other = await second.new_page()
    await browser_sign_in(other, app.base_url, "ann@example.com")
    await page.locator("#events li", has_text="New sign-in").wait_for(timeout=5000)
    await other.goto(f"{app.base_url}/sessions")
    await shot(other, "sessions")
    row = other.locator(".device", has_not_text="This device")
    await row.get_by_role("button", name="Revoke").click()
    await other.locator("#confirm-dialog").get_by_role("button", name="Revoke").click()
    await other.locator(".flash-success").wait_for()

    await page.wait_for_url(f"{app.base_url}/login?ended=revoked", timeout=5000)
    assert await page.get_by_text("That session was revoked.").is_visible()
    await shot(page, "signed-out")
    assert not [e for e in errors if "Content Security Policy" in e]

    admin_context = await browser.new_context()
    admin = await admin_context.new_page()
    await browser_sign_in(admin, app.base_url, "root@example.com")
    await admin.goto(f"{app.base_url}/admin")
    digits = re.compile(r"^\d+$")
    await admin.locator('[data-stat="openSockets"]').filter(has_text=digits).wait_for(timeout=10000)
    assert int(await admin.locator('[data-stat="activeSessions"]').text_content()) >= 2
    await shot(admin, "admin")
    await admin.goto(f"{app.base_url}/register")
    await shot(admin, "register")
    for context in (first, second, admin_context):
        await context.close()
