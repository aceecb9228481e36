"""Two-step sign-in in a real browser: turn on an authenticator app on the account pages (the
secret read from the page, the code computed with pyotp), sign out, sign in with password and
code, then with a recovery code; every new page passes axe-core (WCAG 2.1 AA) light and dark, on
desktop and phone."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pyotp
import pytest

from .conftest import PASSWORD
from .helpers import SIZES, axe_violations, browser_sign_in, shot

pytestmark = pytest.mark.browser


async def sign_out(page: Any, base_url: str) -> None:
    await page.get_by_role("button", name="Sign out", exact=True).first.click()
    await page.wait_for_url(f"{base_url}/login")


async def first_step(page: Any, base_url: str, email: str) -> None:
    await page.goto(f"{base_url}/dashboard")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(f"{base_url}/login/mfa?next=%2Fdashboard")


async def two_step_flow(
    page: Any, base_url: str, email: str, check: Callable[[str], Awaitable[None]]
) -> None:
    await browser_sign_in(page, base_url, email)
    await page.goto(f"{base_url}/account")
    await page.get_by_role("link", name="Manage two-step sign-in").click()
    await page.wait_for_url(f"{base_url}/account/mfa")
    assert "is off" in await page.locator("#mfa-state").text_content()
    await check("mfa-off")
    await page.get_by_role("link", name="Set up an authenticator app").click()
    await page.wait_for_url(f"{base_url}/account/mfa/totp")
    loaded = await page.locator("img.qr").evaluate("img => img.complete && img.naturalWidth > 0")
    assert loaded, "the QR code image did not load under the Content-Security-Policy"
    await check("mfa-totp")
    secret = "".join((await page.locator("#totp-secret").text_content()).split())
    await page.get_by_label("Code from the app").fill("000000")
    if pyotp.TOTP(secret).verify("000000", valid_window=1):  # one chance in ~300,000
        pytest.skip("000000 happened to be a current code")
    await page.get_by_role("button", name="Turn on").click()
    await page.locator("#problems").wait_for()
    await check("mfa-totp-wrong")
    await page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Turn on").click()
    codes = await page.locator("#recovery-codes code").all_text_contents()
    assert len(codes) == 10
    await check("mfa-codes")
    await page.get_by_role("link", name="I have saved them").click()
    await page.wait_for_url(f"{base_url}/account/mfa")
    assert "is on" in await page.locator("#mfa-state").text_content()
    await check("mfa-on")

    await sign_out(page, base_url)
    await first_step(page, base_url, email)
    await check("login-mfa")
    await page.get_by_label("Code").fill("12345")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.locator("#problems").wait_for()
    await check("login-mfa-wrong")
    # the code that turned the app on is used: the next step's code, accepted one step early
    await page.get_by_label("Code").fill(pyotp.TOTP(secret).at(time.time() + 30))
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(f"{base_url}/dashboard")

    await sign_out(page, base_url)
    await first_step(page, base_url, email)
    await page.get_by_label("Code").fill(codes[0])
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(f"{base_url}/dashboard")
    assert (await page.locator("#recovery-warning").count()) == 0  # 9 left: no warning yet


async def test_enrol_an_app_then_sign_in_with_a_code_and_a_recovery_code_all_pages_pass_axe(
    app, browser
):
    found: list[str] = []
    for scheme in ("light", "dark"):
        for size, viewport in SIZES.items():
            tag = f"{size}-{scheme}"
            email = f"{tag}@example.com"
            await app.add_user(email, PASSWORD, name="Ann")
            context = await browser.new_context(viewport=viewport, color_scheme=scheme)
            page = await context.new_page()

            async def check(name: str) -> None:
                found.extend(await axe_violations(page))  # noqa: B023 - used at once
                await shot(page, f"axe-{name}-{tag}")  # noqa: B023

            await two_step_flow(page, app.base_url, email, check)
            await context.close()
    assert found == [], "\n".join(found)
