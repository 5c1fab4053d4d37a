"""sef meter end to end: meter emulator → Modbus TCP → meter agent → Mosquitto → EMS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from sef.agents.meter import NOT_SUPPORTED, MeterAgent
from sef.clock import Clock, RealClock, ScaledClock
from sef.ems import EMS, Event
from sef.emulators._meter_sources import BaseLoad
from sef.emulators.meter import MeterEmulator
from sef.interface import DEMO_INTERFACE
from support import wait_for


@dataclass
class Rig:
    clock: Clock
    meter: MeterEmulator
    agent: MeterAgent
    ems: EMS
    telemetry: list[dict[str, Any]]

    def last(self) -> dict[str, Any]:
        return self.telemetry[-1] if self.telemetry else {}


@contextlib.asynccontextmanager
async def rig(broker_url: str, meter: MeterEmulator, *, poll_s: float = 0.1) -> AsyncIterator[Rig]:
    await meter.start()
    assert meter.address is not None
    stepper = asyncio.create_task(meter.run())
    agent = MeterAgent(
        "meter-1",
        broker_url,
        modbus_host=meter.address[0],
        modbus_port=meter.address[1],
        poll_s=poll_s,
        clock=meter.clock,
        keepalive_s=2,
    )
    telemetry: list[dict[str, Any]] = []

    def keep(event: Event) -> None:
        if event.kind == "property" and event.detail == f"{DEMO_INTERFACE}.Telemetry":
            record = ems.registry.get(event.agent_id)
            assert record is not None
            value = record.prop(DEMO_INTERFACE, "Telemetry")
            telemetry.append({k: v[1] for k, v in value.items()})

    ems = EMS(broker_url, "ems-meter", clock=meter.clock, on_event=keep)
    await ems.start()
    await agent.start()
    try:
        await wait_for(lambda: "Net_Power_kW" in (telemetry[-1] if telemetry else {}), 5.0)
        yield Rig(meter.clock, meter, agent, ems, telemetry)
    finally:
        await agent.stop()
        await ems.stop()
        stepper.cancel()
        await meter.stop()


async def test_agent_publishes_the_meters_net_power(broker_url: str) -> None:
    meter = MeterEmulator(port=0, clock=RealClock(), base_load=BaseLoad.constant(3.0))
    async with rig(broker_url, meter) as r:
        assert r.last()["Net_Power_kW"] == pytest.approx(3.0, abs=0.011)
        meter.on_ct("battery", -1200.0)  # a battery discharging behind the meter
        await wait_for(lambda: r.last()["Net_Power_kW"] == pytest.approx(1.8, abs=0.011), 2.0)
        t = r.last()
        assert t["Net_Power_Source"] == "instant"  # 1 Wh per 0.1 s resolves 36 kW only
        assert t["Power_kW"] == pytest.approx(1.8, abs=0.011)
        assert t["Phases"] == 1 and t["Meter_Model"] == 201
        assert t["Voltage_V"] == 240.0 and t["Frequency_Hz"] == 60.0
        assert t["Comm_Fault"] is False and "Fault" not in t
        assert "Event" not in t  # a meter runs no events
        meter.on_ct("battery", -5000.0)  # now the feeder exports
        await wait_for(lambda: r.last()["Net_Power_kW"] == pytest.approx(-2.0, abs=0.011), 2.0)
        await wait_for(lambda: bool(nameplate(r)), 2.0)
        assert nameplate(r) == {"DeviceType": "meter", "Phases": 1}


def nameplate(r: Rig) -> dict[str, Any]:
    """The meter agent's Nameplate as the EMS has it (``{}`` until published)."""
    record = r.ems.registry.get("meter-1")
    value = record.prop(DEMO_INTERFACE, "Nameplate") if record is not None else None
    return {k: v[1] for k, v in value.items()} if value else {}


