"""The EMS web dashboard in headless Chromium (Playwright): the page loads, the six agents
appear, the charts update live, the form sends an event sequence that changes a battery's
state on the page, and an invalid form shows the API's error without sending anything.
Screenshots are kept in artifacts/web/ (see web_stack.ARTIFACTS)."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Browser, Page, Request, expect

from sef.interface import DEMO_INTERFACE
from web_stack import WebStack, row, screenshot, wait_growth

WAIT_MS = 10_000


async def open_dashboard(browser: Browser, stack: WebStack, problems: list[str]) -> Page:
    """Open the page; script errors, console errors and failed GETs go to ``problems``
    (refused POSTs are expected: the form's errors)."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} GET {r.url}")
            if r.status >= 400 and r.request.method == "GET"
            else None
        ),
    )
    # the session cookie that POST /login sets (the login form itself: test_login.py)
    await page.context.add_cookies(
        [{"name": "sef_token", "value": stack.tokens["operator"], "url": stack.url}]
    )
    response = await page.goto(stack.url + "/")
    assert response is not None and response.ok
    await expect(page).to_have_title("SEF EMS dashboard")
    await expect(page.locator("#agents tbody tr[data-status=online]")).to_have_count(
        6, timeout=WAIT_MS
    )
    return page


async def test_dashboard_shows_agents_and_live_charts(
    web_stack: WebStack, browser: Browser, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = await open_dashboard(browser, web_stack, problems)

    # the six agents, with their kinds and last known state
    kinds = await page.locator("#agents tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.agent, r.dataset.kind])"
    )
    assert sorted(kinds) == [
        ["bat-1", "battery"],
        ["bat-2", "battery"],
        ["bat-3", "battery"],
        ["wh-1", "water heater"],
        ["wh-2", "water heater"],
        ["wh-3", "water heater"],
    ]
    await expect(page.locator(f"{row(page, 'bat-1')} [data-col=soc]")).to_have_text(
        re.compile(r"^3\d\.\d$")
    )
    await expect(page.locator(f"{row(page, 'bat-3')} [data-col=groups]")).to_contain_text(
        "batteries"
    )
    await expect(page.locator(f"{row(page, 'wh-2')} [data-col=link]")).to_have_text("up")
    await expect(page.locator(f"{row(page, 'wh-2')} [data-col=stored]")).to_contain_text("kWh")
    await expect(page.locator("#health")).to_contain_text("6/6 online")
    await expect(page.locator("#stream")).to_have_attribute("data-state", "open")

    # the charts update live (from /events): SOC per battery, stored energy, fleet power
    await wait_growth(page, "chart-soc", 6)
    await wait_growth(page, "chart-stored", 6)
    assert await page.get_attribute("#chart-soc", "data-series") == "3"
    assert await page.get_attribute("#chart-stored", "data-series") == "3"
    assert await page.get_attribute("#chart-net", "data-source") == "fleet"
    await wait_growth(page, "chart-net", 3)
    await screenshot(page, tmp_path, "agents-live")

    # a control application fills ems.control_series: the first chart turns to net vs target
    t0 = web_stack.clock.now()
    series: dict[str, list[float]] = {"t": [], "net_kw": [], "target_kw": [], "base_kw": []}
    web_stack.ems.control_series = series

    def extend(n: int) -> None:
        for _ in range(n):
            k = len(series["t"])
            series["t"].append(t0 + 60.0 * k)
            series["base_kw"].append(20.0 + 5.0 * (k % 7))
            series["net_kw"].append(16.0 + 2.0 * (k % 5))
            series["target_kw"].append(16.0)

    extend(10)
    body = (await web_stack.http.get("/control/series")).json()
    assert len(body["t"]) == 10 and body["target_kw"][0] == 16.0
    await expect(page.locator("#chart-net")).to_have_attribute(
        "data-source", "control", timeout=WAIT_MS
    )
    await expect(page.locator("#chart-net .title")).to_have_text("Net load vs target")
    await expect(page.locator("#chart-net")).to_have_attribute("data-points", "30", timeout=WAIT_MS)
    extend(5)
    await expect(page.locator("#chart-net")).to_have_attribute("data-points", "45", timeout=WAIT_MS)

    # an agent that goes away is greyed, with the time it was last seen
    await web_stack.stop_agent("wh-3")
    offline = page.locator(row(page, "wh-3"))
    await expect(offline).to_have_attribute("data-status", "offline", timeout=WAIT_MS)
    await expect(offline).to_have_class("offline")
    await expect(offline.locator("[data-col=last-seen]")).to_have_text(
        re.compile(r"^last seen \d\d:\d\d:\d\d$")
    )
    await expect(offline.locator("[data-col=id]")).to_have_css("color", "rgb(154, 161, 171)")
    await expect(page.locator("#agents tbody tr[data-status=online]")).to_have_count(5)
    await screenshot(page, tmp_path, "control-and-offline")
    assert problems == []


async def test_dashboard_form_sends_charge_to_a_battery(
    web_stack: WebStack, browser: Browser, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = await open_dashboard(browser, web_stack, problems)
    bat = page.locator(row(page, "bat-2"))
    await expect(bat.locator("[data-col=event]")).to_have_attribute("data-value", "idle")
    options = await page.locator("#targets option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert {"bat-2", "wh-1", "group:batteries", "group:waterheaters"} <= set(options)

    await page.fill("#target", "bat-2")
    await page.fill("#sequence", "charge:4:600")
    await page.click("#send")
    result = page.locator("#form-result")
    await expect(result).to_be_visible(timeout=WAIT_MS)
    await expect(result).to_contain_text("bat-2: ok")
    await expect(result).to_have_attribute("data-status", "ok")
    await expect(page.locator("#form-error")).to_be_hidden()

    # the battery's state changes on the page: event charge 4 kW, power positive (charging)
    await expect(bat.locator("[data-col=event]")).to_have_attribute(
        "data-value", "charge", timeout=WAIT_MS
    )
    await expect(bat.locator("[data-col=event]")).to_have_text("charge 4 kW")
    await expect(bat.locator("[data-col=power]")).to_have_attribute(
        "data-value", re.compile(r"^[34]\.\d+$"), timeout=WAIT_MS
    )  # charging ~3.9 kW
    await expect(bat.locator("[data-col=power]")).to_have_text(re.compile(r"^\+[34]\.\d\d$"))
    assert web_stack.batteries["bat-2"].device.setpoint_kw == 4.0
    log = page.locator("#commands tbody tr[data-target='bat-2']")
    await expect(log).to_have_count(1, timeout=WAIT_MS)
    await expect(log).to_contain_text("charge:4:600")
    await expect(log).to_have_attribute("data-status", "ok")
    await screenshot(page, tmp_path, "charge-sent")

    # a group: one publish, a reply from each water heater, their event turns to shed
    await page.fill("#target", "group:waterheaters")
    await page.fill("#sequence", "shed:0:600 endshed:0")
    await page.click("#send")
    await expect(result).to_contain_text("group:waterheaters: ok", timeout=WAIT_MS)
    await expect(result.locator("li")).to_have_count(3)
    for name in ("wh-1", "wh-2", "wh-3"):
        await expect(page.locator(f"{row(page, name)} [data-col=event]")).to_have_attribute(
            "data-value", "shed", timeout=WAIT_MS
        )
    await expect(page.locator("#commands tbody tr")).to_have_count(2, timeout=WAIT_MS)
    assert problems == []


async def test_dashboard_form_shows_errors_and_sends_nothing(
    web_stack: WebStack, browser: Browser, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = await open_dashboard(browser, web_stack, problems)
    posts: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST":
            posts.append(request.url)

    page.on("request", record)
    error = page.locator("#form-error")
    cases = [  # target, sequence, message shown, checked by the API (else by the page)
        (
            "bat-1",
            "charge:4:99999",
            "cmds[0][2]: 99999 out of range for int16 'n' (-32768..32767)",
            True,
        ),
        ("bat-1", "fly:1:1", "cmds[0][0]: unknown command 'fly'", True),
        ("nope", "charge:4:600", "unknown agent 'nope'", True),
        ("bat-1", "charge:4:600 idle:0 charge:2:60", "only the last event may be open-ended", True),
        ("bat-1", "charge-4-600", "'charge-4-600': expected CMD:RATE_KW[:DURATION_S]", False),
        ("bat-1", "charge:four:600", "rate (kW) must be an integer, got 'four'", False),
        ("", "charge:4:600", "enter a target", False),
    ]
    for target, sequence, message, by_api in cases:
        before = len(posts)
        await page.fill("#target", target)
        await page.fill("#sequence", sequence)
        await page.click("#send")
        await expect(error).to_be_visible(timeout=WAIT_MS)
        await expect(error).to_contain_text(message, timeout=WAIT_MS)
        await expect(page.locator("#form-result")).to_be_hidden()
        assert len(posts) == before + (1 if by_api else 0), (sequence, posts)
        if sequence == "charge:4:99999":
            await expect(page.locator("#sequence")).to_have_attribute("aria-invalid", "true")
            await expect(error).to_contain_text("nothing was sent")
            await screenshot(page, tmp_path, "invalid-form")

    # nothing was sent: no command logged, no battery moved, the API counted the rejections
    assert (await web_stack.http.get("/commands")).json() == []
    for agent in web_stack.batteries.values():
        assert agent.device.setpoint_kw == 0.0 and agent.sequencer.current.cmd.value == "idle"
    metrics = (await web_stack.http.get("/metrics")).text
    assert 'sef_commands_total{status="rejected"} 4.0' in metrics
    await expect(page.locator("#commands-note")).to_have_text("No command sent yet.")
    for record_ in web_stack.ems.agents():
        value = record_.prop(DEMO_INTERFACE, "Telemetry")
        assert value["Event"][1] == "idle", record_.agent_id
    assert problems == []
