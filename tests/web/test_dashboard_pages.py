"""The dashboard fetches the agents table one page at a time (issue 11, defect 6: with
100 000 agents the page polled a 32 MB ``GET /agents`` every 5 s). With ``?page_size=4``
the six agents of the stack take two pages; the pager turns them; live events of agents
on the other page do not pull them into the table; no request asks for every agent."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Request, expect

from web_stack import WebStack, keep_screenshot

WAIT_MS = 10_000


async def test_agents_table_is_paginated(
    web_stack: WebStack, browser: Browser, tmp_path: Path
) -> None:
    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    listings: list[str] = []

    def keep(request: Request) -> None:
        path = request.url.removeprefix(web_stack.url)
        if path.startswith("/agents?") or path == "/agents":
            listings.append(path)

    page.on("request", keep)
    await page.context.add_cookies(
        [{"name": "sef_token", "value": web_stack.tokens["operator"], "url": web_stack.url}]
    )
    response = await page.goto(web_stack.url + "/?page_size=4")
    assert response is not None and response.ok
    rows = page.locator("#agents tbody tr")
    pager = page.locator("#agents-pager")
    await expect(rows).to_have_count(4, timeout=WAIT_MS)
    await expect(pager).to_be_visible()
    await expect(page.locator("#page-info")).to_have_text("agents 1–4 of 6 (page 1)")
    await expect(page.locator("#page-prev")).to_be_disabled()
    first_ids = set(await rows.evaluate_all("rs => rs.map(r => r.dataset.agent)"))
    assert first_ids == {"bat-1", "bat-2", "bat-3", "wh-1"}

    await page.click("#page-next")
    await expect(page.locator("#page-info")).to_have_text(
        "agents 5–6 of 6 (page 2)", timeout=WAIT_MS
    )
    await expect(rows).to_have_count(2)
    second_ids = set(await rows.evaluate_all("rs => rs.map(r => r.dataset.agent)"))
    assert second_ids == {"wh-2", "wh-3"}
    await expect(page.locator("#page-next")).to_be_disabled()
    # live telemetry of the agents of page 1 keeps coming: they stay off this page
    await page.wait_for_timeout(2000)
    await expect(rows).to_have_count(2)

    await page.click("#page-prev")
    await expect(page.locator("#page-info")).to_have_text(
        "agents 1–4 of 6 (page 1)", timeout=WAIT_MS
    )
    await expect(rows).to_have_count(4)
    path = tmp_path / "dashboard-pages.png"
    await page.screenshot(path=str(path), full_page=True)
    keep_screenshot(path)

    assert listings, "the table was never fetched"
    assert all("limit=4" in p for p in listings), listings
    assert any("cursor=wh-1" in p for p in listings), listings
    assert not problems, problems
    await page.close()
