"""Inverter agent end to end: EMS → Mosquitto → agent → Modbus TCP → inverter emulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from sef.agents._nameplate import nameplate_problems
from sef.agents.inverter import INVERTER_INTERFACE, NOT_SUPPORTED, InverterAgent
from sef.broker import free_port
from sef.bus import ErrorName
from sef.clock import ScaledClock
from sef.ems import EMS
from sef.emulators.inverter import InverterEmulator
from sef.interface import DEMO_INTERFACE
from sef.protocols.sunspec import SunSpecClient
from support import record, wait_for

NOON = 1782068400.0  # 2026-06-21T19:00Z: solar noon at the emulator's default site
POLL_S = 0.2


def noon_clock() -> ScaledClock:
    return ScaledClock(speed=1.0, sim_start=NOON, real_anchor=time.time())


@dataclass
class Rig:
    emulator: InverterEmulator
    agent: InverterAgent
    ems: EMS
    polls: list[float]

    def telemetry(self) -> dict[str, Any]:
        found = self.ems.registry.get(self.agent.agent_id)
        value = (found.prop(DEMO_INTERFACE, "Telemetry") if found is not None else None) or {}
        return {k: v[1] for k, v in value.items()}

    def published(self, key: str) -> float:
        """A numeric key of the Telemetry the agent published last (-1 if absent)."""
        value = self.agent.get_property(DEMO_INTERFACE, "Telemetry").get(key)
        return -1.0 if value is None else float(value.value)

    def watts(self) -> float:
        value = self.emulator.image.get(701, "W")
        assert isinstance(value, int | float)
        return float(value)


@contextlib.asynccontextmanager
async def rig(broker_url: str) -> AsyncIterator[Rig]:
    clock = noon_clock()
    emulator = InverterEmulator(port=0, clock=clock, tick_s=0.1)
    _, port = await emulator.start()
    stepper = asyncio.create_task(emulator.run())
    agent = InverterAgent(
        "pv-1", broker_url, modbus_host="127.0.0.1", modbus_port=port, poll_s=POLL_S,
        clock=clock, dc_kwp=6.0, keepalive_s=2,
    )  # fmt: skip
    polls: list[float] = []
    read = agent.device.read

    async def counted() -> None:  # the real read, counted
        await read()
        polls.append(time.monotonic())

    agent.device.read = counted  # type: ignore[method-assign]
    ems = EMS(broker_url, "ems-pv", clock=clock)
    await ems.start()
    await agent.start()
    try:
        r = Rig(emulator, agent, ems, polls)
        await wait_for(lambda: "PV_Power_kW" in r.telemetry(), 5.0)
        yield r
    finally:
        await agent.stop()
        await ems.stop()
        stepper.cancel()
        await emulator.stop()


async def test_shed_through_the_bus_curtails_within_two_polls(broker_url: str) -> None:
    async with rig(broker_url) as r:
        assert r.watts() == pytest.approx(5000, abs=2)
        assert r.telemetry()["PV_Power_kW"] == pytest.approx(5.0, abs=0.01)
        sent_after = len(r.polls)
        replies = await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["shed", 2, 600]]])
        assert replies and replies[0].ok and replies[0].applied is True
        await wait_for(lambda: abs(r.published("PV_Power_kW") - 2.0) < 0.01, 5.0)
        assert len(r.polls) - sent_after <= 2, "output seen changed only after more than 2 polls"
        await wait_for(lambda: abs(r.telemetry().get("PV_Power_kW", 0) - 2.0) < 0.01, 5.0)
        assert r.emulator.image.get(704, "WMaxLimPctEna") == 1
        assert r.emulator.image.get(704, "WMaxLimPct") == pytest.approx(40.0)
        assert r.watts() == pytest.approx(2000, abs=1)
        # a timed shed also arms the inverter's own revert: end + 60 s margin
        assert r.emulator.image.get(704, "WMaxLimPctRvrtTms") == pytest.approx(660, abs=2)
        t = r.telemetry()
        assert t["Event"] == "shed" and t["Limit_kW"] == 2.0 and t["Limited"] is True
        assert t["State"] == "THROTTLED" and t["Power_W"] == pytest.approx(-2000, abs=1)
        assert t["Curtailed_pct"] == pytest.approx(60.0)
        # endshed releases it
        await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["endshed", 0, 0]]])
        await wait_for(lambda: r.watts() == pytest.approx(5000, abs=2), 3.0)
        assert r.emulator.image.get(704, "WMaxLimPctEna") == 0
        # a timed shed, then idle (normal operation): curtailed, then released
        await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["shed", 1, 5], ["idle", 0, 0]]])
        await wait_for(lambda: r.watts() == pytest.approx(1000, abs=1), 4.0)
        await wait_for(lambda: r.watts() == pytest.approx(5000, abs=2), 10.0)
        assert r.emulator.image.get(704, "WMaxLimPctEna") == 0


async def test_other_commands_are_refused_with_a_reason(broker_url: str) -> None:
    async with rig(broker_url) as r:
        await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["shed", 3, 0]]])
        replies = await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["charge", 3, 60]]])
        # a valid sequence (protocol §7.2): accepted, but the device refuses it, with the reason
        assert replies and replies[0].ok and replies[0].applied is False
        assert replies[0].fault == NOT_SUPPORTED
        assert "cannot charge or discharge" in (replies[0].fault_message or "")
        await wait_for(lambda: "cannot charge" in r.telemetry().get("Refused", ""), 2.0)
        assert r.emulator.image.get(704, "WMaxLimPct") == pytest.approx(60.0)  # no change
        assert r.watts() == pytest.approx(3000, abs=1)
        # a malformed sequence is refused by the protocol and changes nothing
        bad = await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["boost", 1, 0]]])
        assert bad and not bad[0].ok and bad[0].error == ErrorName.INVALID_ARGS


async def test_inverter_interface_settings(broker_url: str) -> None:
    async with rig(broker_url) as r:
        rep = await r.ems.call("pv-1", INVERTER_INTERFACE, "SetExportLimit", [3.0])
        assert rep and rep[0].ok and rep[0].applied is True
        assert r.emulator.image.get(704, "WMaxLimPct") == pytest.approx(60.0)
        assert r.watts() == pytest.approx(3000, abs=1)
        # a shed above the export limit: the lower wins; below: the shed wins
        await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["shed", 4, 600]]])
        assert r.watts() == pytest.approx(3000, abs=1)
        await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["shed", 1, 600]]])
        assert r.watts() == pytest.approx(1000, abs=1)
        # the revert values are the standing export limit
        assert r.emulator.image.get(704, "WMaxLimPctRvrt") == pytest.approx(60.0)
        assert r.emulator.image.get(704, "WMaxLimPctEnaRvrt") == 1
        await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["endshed", 0, 0]]])
        await r.ems.call("pv-1", INVERTER_INTERFACE, "ClearExportLimit", [])
        assert r.watts() == pytest.approx(5000, abs=2)
        # power factor 0.9 absorbing, within the 5 kVA rating
        rep = await r.ems.call("pv-1", INVERTER_INTERFACE, "SetPowerFactor", [0.9, True])
        assert rep and rep[0].ok
        assert r.emulator.image.get(701, "PF") == pytest.approx(0.9, abs=1e-3)
        var = r.emulator.image.get(701, "Var")
        assert isinstance(var, int | float) and var < -2000
        bad = await r.ems.call("pv-1", INVERTER_INTERFACE, "SetPowerFactor", [0.5, True])
        assert bad and not bad[0].ok and "rating" in (bad[0].message or "")
        bad = await r.ems.call("pv-1", INVERTER_INTERFACE, "SetExportLimit", [-1.0])
        assert bad and not bad[0].ok and bad[0].error == ErrorName.INVALID_ARGS
        # volt-var
        rep = await r.ems.call("pv-1", INVERTER_INTERFACE, "SetVoltVar", [True])
        assert rep and rep[0].ok and r.emulator.image.get(705, "Ena") == 1
        await wait_for(
            lambda: bool(
                (record(r.ems, "pv-1").prop(INVERTER_INTERFACE, "Settings") or {}).get(
                    "VoltVar_Enabled", (None, False)
                )[1]
            ),
            2.0,
        )
        settings = record(r.ems, "pv-1").prop(INVERTER_INTERFACE, "Settings")
        assert settings["PowerFactor"][1] == 0.9 and settings["PowerFactor_Absorb"][1] is True
        assert "ExportLimit_kW" not in settings


async def test_nameplate_and_readback(broker_url: str) -> None:
    async with rig(broker_url) as r:
        await wait_for(
            lambda: record(r.ems, "pv-1").prop(DEMO_INTERFACE, "Nameplate") is not None, 3.0
        )
        plate = r.agent.get_property(DEMO_INTERFACE, "Nameplate")
        assert nameplate_problems(plate) == []
        assert plate["DeviceType"].value == "pv_inverter"
        assert plate["AC_Rating_kW"].value == 5.0 and plate["VA_Rating_kVA"].value == 5.0
        assert plate["DC_Rating_kWp"].value == 6.0 and plate["Var_Rating_kvar"].value == 2.2
        await r.ems.call("pv-1", DEMO_INTERFACE, "EnergyMethod", [[["shed", 2, 0]]])
        # another Modbus client lifts the limit: the agent re-asserts it
        other = SunSpecClient("127.0.0.1", r.emulator.address[1] if r.emulator.address else 0)
        await other.connect()
        await other.scan()
        await other.write_point(704, "WMaxLimPctEna", 0)
        other.close()
        await wait_for(lambda: r.agent.mismatches >= 1, 6.0)
        await wait_for(lambda: r.watts() == pytest.approx(2000, abs=1), 6.0)


async def test_emulator_killed_and_restarted(broker_url: str) -> None:
    port = free_port()
    env = {**os.environ, "SEF_CLOCK": noon_clock().spec()}

    def start_emulator() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sef", "emulate", "inverter", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        return proc

    emulator = start_emulator()
    agent = InverterAgent(
        "pv-f", broker_url, modbus_host="127.0.0.1", modbus_port=port, poll_s=0.25,
        clock=noon_clock(),
    )  # fmt: skip

    def pv_kw() -> float:
        value = agent.get_property(DEMO_INTERFACE, "Telemetry").get("PV_Power_kW")
        return -1.0 if value is None else float(value.value)

    try:
        await agent.start()
        await wait_for(lambda: pv_kw() == pytest.approx(5.0, abs=0.01), 5.0)
        await agent.energy_method([("shed", 2, 3600)])
        await wait_for(lambda: pv_kw() == pytest.approx(2.0, abs=0.01), 3.0)
        emulator.send_signal(signal.SIGKILL)
        emulator.wait()
        await wait_for(lambda: not agent.status.healthy, 5.0)
        telemetry = agent.get_property(DEMO_INTERFACE, "Telemetry")
        assert telemetry["Comm_Fault"].value is True and "Fault" in telemetry
        await asyncio.sleep(1.0)  # the agent keeps running and retrying
        assert agent.bus.connected
        emulator = start_emulator()  # a fresh inverter at full output until re-applied
        await wait_for(lambda: agent.status.healthy, 5.0)
        await wait_for(lambda: pv_kw() == pytest.approx(2.0, abs=0.01), 3.0)
        assert agent.get_property(DEMO_INTERFACE, "Telemetry")["Comm_Fault"].value is False
    finally:
        await agent.stop()
        emulator.kill()
        emulator.wait()
