"""The ``Nameplate`` property on a real Mosquitto: the BIS reads it from the SunSpec battery
emulator over Modbus TCP, the UCM from the SGD emulator over a real pty (completed by its
options), the virtual battery from its model; the EMS registry holds the retained value,
also an EMS that starts after it was published; it is published again only when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import numpy as np
import pytest

from sef.agents import DERAgent, DeviceAdapter, DeviceStatus
from sef.agents._nameplate import battery_nameplate, nameplate_problems
from sef.agents._ucm_nameplate import NameplateOptions
from sef.agents.bis import BISAgent
from sef.agents.ucm import UCMAgent
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.clock import ScaledClock
from sef.ems import EMS, Event
from sef.emulators.battery import BatteryEmulator
from sef.emulators.waterheater import SGDEmulator, run_sgd_emulator
from sef.interface import DEMO_INTERFACE, EnergyEvent, Variant, from_json
from sef.models.battery import BatteryParams
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_helpers import FAST, EmulatorProcess

NAMEPLATE = f"{DEMO_INTERFACE}.Nameplate"


class Watcher:
    """An EMS that counts the agents' Nameplate updates and reads its registry."""

    def __init__(self, broker_url: str, host_id: str) -> None:
        self.updates: list[str] = []
        self.ems = EMS(broker_url, host_id, on_event=self._keep)

    def _keep(self, event: Event) -> None:
        if event.kind == "property" and event.detail == NAMEPLATE:
            self.updates.append(event.agent_id)

    def nameplate(self, agent_id: str) -> dict[str, Any] | None:
        """The agent's Nameplate in the registry as ``{key: plain value}``."""
        record = self.ems.registry.get(agent_id)
        value = None if record is None else record.prop(DEMO_INTERFACE, "Nameplate")
        return None if value is None else {k: v[1] for k, v in value.items()}

    def wire(self, agent_id: str) -> Any:
        """The agent's Nameplate in the registry, in its JSON mapping."""
        record = self.ems.registry.get(agent_id)
        return None if record is None else record.prop(DEMO_INTERFACE, "Nameplate")

    def problems(self, agent_id: str) -> list[str]:
        record = self.ems.registry.get(agent_id)
        assert record is not None
        parsed = from_json("a{sv}", record.prop(DEMO_INTERFACE, "Nameplate"))
        assert isinstance(parsed, dict)
        return nameplate_problems(parsed)


@contextlib.asynccontextmanager
async def watching(broker_url: str, host_id: str = "ems-np") -> AsyncIterator[Watcher]:
    watcher = Watcher(broker_url, host_id)
    await watcher.ems.start()
    try:
        yield watcher
    finally:
        await watcher.ems.stop()


async def test_bis_publishes_the_sunspec_ratings(broker_url: str) -> None:
    params = BatteryParams(rated_power_kw=5.0, capacity_kwh=13.5, soc_min=0.1, soc_max=0.9)
    emulator = BatteryEmulator(port=0, params=params, clock=ScaledClock(speed=1.0))
    _, port = await emulator.start()
    bis = BISAgent(
        "bis-np",
        broker_url,
        modbus_host="127.0.0.1",
        modbus_port=port,
        poll_s=0.1,
        keepalive_s=2,
        charge_efficiency_pct=96.0,
    )
    try:
        async with watching(broker_url) as watcher:
            await bis.start()
            await wait_for(lambda: watcher.nameplate("bis-np") is not None, 5.0)
            assert watcher.nameplate("bis-np") == {
                "DeviceType": "battery",
                "Charge_Rate_kW": 5.0,  # 124 WChaMax
                "Discharge_Rate_kW": 5.0,  # 802 WDisChaRteMax
                "Capacity_kWh": 13.5,  # 802 WHRtg
                "SOC_Min_pct": 10.0,  # 802 SoCMin (and the reserves, equal here)
                "SOC_Max_pct": 90.0,  # 802 SoCMax
                "Charge_Efficiency_pct": 96.0,  # configuration
                "Discharge_Efficiency_pct": 97.5,  # the documented default
            }
            assert watcher.problems("bis-np") == []
            print("BIS Nameplate:", json.dumps(watcher.wire("bis-np")))
            await asyncio.sleep(0.6)  # about 6 polls: the unchanged nameplate is not re-sent
            assert watcher.updates.count("bis-np") == 1, watcher.updates
        # an EMS started later gets the retained value from the broker
        async with watching(broker_url, "ems-late") as late:
            await wait_for(lambda: late.nameplate("bis-np") is not None, 3.0)
            assert (late.nameplate("bis-np") or {}).get("Capacity_kWh") == 13.5
    finally:
        await bis.stop()
        await emulator.stop()


