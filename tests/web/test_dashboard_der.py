"""The dashboard with the two newer DER families (issue 17): a PV inverter (SunSpec
emulator over Modbus TCP + ``InverterAgent``) and an EV charger (OCPP charge point
emulator + ``EVSEAgent``, Security Profile 2) next to the stack's batteries and water
heaters. Each shows as its own kind with its columns, its own chart fills, and the
fleet-power chart gains their sums. Real Mosquitto, real sockets, headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, expect

from evse_rig import CP_ID, PASSWORD, agent_rig, make_tls
from sef.agents.inverter import InverterAgent
from sef.clock import ScaledClock
from sef.emulators.evse import EVSEEmulator, default_session
from sef.emulators.inverter import InverterEmulator
from support import wait_for
from web_stack import WebStack, points, row, screenshot, wait_growth

NOON = 1782068400.0  # 2026-06-21T19:00Z: solar noon at the inverter emulator's default site


@contextlib.asynccontextmanager
async def pv_inverter(stack: WebStack, broker_url: str) -> AsyncIterator[InverterAgent]:
    """An inverter emulator whose sun stands at noon (whatever the time of the run) and
    its agent on the stack's clock and broker."""
    sun = ScaledClock(speed=1.0, sim_start=NOON, real_anchor=time.time())
    emulator = InverterEmulator(port=0, clock=sun, tick_s=0.1)
    _, port = await emulator.start()
    stepper = asyncio.create_task(emulator.run())
    agent = InverterAgent(
        "pv-1", broker_url, modbus_host="127.0.0.1", modbus_port=port, poll_s=0.3,
        clock=stack.clock, dc_kwp=6.0, keepalive_s=5, groups=["pv", "feeder-1"],
    )  # fmt: skip
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()
        stepper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stepper
        await emulator.stop()


async def test_dashboard_shows_pv_and_ev_kinds_and_charts(
    web_stack: WebStack, broker_url: str, browser: Browser, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    async with (
        pv_inverter(web_stack, broker_url),
        agent_rig(broker_url, web_stack.clock, tls=tls) as ev,
    ):
        charge_point = EVSEEmulator(
            f"wss://127.0.0.1:{ev.port}/{CP_ID}",
            clock=web_stack.clock,
            session=default_session(web_stack.clock.now(), need_kwh=30.0, battery_kwh=75.0),
            password=PASSWORD,
            ssl_context=tls.client,
            meter_interval_s=10.0,
        )
        plugged = asyncio.create_task(charge_point.run())
        try:
            await wait_for(lambda: (ev.last().get("EV_Rate_kW") or 0) > 0, 20.0)
            page = await browser.new_page(viewport={"width": 1400, "height": 1500})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            await page.context.add_cookies(
                [{"name": "sef_token", "value": web_stack.tokens["operator"], "url": web_stack.url}]
            )
            await page.goto(web_stack.url + "/")
            online = page.locator("#agents tbody tr[data-status=online]")
            await expect(online).to_have_count(8, timeout=15_000)
            kinds = dict(
                await page.locator("#agents tbody tr").evaluate_all(
                    "rows => rows.map(r => [r.dataset.agent, r.dataset.kind])"
                )
            )
            # both also send Power_W: before issue 17 each read as a "water heater"
            assert kinds["pv-1"] == "pv inverter" and kinds["evse-1"] == "ev charger"
            assert sorted(kinds.values()).count("water heater") == 3
            # the PV row: output negative (producing, + = consuming), energy produced, link ok
            pv_power = page.locator(f"{row(page, 'pv-1')} [data-col=power]")
            await expect(pv_power).to_have_text(re.compile(r"^[−-]\d+\.\d\d$"))
            value = await pv_power.get_attribute("data-value")
            assert value is not None and float(value) < -1.0
            await expect(page.locator(f"{row(page, 'pv-1')} [data-col=stored]")).to_contain_text(
                "kWh produced"
            )
            await expect(page.locator(f"{row(page, 'pv-1')} [data-col=link]")).to_have_text("ok")
            # the EV row: charging (> 0 kW), the energy delivered and still needed
            ev_row = row(page, "evse-1")
            await expect(page.locator(f"{ev_row} [data-col=stored]")).to_contain_text("to go")
            await expect(page.locator(f"{ev_row} [data-col=op-state]")).to_contain_text("plugged")
            ev_kw = await page.locator(f"{ev_row} [data-col=power]").get_attribute("data-value")
            assert ev_kw is not None and float(ev_kw) > 0
            # their charts fill live, one series each, and the fleet chart sums them
            await wait_growth(page, "chart-pv", 3, timeout_s=15.0)
            await wait_growth(page, "chart-ev", 2, timeout_s=30.0)
            assert await page.get_attribute("#chart-pv", "data-series") == "1"
            assert await page.get_attribute("#chart-ev", "data-series") == "1"
            legend = page.locator("#chart-net .legend")
            await expect(legend).to_contain_text("PV (sum", timeout=15_000)
            await expect(legend).to_contain_text("EV chargers (sum", timeout=30_000)
            assert await points(page, "chart-net") > 0
            await screenshot(page, tmp_path, "pv-ev")
            assert not problems, problems
            await page.close()
        finally:
            plugged.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plugged
