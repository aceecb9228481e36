"""Every page in a real browser: accessibility (axe-core, WCAG 2.1 AA) light and dark, desktop
and phone; confirmations, messages, forms, local times, the admin page's live lists, Back after
sign-out, and the main flows by keyboard alone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .conftest import (
    PASSWORD,
    Server,
    Store,
    require_service,
    serving,
    settings_for,
)
from .helpers import ARTIFACTS, SIZES, axe_violations, browser_sign_in, shot

pytestmark = pytest.mark.browser


IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Server]:
    """Redis sessions and MongoDB users; statistics pushed only every minute, so a figure seen
    sooner came from the snapshot sent on connect."""
    require_service("redis")
    require_service("mongodb")
    place = Store("redis", tmp_path)
    async with serving(settings_for(place, live__stats_interval="60s")) as server:
        yield server
    await place.cleanup()


# The account lifecycle's pages, as a signed-in user reaches them or an emailed link opens them.
LIFECYCLE_PAGES = {
    "forgot": "forgot",
    "resend": "verify/resend",
    "email": "email",
    "reauth": "reauth?next=/email",
    "account-mfa": "account/mfa",
    "link-action": "not-me?token=" + "a" * 43,
    "bad-link": "reset?token=" + "a" * 43,
}


async def test_every_page_passes_axe_light_and_dark_on_desktop_and_phone(site, browser):
    await site.add_user("root@example.com", PASSWORD, role="admin", name="Root")
    for index in range(3):
        await site.add_user(f"user{index}@example.com", PASSWORD, name=f"User {index}")
    found: list[str] = []
    for scheme in ("light", "dark"):
        for size, viewport in SIZES.items():
            context = await browser.new_context(viewport=viewport, color_scheme=scheme)
            page = await context.new_page()
            tag = f"{size}-{scheme}"

            async def check(name: str) -> None:
                found.extend(await axe_violations(page))  # noqa: B023 - used at once
                await shot(page, f"axe-{name}-{tag}")  # noqa: B023

            await page.goto(f"{site.base_url}/register")
            await check("register")
            if not found and tag == "desktop-light":  # the check can fail: an unlabelled field
                await page.evaluate("document.querySelector('label[for=email]').remove()")
                assert any(" label " in v for v in await axe_violations(page))
                await page.reload()
            await page.get_by_role("button", name="Create account").click()
            await page.locator("#problems").wait_for()
            await check("register-errors")
            await page.goto(f"{site.base_url}/login")
            await page.get_by_role("button", name="Sign in", exact=True).click()
            await page.locator("#problems").wait_for()
            await check("login-errors")
            await browser_sign_in(page, site.base_url, "root@example.com")
            await check("dashboard")
            for name, path in LIFECYCLE_PAGES.items():
                await page.goto(f"{site.base_url}/{path}")
                await check(name)
            for path in ("sessions", "account", "admin"):
                await page.goto(f"{site.base_url}/{path}")
                await check(path)
            await page.get_by_role("button", name="Disable user1@example.com").click()
            await page.locator("#confirm-dialog[open]").wait_for()
            await check("admin-dialog")
            await context.close()
    assert found == [], "\n".join(found)


async def test_nav_marks_the_current_page_and_is_tall_enough_to_tap_on_a_phone(site, browser):
    await site.add_user("ann@example.com", PASSWORD, name="Ann")
    context = await browser.new_context(viewport=SIZES["phone"], color_scheme="dark")
    page = await context.new_page()
    await browser_sign_in(page, site.base_url, "ann@example.com")
    await page.goto(f"{site.base_url}/sessions")
    nav = page.get_by_role("navigation", name="Main")
    assert await nav.locator("[aria-current=page]").text_content() == "Your devices"
    for link in await nav.locator("a, button").all():
        box = await link.bounding_box()
        assert box is not None and box["height"] >= 44, await link.text_content()
    # the danger buttons and the focus ring keep their contrast in dark mode
    button = page.get_by_role("button", name="Sign out", exact=True).last
    colours = await button.evaluate(
        "b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).color]"
    )
    assert colours == ["rgb(201, 48, 44)", "rgb(255, 255, 255)"]  # 5.3:1
    await context.close()


async def test_devices_show_local_and_relative_times_current_device_first(site, browser):
    await site.add_user("ann@example.com", PASSWORD, name="Ann")
    other = await browser.new_context(user_agent=IPHONE)
    await browser_sign_in(await other.new_page(), site.base_url, "ann@example.com")
    context = await browser.new_context(
        viewport=SIZES["phone"], timezone_id="Asia/Tokyo", locale="en-GB"
    )
    page = await context.new_page()
    await browser_sign_in(page, site.base_url, "ann@example.com")
    await page.goto(f"{site.base_url}/sessions")
    devices = page.locator(".device")
    assert await devices.count() == 2
    first = devices.first
    assert await first.locator(".badge").text_content() == "This device"
    assert "Safari on iPhone" in await devices.nth(1).locator(".device-name").text_content()
    for label in ("Signed in", "Last active", "Expires"):
        assert await first.get_by_text(label, exact=True).is_visible()
    stamp = first.locator("time").first
    utc = await stamp.get_attribute("title")  # the server's UTC text, kept as the title
    shown = await stamp.text_content()
    assert utc.endswith("UTC") and "UTC" not in shown
    hour = int(re.search(r"(\d\d):\d\d", shown).group(1))
    assert hour == (int(utc[11:13]) + 9) % 24  # Tokyo is UTC+9
    assert await first.get_by_text("(just now)").first.is_visible()
    await shot(page, "devices-phone-tokyo")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the phone
    await context.close()
    await other.close()


async def test_confirm_in_a_dialog_cancel_does_nothing_and_the_action_is_reported(site, browser):
    await site.add_user("ann@example.com", PASSWORD, name="Ann")
    phone = await browser.new_context()
    phone_page = await phone.new_page()
    await browser_sign_in(phone_page, site.base_url, "ann@example.com")
    context = await browser.new_context()
    page = await context.new_page()
    await browser_sign_in(page, site.base_url, "ann@example.com")
    await page.goto(f"{site.base_url}/sessions")
    dialog = page.locator("#confirm-dialog")

    await page.get_by_role("button", name="Revoke").click()
    assert await dialog.get_by_role("heading").text_content() == "Revoke this session?"
    await dialog.get_by_role("button", name="Cancel").click()
    assert await page.locator(".device").count() == 2

    await page.get_by_role("button", name="Revoke").click()
    await dialog.get_by_role("button", name="Revoke").click()
    await page.wait_for_url(f"{site.base_url}/sessions")
    flash = page.locator(".flash-success")
    assert "signed out" in await flash.text_content()
    assert await page.locator(".device").count() == 1
    await shot(page, "devices-after-revoke")
    await phone_page.wait_for_url(f"{site.base_url}/login?ended=revoked", timeout=5000)
    assert await phone_page.locator(".flash-warning").is_visible()  # forced: a warning
    await context.close()
    await phone.close()


async def test_without_javascript_a_confirmation_page_asks_first(site, browser):
    await site.add_user("root@example.com", PASSWORD, role="admin", name="Root")
    ann = await site.add_user("ann@example.com", PASSWORD, name="Ann")
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await browser_sign_in(page, site.base_url, "root@example.com")
    await page.goto(f"{site.base_url}/admin")
    await page.get_by_role("button", name="Disable ann@example.com").click()
    assert await page.get_by_role("heading", name="Disable ann@example.com?").is_visible()
    assert not (await site.services.users.get(ann.id)).disabled
    await shot(page, "confirm-page")
    await page.get_by_role("button", name="Disable").click()
    await page.wait_for_url(re.compile(r"/admin"))
    assert "was disabled" in await page.locator(".flash-success").text_content()
    assert (await site.services.users.get(ann.id)).disabled
    await context.close()


async def test_the_last_admin_cannot_demote_themself(site, browser):
    await site.add_user("root@example.com", PASSWORD, role="admin", name="Root")
    context = await browser.new_context()
    page = await context.new_page()
    await browser_sign_in(page, site.base_url, "root@example.com")
    await page.goto(f"{site.base_url}/admin")
    row = page.locator(".user", has_text="root@example.com")
    await row.get_by_label("Role of root@example.com").select_option("user")
    await row.get_by_role("button", name="Set role").click()
    dialog = page.locator("#confirm-dialog")
    assert await dialog.get_by_role("heading").text_content() == "Make root@example.com a user?"
    assert "signed out at once" in await dialog.text_content()
    await dialog.get_by_role("button", name="Set role").click()
    error = page.locator(".flash-error")
    await error.wait_for()
    assert "last admin" in await error.text_content()
    await shot(page, "last-admin")
    await context.close()


async def test_register_shows_every_error_at_once_and_keeps_what_was_typed(site, browser):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{site.base_url}/register")
    await page.get_by_label("Email").fill("not-an-address")
    await page.get_by_label("Password", exact=True).fill("short")
    await page.get_by_role("button", name="Create account").click()
    await page.locator("#problems").wait_for()
    assert await page.locator("#problems li").count() == 3
    for field in ("name", "email", "password"):
        box = page.locator(f"#{field}")
        assert await box.get_attribute("aria-invalid") == "true"
        assert f"{field}-error" in await box.get_attribute("aria-describedby")
    assert await page.get_by_label("Email").input_value() == "not-an-address"
    password = page.get_by_label("Password", exact=True)
    assert await password.input_value() == ""
    await password.fill("a good password")
    await page.get_by_label("Show password").check()
    assert await password.get_attribute("type") == "text"
    await shot(page, "register-errors")
    await context.close()


async def test_back_after_sign_out_shows_nothing_personal(site, browser):
    await site.add_user("ann@example.com", PASSWORD, name="Annabel Secret")
    context = await browser.new_context()
    page = await context.new_page()
    await browser_sign_in(page, site.base_url, "ann@example.com")
    await page.goto(f"{site.base_url}/account")
    assert await page.get_by_text("ann@example.com").first.is_visible()
    await page.get_by_role("button", name="Sign out").first.click()
    await page.wait_for_url(f"{site.base_url}/login")
    assert await page.locator(".flash-info").text_content() == "You have signed out."
    await page.go_back()
    await page.wait_for_load_state()
    text = await page.locator("body").inner_text()
    assert "ann@example.com" not in text and "Annabel Secret" not in text
    await context.close()


async def test_account_page_changes_name_and_password(site, browser):
    await site.add_user("ann@example.com", PASSWORD, name="Ann")
    context = await browser.new_context()
    page = await context.new_page()
    await browser_sign_in(page, site.base_url, "ann@example.com")
    await page.get_by_role("link", name="Account").click()
    await page.get_by_role("textbox", name="Name", exact=True).fill("Ann Lee")
    await page.get_by_role("button", name="Save name").click()
    assert await page.locator(".flash-success").text_content() == "Your name was changed."
    await page.get_by_label("Current password").fill("wrong password")
    await page.get_by_label("New password").fill("another password")
    await page.get_by_role("button", name="Change password").click()
    assert "not your current password" in await page.locator("#current-error").text_content()
    await page.get_by_label("Current password").fill(PASSWORD)
    await page.get_by_label("New password").fill("another password")
    await page.get_by_role("button", name="Change password").click()
    assert "password was changed" in await page.locator(".flash-success").text_content()
    await page.goto(f"{site.base_url}/dashboard")
    assert "Welcome, Ann Lee" in await page.locator("h1").text_content()
    await context.close()


async def test_admin_lists_update_live_and_statistics_come_at_once(site, browser):
    await site.add_user("root@example.com", PASSWORD, role="admin", name="Root")
    context = await browser.new_context(viewport=SIZES["phone"])
    page = await context.new_page()
    await browser_sign_in(page, site.base_url, "root@example.com")
    await page.goto(f"{site.base_url}/admin")
    digits = re.compile(r"^\d+$")
    # pushed only every 60 s here: within 5 s it can only be the snapshot sent on connect
    await (
        page.locator('[data-stat="activeSessions"]').filter(has_text=digits).wait_for(timeout=5000)
    )
    newcomer = site.client()
    body = {"email": "new@example.com", "name": "Newcomer", "password": PASSWORD}
    assert (await newcomer.post("/api/register", body)).code == 201
    await page.locator(".user-email", has_text="new@example.com").wait_for(timeout=5000)
    await page.locator("#activity li", has_text="new@example.com registered").wait_for()
    signed_in = page.locator("#activity li", has_text="root@example.com signed in")
    agent = signed_in.locator("details").first
    await agent.locator("summary").click()
    assert "Mozilla/5.0" in await agent.locator("code").text_content()  # the full agent
    await shot(page, "admin-phone-live")
    height = await page.evaluate("document.documentElement.scrollHeight")
    assert height < 3000
    await context.close()


async def test_keyboard_only_sign_in_and_revoke_a_device(site, browser):
    await site.add_user("ann@example.com", PASSWORD, name="Ann")
    other = await browser.new_context()
    await browser_sign_in(await other.new_page(), site.base_url, "ann@example.com")
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{site.base_url}/login")
    await page.locator("#email:focus").wait_for()  # autofocus: no click needed
    await page.keyboard.type("ann@example.com")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{site.base_url}/dashboard")

    async def tab_to(name: str) -> None:
        for _ in range(40):
            await page.keyboard.press("Tab")
            focused = await page.evaluate("document.activeElement.textContent.trim()")
            if focused == name:
                return
        raise AssertionError(f"no focusable {name!r}")

    await tab_to("Your devices")
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{site.base_url}/sessions")
    await tab_to("Revoke")
    await page.keyboard.press("Enter")
    await page.locator("#confirm-dialog[open]").wait_for()
    await page.keyboard.press("Tab")  # from Cancel to the action
    await page.keyboard.press("Enter")
    await page.locator(".flash-success").wait_for()
    assert await page.locator(".device").count() == 1
    await context.close()
    await other.close()


def test_artifacts_are_not_tracked():
    ignored = (Path(__file__).parent.parent / ".gitignore").read_text()
    assert "tests/artifacts" in ignored or "artifacts/" in ignored
    assert ARTIFACTS.name == "artifacts"