async def test_bis_narrows_the_soc_window_by_the_reserve(broker_url: str) -> None:
    emulator = BatteryEmulator(port=0, clock=ScaledClock(speed=1.0))
    _, port = await emulator.start()
    emulator.image.set(124, "MinRsvPct", 20.0)  # an installer's reserve above SoCMin 5 %
    bis = BISAgent("bis-rsv", broker_url, modbus_host="127.0.0.1", modbus_port=port, poll_s=0.1)
    try:
        async with watching(broker_url) as watcher:
            await bis.start()
            await wait_for(lambda: watcher.nameplate("bis-rsv") is not None, 5.0)
            plate = watcher.nameplate("bis-rsv")
            assert plate is not None
            assert (plate["SOC_Min_pct"], plate["SOC_Max_pct"]) == (20.0, 95.0)
            assert (plate["Charge_Rate_kW"], plate["Capacity_kWh"]) == (8.0, 60.0)
    finally:
        await bis.stop()
        await emulator.stop()


@contextlib.asynccontextmanager
async def ucm_on_pty(
    broker_url: str, agent_id: str, sgd: SGDEmulator, options: NameplateOptions | None = None
) -> AsyncIterator[UCMAgent]:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    emulator = asyncio.create_task(
        run_sgd_emulator(pty=True, emulator=sgd, on_ready=ready.set_result)
    )
    path = await asyncio.wait_for(ready, 5.0)
    ucm = UCMAgent(
        agent_id,
        broker_url,
        serial_port=path,
        poll_s=0.1,
        clock=sgd.clock,
        keepalive_s=2,
        timing=FAST,
        nameplate=options,
    )
    await ucm.start()
    try:
        yield ucm
    finally:
        await ucm.stop()
        emulator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await emulator


async def test_ucm_reads_the_nameplate_from_the_sgd(broker_url: str) -> None:
    sgd = SGDEmulator(ScaledClock(speed=1.0), timing=FAST, draws=np.zeros(0))
    async with watching(broker_url) as watcher, ucm_on_pty(broker_url, "wh-np", sgd) as ucm:
        await wait_for(lambda: watcher.nameplate("wh-np") is not None, 8.0)
        plate = watcher.nameplate("wh-np")
        assert plate is not None
        volume = plate.pop("Volume_L")  # commodity 6 and the setpoint: the model's 170 L
        assert volume == pytest.approx(170.0, abs=0.5)
        assert plate == {
            "DeviceType": "water_heater",
            "Heater_Type": "resistance",  # GetInformation device type 0x0002
            "Element_kW": 4.5,  # commodity 8, rated maximum consumption
            "Compressor_kW": 0.0,
            "Setpoint_C": 51.67,  # Get Setpoint: 125 °F
            "Deadband_K": 5.56,  # configuration default
        }
        assert watcher.problems("wh-np") == []
        print("UCM Nameplate:", json.dumps(watcher.wire("wh-np")))
        assert any(isinstance(m, cta.GetSetpointRequest) for m in sgd.received)
        await asyncio.sleep(0.8)  # several polls: published once
        assert watcher.updates.count("wh-np") == 1
        assert ucm.device.ratings.element_w == 4500.0


async def test_ucm_options_win_and_a_heat_pump_is_recognised(broker_url: str) -> None:
    sgd = SGDEmulator(ScaledClock(speed=1.0), timing=FAST, draws=np.zeros(0))
    sgd.device_type = cta.DeviceType.HPWH_VARIABLE_CAPACITY
    options = NameplateOptions(volume_l=189.3, deadband_k=8.17, compressor_kw=0.45, inlet_c=12.0)
    async with watching(broker_url) as watcher, ucm_on_pty(broker_url, "wh-hp", sgd, options):
        await wait_for(lambda: watcher.nameplate("wh-hp") is not None, 8.0)
        assert watcher.nameplate("wh-hp") == {
            "DeviceType": "water_heater",
            "Heater_Type": "heat_pump",  # device type 0x001B
            "Volume_L": 189.3,
            "Element_kW": 4.5,
            "Compressor_kW": 0.45,
            "Setpoint_C": 51.67,
            "Deadband_K": 8.17,
            "Inlet_C": 12.0,
        }
        assert watcher.problems("wh-hp") == []


