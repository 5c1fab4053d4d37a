"""BIS readback: another Modbus client rewrites the battery's model-124 controls; the BIS
notices at its next poll, re-asserts the running event and reports ``Control_Mismatch``.

Real parts: the battery emulator's Modbus TCP server, the BIS, a second SunSpec client
acting as the rogue, a real Mosquitto broker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sef.agents.bis import BISAgent
from sef.clock import ScaledClock
from sef.emulators.battery import BatteryEmulator
from sef.interface import DEMO_INTERFACE
from sef.protocols.sunspec import SunSpecClient
from sef.protocols.sunspec.mdef import PointValue
from support import wait_for

POLL_S = 0.1


async def test_foreign_setpoint_is_detected_and_reasserted(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ScaledClock(speed=60.0)
    emulator = BatteryEmulator(port=0, clock=clock, soc=0.5, tick_s=1.0)
    _, modbus_port = await emulator.start()
    stepper = asyncio.create_task(emulator.run())
    bis = BISAgent(
        "bis-rb",
        broker_url,
        modbus_host="127.0.0.1",
        modbus_port=modbus_port,
        poll_s=POLL_S,
        clock=clock,
        keepalive_s=2,
    )
    rogue = SunSpecClient("127.0.0.1", modbus_port, unit=1)
    published: list[bool] = []  # Control_Mismatch of every Telemetry the BIS sets
    set_property = bis.set_property

    def recording_set_property(interface: str, name: str, value: Any) -> bool:
        if name == "Telemetry":
            published.append(bool(value["Control_Mismatch"].value))
        return set_property(interface, name, value)

    bis.set_property = recording_set_property  # type: ignore[method-assign]

    try:
        await bis.start()
        await wait_for(lambda: bis.status.healthy, 5.0)
        await bis.energy_method([("charge", 4, 7200)])
        await rogue.connect()
        await rogue.scan()
        assert (await rogue.read_points(124, ["InWRte", "OutWRte"])) == {
            "InWRte": 50.0,
            "OutWRte": -50.0,
        }
        with caplog.at_level(logging.WARNING, logger="sef.agent"):
            # the rogue commands a full-power discharge
            await rogue.write_points(124, {"OutWRte": 100.0, "InWRte": -100.0})
            await wait_for(lambda: bis.mismatches >= 1, 2 * POLL_S + 1.0)

        # re-asserted: the battery is back to charging at 4 kW (50 % of 8 kW)
        async def controls() -> dict[str, PointValue]:
            return await rogue.read_points(124, ["InWRte", "OutWRte", "StorCtl_Mod"])

        for _ in range(100):
            if await controls() == {"InWRte": 50.0, "OutWRte": -50.0, "StorCtl_Mod": 3}:
                break
            await asyncio.sleep(0.02)
        assert await controls() == {"InWRte": 50.0, "OutWRte": -50.0, "StorCtl_Mod": 3}
        assert any("OutWRte 100.0 (wrote -50.0)" in r.getMessage() for r in caplog.records)
        await wait_for(lambda: published[-1] is False, 2.0)  # cleared once it matches
        first = published.index(True)
        assert published[first:].count(True) <= 2  # reported, then cleared at the next poll
        assert bis.get_property(DEMO_INTERFACE, "Telemetry")["Setpoint_kW"].value == 4.0
    finally:
        rogue.close()
        await bis.stop()
        stepper.cancel()
        await emulator.stop()
