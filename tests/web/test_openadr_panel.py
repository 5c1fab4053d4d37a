"""The dashboard's demand-response panel, in headless Chromium against real Mosquitto, an EMS
and its API with a stand-in DrOperator (real DrHistory): hidden while no bridge runs; the
programs, the active and upcoming events (and the last that ended) with opt, status,
requested vs delivered kW; an operator opts out of an event with its button; a viewer's
attempt shows the API's 403 and changes nothing; a VTN's hostile event id is shown as
text."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from api_stack import Stack, start_stack, stop_stack
from dr_operator_standin import StandInOperator, event
from sef.ems._dr_board import set_dr_board
from sef.openadr import Opt, install_operator
from web_stack import keep_screenshot

WAIT_MS = 10_000
HOSTILE = '<img src=x onerror="window.pwned=1">'


@pytest.fixture
async def stack(broker_url: str) -> AsyncIterator[Stack]:
    """Mosquitto, an EMS without a store and its API (tokens in memory), three agents."""
    running = await start_stack(broker_url, None)
    yield running
    await stop_stack(running)


def bridge(stack: Stack) -> StandInOperator:
    """Install a stand-in bridge with an active, an upcoming, a hostile-id and an ended
    event."""
    now = stack.ems.clock.now()
    operator = StandInOperator(now)
    operator.history.add(event("done", now, start_in_s=-7200, status="completed",
                               delivered_kw=-9.0, received_s=now - 8000))  # fmt: skip
    operator.history.add(event("act", now, start_in_s=-600, delivered_kw=-7.5))
    operator.history.add(event("soon", now, start_in_s=1800, program="eco", signal="LOAD_DISPATCH",
                               requested_kw=-20.0, received_s=now))  # fmt: skip
    operator.history.add(event(HOSTILE, now, start_in_s=7200, received_s=now - 5))
    install_operator(stack.ems, operator)
    return operator


async def _page(stack: Stack, browser: Browser, role: str) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 1400, "height": 1200})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    await page.context.add_cookies(
        [{"name": "sef_token", "value": stack.tokens[role], "url": stack.url}]
    )
    response = await page.goto(stack.url + "/")
    assert response is not None and response.ok
    return page, problems


async def test_panel_lists_events_and_an_operator_opts_out(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    page, problems = await _page(stack, browser, "operator")
    section = page.locator("#openadr-section")
    await expect(page.locator("#target-info")).not_to_have_text("…", timeout=WAIT_MS)
    await expect(section).to_be_hidden()  # no bridge: no panel
    operator = bridge(stack)
    await expect(section).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#openadr-programs")).to_have_text(
        "Programs — oadr2b (registered): peak, eco"
    )
    await expect(page.locator("#openadr-summary")).to_have_text("1 active, 2 upcoming")
    rows = page.locator("#openadr-events tbody tr")
    await expect(rows).to_have_count(4)
    # current events by start, then the ended one
    assert [await r.get_attribute("data-event") for r in await rows.all()] == [
        "act", "soon", HOSTILE, "done"
    ]  # fmt: skip
    act = page.locator('tr[data-event="act"]')
    await expect(act.locator("td").nth(3)).to_have_text(re.compile(r"^active, ends in 50 min$"))
    await expect(act.locator("td").nth(7)).to_have_text("-7.5 (75 %)")  # of -10 kW asked
    soon = page.locator('tr[data-event="soon"]')
    await expect(soon.locator("td").nth(3)).to_have_text("starts in 30 min")
    await expect(soon.locator("td").nth(6)).to_have_text("-20.0")
    await expect(page.locator('tr[data-event="done"]')).to_have_attribute("data-phase", "over")
    await expect(page.locator('tr[data-event="done"] button')).to_have_count(0)
    await expect(rows.nth(2).locator("td").first).to_have_text(HOSTILE)  # text, not markup
    assert await page.evaluate("window.pwned") is None

    await soon.locator("button.opt-out").click()
    await expect(soon.locator("td").nth(5)).to_have_text("optOut", timeout=WAIT_MS)
    await expect(soon.locator("td").nth(4)).to_have_text("opted_out")
    await expect(soon.locator("td").nth(8)).to_have_text("operator: olivia: from the dashboard")
    await expect(soon.locator("button")).to_have_count(0)
    assert operator.overrides == [
        ("oadr2b", "soon", Opt.OUT, "operator: olivia: from the dashboard")
    ]  # fmt: skip
    await expect(page.locator("#openadr-error")).to_be_hidden()
    shot = tmp_path / "dashboard-openadr.png"
    await section.screenshot(path=str(shot))
    keep_screenshot(shot)
    set_dr_board(stack.ems, None)  # the bridge stops: the panel goes
    await expect(section).to_be_hidden(timeout=WAIT_MS)
    assert problems == []


async def test_a_viewer_sees_the_refusal(stack: Stack, browser: Browser) -> None:
    operator = bridge(stack)
    page, problems = await _page(stack, browser, "viewer")
    act = page.locator('tr[data-event="act"]')
    await act.locator("button.opt-out").click(timeout=WAIT_MS)
    await expect(page.locator("#openadr-error")).to_have_text(
        re.compile("needs the operator role"), timeout=WAIT_MS
    )
    await expect(act.locator("td").nth(5)).to_have_text("optIn")
    assert operator.overrides == []
    assert problems == []
