"""The dashboard's control-target panel, in headless Chromium against real Mosquitto, an
EMS and its API: an operator sets a target from the form (PUT /control/target as CSV, with
the session cookie and the CSRF header), the panel shows who set it and its value now, and
"Scenario's" clears it; a viewer's attempt shows the API's 403 and changes nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from api_stack import Stack, start_stack, stop_stack
from sef.ems._target_board import target_board

WAIT_MS = 10_000


@pytest.fixture
async def stack(broker_url: str) -> AsyncIterator[Stack]:
    """Mosquitto, an EMS without a store and its API (tokens in memory), three agents."""
    running = await start_stack(broker_url, None)
    yield running
    await stop_stack(running)


async def _page(stack: Stack, browser: Browser, role: str) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    await page.context.add_cookies(
        [{"name": "sef_token", "value": stack.tokens[role], "url": stack.url}]
    )
    response = await page.goto(stack.url + "/")
    assert response is not None and response.ok
    return page, problems


async def test_operator_sets_and_clears_the_target(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    page, problems = await _page(stack, browser, "operator")
    info = page.locator("#target-info")
    await expect(info).to_have_text(re.compile("follows its scenario's target"), timeout=WAIT_MS)
    await page.fill("#target-points", "time_s,kw\n1000,80\n2000,95.5\n")
    await page.click("#target-set")
    await expect(info).to_have_text(
        re.compile(r"^Target set by olivia at .* UTC: 2 points, 95\.5 kW now\.$"), timeout=WAIT_MS
    )
    assert target_board(stack.ems).points == [(1000.0, 80.0), (2000.0, 95.5)]
    await page.fill("#target-points", "1000,80\n2000,lots\n")
    await page.click("#target-set")
    await expect(page.locator("#target-error")).to_have_text(re.compile("line 2"), timeout=WAIT_MS)
    await page.click("#target-clear")
    await expect(info).to_have_text(re.compile("follows its scenario's target"), timeout=WAIT_MS)
    await expect(page.locator("#target-error")).to_be_hidden()
    assert target_board(stack.ems).points == []
    assert problems == []


async def test_a_viewer_sees_the_refusal(stack: Stack, browser: Browser) -> None:
    page, problems = await _page(stack, browser, "viewer")
    await page.fill("#target-points", "1000,80\n")
    await page.click("#target-set")
    await expect(page.locator("#target-error")).to_have_text(
        re.compile("needs the operator role"), timeout=WAIT_MS
    )
    assert target_board(stack.ems).version == 0
    assert problems == []
