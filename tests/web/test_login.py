"""The dashboard's login in headless Chromium (issue 12's acceptance): the dashboard sends
a browser without a session to the login page; a wrong token is refused there; the
operator's token opens the dashboard (an HttpOnly, SameSite=Strict cookie no script can
read), the form sends a command that the command log shows as sent by the operator, and
logging out ends the session."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, expect

from sef.ems.store import TokenStore
from web_stack import WebStack, keep_screenshot

WAIT_MS = 10_000


async def test_login_opens_the_dashboard_and_logout_ends_it(
    web_stack: WebStack, browser: Browser, tmp_path: Path
) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1100})
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error"
            and "Failed to load resource" not in msg.text  # the refused login's 401
            else None
        ),
    )

    response = await page.goto(web_stack.url + "/")
    assert response is not None and response.ok
    assert page.url == web_stack.url + "/login"
    await expect(page).to_have_title("SEF EMS: log in")

    await page.fill("#token", "not-a-token-of-this-ems-000000000000000000000")
    await page.click("#login")
    error = page.locator("#login-error")
    await expect(error).to_be_visible(timeout=WAIT_MS)
    await expect(error).to_contain_text("login refused: unknown or revoked token")
    assert await context.cookies() == []

    await page.fill("#token", web_stack.tokens["operator"])
    await page.click("#login")
    await page.wait_for_url(web_stack.url + "/", timeout=WAIT_MS)
    await expect(page).to_have_title("SEF EMS dashboard")
    await expect(page.locator("#who")).to_have_text("olga (operator)", timeout=WAIT_MS)
    await expect(page.locator("#agents tbody tr[data-status=online]")).to_have_count(
        6, timeout=WAIT_MS
    )
    (cookie,) = await context.cookies()
    assert cookie["name"] == "sef_token" and cookie["value"] == web_stack.tokens["operator"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""  # no script can read the token
    # CSRF protection: a cookie-authenticated POST without the X-SEF-CSRF header is refused
    unguarded = await page.evaluate(
        """async () => (await fetch("agents/bat-1/commands", {method: "POST",
            headers: {"content-type": "application/json"},
            body: JSON.stringify({cmds: [["charge", 4, 60]]})})).status"""
    )
    assert unguarded == 403

    await page.fill("#target", "bat-2")
    await page.fill("#sequence", "charge:3:600")
    await page.click("#send")
    await expect(page.locator("#form-result")).to_be_visible(timeout=WAIT_MS)
    row = page.locator("#commands tbody tr[data-target='bat-2']")
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    await expect(row.locator("td.sent-by")).to_have_text("olga")
    log = (await web_stack.http.get("/commands")).json()
    assert [(e["target"], e["sent_by"]) for e in log] == [("bat-2", "olga")]
    shot = tmp_path / "dashboard-logged-in.png"
    await page.screenshot(path=str(shot), full_page=True)
    keep_screenshot(shot)

    await page.click("#logout")
    await page.wait_for_url(web_stack.url + "/login", timeout=WAIT_MS)
    assert await context.cookies() == []
    again = await page.goto(web_stack.url + "/")
    assert again is not None and page.url == web_stack.url + "/login"
    assert problems == [], problems
    await context.close()


async def test_a_viewer_sees_the_dashboard_but_cannot_send(
    web_stack: WebStack, browser: Browser
) -> None:
    token = await _viewer_token(web_stack)
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(web_stack.url + "/login")
    await page.fill("#token", token)
    await page.click("#login")
    await page.wait_for_url(web_stack.url + "/", timeout=WAIT_MS)
    await expect(page.locator("#who")).to_have_text("vera (viewer)", timeout=WAIT_MS)
    await expect(page.locator("#send")).to_be_disabled()
    await expect(page.locator("#form-error")).to_contain_text("viewer role")
    await expect(page.locator("#agents tbody tr")).to_have_count(6, timeout=WAIT_MS)
    # the page's own fetch, as a script on it would send it: refused by role
    status = await page.evaluate(
        """async () => (await fetch("agents/bat-1/commands", {method: "POST",
            headers: {"content-type": "application/json", "x-sef-csrf": "1"},
            body: JSON.stringify({cmds: [["charge", 4, 60]]})})).status"""
    )
    assert status == 403
    await context.close()
    assert (await web_stack.http.get("/commands")).json() == []


async def _viewer_token(stack: WebStack) -> str:
    return await asyncio.to_thread(TokenStore(stack.store).create, "vera", "viewer")
