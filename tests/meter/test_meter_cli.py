"""The commands as the demo runs them, each its own process: ``sef emulate meter``,
``sef emulate battery --ct``, ``sef emulate waterheater --ct`` and ``sef meter``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sef.clock import ScaledClock
from sef.demo._processes import DemoProcesses
from sef.ems import EMS, Event
from sef.interface import DEMO_INTERFACE
from sef.protocols.sunspec import SunSpecClient
from support import wait_for

HEATER_KW = 4.5  # one element of the default tank


@pytest.mark.timeout(60)
async def test_devices_report_their_power_to_the_meter_and_the_agent_publishes_it(
    tmp_path: Path, broker_url: str
) -> None:
    clock = ScaledClock(speed=60.0)
    procs = DemoProcesses({"SEF_CLOCK": clock.spec()}, tmp_path / "logs")
    telemetry: list[dict[str, Any]] = []

    def keep(event: Event) -> None:
        if event.kind == "property" and event.detail == f"{DEMO_INTERFACE}.Telemetry":
            record = ems.registry.get(event.agent_id)
            assert record is not None
            value = record.prop(DEMO_INTERFACE, "Telemetry")
            telemetry.append({k: v[1] for k, v in value.items()})

    def net_kw() -> float:
        return float(telemetry[-1].get("Net_Power_kW", "nan")) if telemetry else float("nan")

    ems = EMS(broker_url, "ems-meter-cli", clock=clock, on_event=keep)
    await ems.start()
    try:
        found = await asyncio.to_thread(
            procs.start,
            "meter-emulator",
            ["emulate", "meter", "--port", "0", "--ct-port", "0", "--base-kw", "1.5"],
            r"listening on ([\d.]+:\d+ unit 1, CT on [\d.]+:\d+)",
        )
        modbus, ct = found.split(" unit 1, CT on ")
        bat = await asyncio.to_thread(
            procs.start,
            "battery",
            ["emulate", "battery", "--port", "0", "--ct", ct, "--ct-name", "bat"],
            r"listening on ([\d.]+:\d+)",
        )
        await asyncio.to_thread(
            procs.start,
            "heater",
            ["emulate", "waterheater", "--tcp", "0", "--no-draws", "--start-temp", "30",
             "--ct", ct, "--ct-name", "wh"],
            r"(ready on)",
        )  # fmt: skip
        await asyncio.to_thread(
            procs.start,
            "meter-agent",
            ["meter", "--modbus", f"tcp://{modbus}", "--id", "meter-x", "--broker", broker_url,
             "--insecure", "--poll", "0.2"],
            r"(starting)",
        )  # fmt: skip
        # base 1.5 kW + a cold tank heating on one element; the battery idles
        await wait_for(lambda: net_kw() == pytest.approx(1.5 + HEATER_KW, abs=0.03), 10.0)
        host, port = bat.rsplit(":", 1)
        async with SunSpecClient(host, int(port)) as battery:
            await battery.scan()
            await battery.write_points(124, {"OutWRte": -50.0, "InWRte": 50.0})
            await battery.write_point(124, "StorCtl_Mod", 3)  # charge at 4 kW
            await wait_for(lambda: net_kw() == pytest.approx(10.0, abs=0.03), 5.0)
            await battery.write_points(124, {"OutWRte": 75.0, "InWRte": -75.0})  # discharge 6
            await wait_for(lambda: net_kw() == pytest.approx(0.0, abs=0.03), 5.0)
        assert telemetry[-1]["Comm_Fault"] is False and telemetry[-1]["Phases"] == 1
    finally:
        await asyncio.to_thread(procs.stop_all)
        await ems.stop()