async def test_net_power_is_the_mean_over_the_poll_from_the_energy_registers(
    broker_url: str,
) -> None:
    """At 720x a 0.1-s poll spans 72 clock s; the base load toggles 0 / 10 kW every 10 s,
    so W reads 0 or 10 while the mean over a poll is near 5 kW."""
    toggling = BaseLoad.from_series(np.tile([0.0, 10.0], 4320), 10.0)
    meter = MeterEmulator(port=0, clock=ScaledClock(speed=720.0), base_load=toggling, phases=3)
    async with rig(broker_url, meter) as r:
        await wait_for(lambda: len([t for t in r.telemetry if "Net_Power_kW" in t]) >= 12, 5.0)
        samples = [t for t in r.telemetry if t.get("Net_Power_Source") == "energy"]
        assert len(samples) >= 8
        means = [t["Net_Power_kW"] for t in samples]
        instants = {round(t["Power_kW"], 2) for t in samples}
        assert instants <= {0.0, 10.0}
        assert all(3.0 <= m <= 7.0 for m in means), means
        assert float(np.mean(means)) == pytest.approx(5.0, abs=0.6)
        assert r.last()["Phases"] == 3 and r.last()["Meter_Model"] == 203


async def test_meter_going_away_is_reported_and_the_agent_reconnects(broker_url: str) -> None:
    meter = MeterEmulator(port=0, clock=RealClock(), base_load=BaseLoad.constant(2.0))
    async with rig(broker_url, meter) as r:
        assert meter.address is not None
        port = meter.address[1]
        await meter.stop()
        await wait_for(lambda: r.last().get("Comm_Fault") is True, 2.0)
        faulty = r.last()
        assert "Net_Power_kW" not in faulty  # never a stale measurement
        assert faulty["Fault"]
        back = MeterEmulator(port=port, clock=RealClock(), base_load=BaseLoad.constant(4.0))
        await back.start()
        try:
            await wait_for(
                lambda: r.last().get("Net_Power_kW") == pytest.approx(4.0, abs=0.011), 5.0
            )
            assert r.last()["Comm_Fault"] is False
        finally:
            await back.stop()


@pytest.mark.parametrize(
    ("point", "raw", "reason"),
    [
        ("W_SF", 0x8000, "W_SF is 0x8000 (not implemented)"),
        ("W_SF", 20, "W_SF 20 is outside the SunSpec range -10..10"),
        ("W_SF", 0x7FFF, "W_SF 32767 is outside the SunSpec range -10..10"),
        ("W", 0x8000, "W is 0x8000 (not implemented)"),
    ],
)
async def test_garbage_from_the_meter_is_a_reported_fault_not_a_crash(
    broker_url: str, caplog: pytest.LogCaptureFixture, point: str, raw: int, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="sef.agent")
    meter = MeterEmulator(port=0, clock=RealClock(), base_load=BaseLoad.constant(2.5))
    async with rig(broker_url, meter) as r:
        meter.inject_raw(point, raw)
        await wait_for(lambda: reason in r.last().get("Fault", ""), 2.0)
        assert "Net_Power_kW" not in r.last() and r.last()["Comm_Fault"] is True
        assert any(reason in rec.getMessage() for rec in caplog.records)
        assert not any(rec.exc_info for rec in caplog.records)  # no traceback: a known fault
        meter.inject_raw(point, None)
        await wait_for(lambda: r.last().get("Net_Power_kW") == pytest.approx(2.5, abs=0.011), 5.0)


async def test_unusable_energy_registers_fall_back_to_w(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sef.agent.meter")
    meter = MeterEmulator(port=0, clock=ScaledClock(speed=720.0), base_load=BaseLoad.constant(6))
    async with rig(broker_url, meter) as r:
        await wait_for(lambda: r.last().get("Net_Power_Source") == "energy", 3.0)
        meter.inject_raw("TotWh_SF", 0x8000)
        await wait_for(lambda: r.last().get("Net_Power_Source") == "instant", 3.0)
        assert r.last()["Net_Power_kW"] == pytest.approx(6.0, abs=0.011)
        assert "Energy_Import_kWh" not in r.last()
        assert any(
            "energy registers unusable (TotWh_SF" in rec.getMessage() for rec in caplog.records
        )


async def test_energy_method_is_refused(broker_url: str) -> None:
    meter = MeterEmulator(port=0, clock=RealClock(), base_load=BaseLoad.constant(1.0))
    async with rig(broker_url, meter) as r:
        replies = await r.ems.call(
            "meter-1", DEMO_INTERFACE, "EnergyMethod", [[["discharge", 5, 600]]]
        )
        assert len(replies) == 1 and not replies[0].ok
        assert replies[0].error == NOT_SUPPORTED
        assert "meter" in (replies[0].message or "")
        assert r.last()["Net_Power_kW"] == pytest.approx(1.0, abs=0.011)  # still measuring