async def test_virtual_battery_publishes_its_model_parameters(broker_url: str) -> None:
    params = BatteryParams(rated_power_kw=6.0, capacity_kwh=20.0, charge_efficiency=0.95)
    agent = VirtualBatteryAgent("vb-np", broker_url, params=params, step_s=1.0, keepalive_s=2)
    async with watching(broker_url) as watcher:
        await agent.start()
        try:
            await wait_for(lambda: watcher.nameplate("vb-np") is not None, 5.0)
            plate = watcher.nameplate("vb-np")
            assert plate is not None
            assert plate["Charge_Rate_kW"] == plate["Discharge_Rate_kW"] == 6.0
            assert plate["Capacity_kWh"] == 20.0
            assert (plate["SOC_Min_pct"], plate["SOC_Max_pct"]) == (5.0, 95.0)
            assert plate["Charge_Efficiency_pct"] == 95.0
            assert plate["Discharge_Efficiency_pct"] == 97.5
        finally:
            await agent.stop()


class RatedBox(DeviceAdapter):
    """A device whose ratings are known only once it answered, and may change."""

    comm_errors: ClassVar[tuple[type[BaseException], ...]] = (ConnectionError,)

    def __init__(self) -> None:
        self.capacity_kwh: float | None = None
        self.polls = 0

    async def connect(self) -> None:
        return None

    async def read(self) -> None:
        self.polls += 1

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        return None

    async def close(self) -> None:
        return None

    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        return {}

    def nameplate(self) -> dict[str, Variant] | None:
        if self.capacity_kwh is None:
            return None
        return battery_nameplate(
            charge_kw=2.0,
            discharge_kw=2.0,
            capacity_kwh=self.capacity_kwh,
            soc_min_pct=0.0,
            soc_max_pct=100.0,
        )


async def test_published_when_known_and_again_only_when_changed(broker_url: str) -> None:
    box = RatedBox()
    agent = DERAgent("box-np", broker_url, box, poll_s=0.05, keepalive_s=2)
    async with watching(broker_url) as watcher:
        await agent.start()
        try:
            await wait_for(lambda: box.polls >= 5, 3.0)
            await asyncio.sleep(0.2)
            assert watcher.nameplate("box-np") is None  # not known: nothing published
            box.capacity_kwh = 10.0
            await wait_for(lambda: watcher.nameplate("box-np") is not None, 2.0)
            polls = box.polls
            await wait_for(lambda: box.polls >= polls + 5, 2.0)
            assert watcher.updates.count("box-np") == 1
            box.capacity_kwh = 12.5
            await wait_for(
                lambda: (watcher.nameplate("box-np") or {}).get("Capacity_kWh") == 12.5, 2.0
            )
            polls = box.polls
            await wait_for(lambda: box.polls >= polls + 5, 2.0)
            assert watcher.updates.count("box-np") == 2
        finally:
            await agent.stop()


async def test_sef_ucm_options_reach_the_nameplate(broker_url: str) -> None:
    """``sef emulate waterheater --pty`` and ``sef ucm --volume-l ... --inlet-c ...`` as
    processes: the options are in the retained Nameplate, the rest is the SGD's."""
    emulator = EmulatorProcess("--pty", "--no-draws", clock="real")
    ucm = subprocess.Popen(
        [
            sys.executable, "-m", "sef", "ucm", "--insecure", "--id", "wh-cli",
            "--broker", broker_url, "--serial", emulator.where, "--poll", "0.2",
            "--volume-l", "189.3", "--deadband-k", "4.0", "--inlet-c", "10.5",
        ],
        env={**os.environ, "SEF_CLOCK": "real"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with watching(broker_url) as watcher:
            await wait_for(lambda: watcher.nameplate("wh-cli") is not None, 15.0, step_s=0.05)
            plate = watcher.nameplate("wh-cli")
            assert plate is not None
            assert (plate["Volume_L"], plate["Deadband_K"], plate["Inlet_C"]) == (189.3, 4.0, 10.5)
            assert (plate["Element_kW"], plate["Setpoint_C"]) == (4.5, 51.67)  # the SGD's
    finally:
        ucm.terminate()
        ucm.wait(10)
        emulator.stop()
