"""The dashboard's homes panel and home filter, in headless Chromium against real Mosquitto,
an EMS, its API and three agents: two homes published as raw gateway messages, one down.
The panel shows each home's uplink badge, since when, agents online and the relay's queued
and dropped messages; the filter narrows the agents table (``GET agents?home=``); a home
coming back up turns its badge."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Request, expect

from api_stack import Stack, start_stack, stop_stack
from sef.bus import BusClient, GatewayAgents, Topics
from web_stack import keep_screenshot

T = Topics()
WAIT_MS = 10_000


@pytest.fixture
async def stack(broker_url: str) -> AsyncIterator[Stack]:
    """Mosquitto, an EMS without a store and its API (tokens in memory), three agents."""
    running = await start_stack(broker_url, None)
    yield running
    await stop_stack(running)


async def test_homes_panel_and_filter(stack: Stack, browser: Browser, tmp_path: Path) -> None:
    gw = BusClient(stack.broker, f"gateways-{time.monotonic_ns() % 10**9}")
    await gw.start()
    try:
        for home, agents, up in (("h1", ["bat-1", "bat-2"], b"1"), ("h2", ["wh-9"], b"0")):
            listed = GatewayAgents(home, agents).to_payload()
            gw.publish(T.gateway_agents(home), listed, retain=True)
            gw.publish(T.gateway_status(home), up, retain=True)
        stats = {"v": 1, "home": "h1", "ts": int(time.time()), "queued": 4, "queue_limit": 1000}
        gw.publish(T.gateway_stats("h1"), json.dumps({**stats, "dropped": 2}).encode(), retain=True)

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        listings: list[str] = []

        def keep(request: Request) -> None:
            path = request.url.removeprefix(stack.url)
            if path.startswith("/agents?"):
                listings.append(path)

        page.on("request", keep)
        await page.context.add_cookies(
            [{"name": "sef_token", "value": stack.tokens["viewer"], "url": stack.url}]
        )
        response = await page.goto(stack.url + "/")
        assert response is not None and response.ok

        homes = page.locator("#homes li")
        await expect(homes).to_have_count(2, timeout=WAIT_MS)
        h1, h2 = (
            page.locator('#homes li[data-home="h1"]'),
            page.locator('#homes li[data-home="h2"]'),
        )
        await expect(h2).to_have_attribute("data-uplink", "down")
        await expect(h2.locator('[data-col="uplink"]')).to_have_text("down")
        await expect(h2.locator('[data-col="since"]')).to_have_text(
            re.compile(r"^since \d+ s ago$")
        )
        await expect(h2.locator('[data-col="counts"]')).to_have_text("0/1 agents online")
        await expect(h1).to_have_attribute("data-uplink", "up", timeout=WAIT_MS)
        await expect(h1.locator('[data-col="counts"]')).to_have_text(
            "2/2 agents online · queued 4/1000 · dropped 2", timeout=WAIT_MS
        )
        await expect(page.locator("#home-count")).to_have_text("1 of 2 up")

        rows = page.locator("#agents tbody tr")
        await expect(rows).to_have_count(3, timeout=WAIT_MS)
        await expect(page.locator('tr[data-agent="bat-1"] [data-col="home"]')).to_have_text("h1")
        await expect(page.locator('tr[data-agent="wh-9"] [data-col="home"]')).to_have_text("h2")

        await page.select_option("#home-filter", "h1")
        await expect(rows).to_have_count(2, timeout=WAIT_MS)
        ids = await rows.evaluate_all("rs => rs.map(r => r.dataset.agent)")
        assert sorted(ids) == ["bat-1", "bat-2"]
        assert any("home=h1" in p for p in listings), listings
        path = tmp_path / "dashboard-homes.png"
        await page.screenshot(path=str(path), full_page=True)
        keep_screenshot(path)

        gw.publish(T.gateway_status("h2"), b"1", retain=True)  # h2's uplink is back
        await expect(h2).to_have_attribute("data-uplink", "up", timeout=WAIT_MS)
        await expect(page.locator("#home-count")).to_have_text("2 of 2 up")
        await page.wait_for_timeout(300)  # a periodic refresh keeps the filter
        await expect(rows).to_have_count(2)

        await page.select_option("#home-filter", "h2")
        await expect(rows).to_have_count(1, timeout=WAIT_MS)
        await expect(rows.first).to_have_attribute("data-agent", "wh-9")
        await page.select_option("#home-filter", "")
        await expect(rows).to_have_count(3, timeout=WAIT_MS)
        assert not problems, problems
        await page.close()
    finally:
        await gw.stop()
