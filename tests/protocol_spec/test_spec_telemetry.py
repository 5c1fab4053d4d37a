"""docs/interfaces.md "Telemetry keys": the table lists every key SEF's agents publish, and
``sef agents`` shows any agent's keys, interfaces and AssetName (a real Mosquitto, the
real command)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from sef.agents import Agent, DeviceStatus, method
from sef.agents._battery import BatteryReading, battery_telemetry
from sef.agents.ucm import CtaWaterHeater
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.ems import EMS
from sef.ems.render import STANDARD_TELEMETRY_UNITS
from sef.interface import DEMO_INTERFACE, Variant
from sef.protocols import cta2045 as cta
from support import record, wait_for

SEF_AGENTS = (sys.executable, "-m", "sef", "agents", "--insecure")
DOC = Path(__file__).resolve().parents[2] / "docs" / "interfaces.md"


def documented_keys() -> dict[str, tuple[str, str]]:
    """The standard keys of docs/interfaces.md: key -> (type, unit)."""
    section = DOC.read_text(encoding="utf-8").split("### Telemetry keys", 1)[1]
    keys: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        for key in re.findall(r"`([A-Za-z_]+)`", cells[0]):
            keys[key] = (cells[1], cells[2])
    return keys


async def test_every_key_sef_s_agents_publish_is_documented(broker_url: str) -> None:
    published: set[str] = set()
    # the virtual battery on a real broker: what the EMS receives
    agent = VirtualBatteryAgent("vb-keys", broker_url, step_s=1.0)
    await agent.start()
    async with EMS(broker_url, "ems-keys") as ems:
        await wait_for(lambda: record(ems, "vb-keys").prop(DEMO_INTERFACE, "Telemetry"), 5.0)
        published |= set(record(ems, "vb-keys").prop(DEMO_INTERFACE, "Telemetry"))
    await agent.stop()
    # the BIS's keys, a fault included, and the UCM's with every reading present
    reading = BatteryReading(50.0, 30.0, 60.0, 8.0, 400.0, 1.0, 0.4, "CONNECTED")
    published |= set(battery_telemetry(reading, agent.current_event, 1.0, fault_text="x"))
    heater = CtaWaterHeater(serial_port="/dev/null")
    heater.op_state, heater.refused = 1, "shed: not supported"
    heater.power_w = heater.tank_temp_c = heater.energy_used_wh = 1.0
    heater.stored_wh = heater.capacity_wh = 1.0
    heater.last_message = cta.EndShed()
    heater.device_info = cta.GetInformationReply(model="m", serial="s")
    published |= set(heater.telemetry(DeviceStatus(healthy=False, fault="link down")))
    documented = documented_keys()
    assert published - set(documented) == set(), "keys missing from docs/interfaces.md"
    assert {"TimeStamp", "Sys_SOC", "Power_W", "Tank_Temp_C", "Op_State"} <= set(documented)


def test_the_units_sef_agents_shows_are_the_documented_ones() -> None:
    documented = documented_keys()
    for key, unit in STANDARD_TELEMETRY_UNITS.items():
        assert key in documented, key
        expected = documented[key][1]
        assert unit.strip() == ("" if expected in ("–", "bits", "Unix s") else expected), key


CHARGER_XML = """<node>
  <interface name="com.example.charger">
    <property name="Cable_Temp_C" type="d" access="read"/>
  </interface>
</node>
"""


class ChargerAgent(Agent):
    """A vendor's EV charger: the demo interface with non-standard telemetry keys, and an
    interface of its own."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(
            agent_id, broker, interface_xml={"com.example.charger": CHARGER_XML}, **kwargs
        )

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", "Garage charger")
        self.set_property(
            DEMO_INTERFACE,
            "Telemetry",
            {
                "TimeStamp": Variant("u", 1767225600),
                "Plug_State": Variant("s", "plugged"),
                "Session_Energy_kWh": Variant("d", 12.5),
                "Sys_SOC": Variant("d", 61.0),
            },
        )
        self.set_property("com.example.charger", "Cable_Temp_C", 31.5)

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        return None


def test_sef_agents_shows_any_agent_s_keys_interfaces_and_asset_name(broker_url: str) -> None:
    async def run() -> subprocess.CompletedProcess[str]:
        agent = ChargerAgent("ev-7", broker_url, groups=["garage"])
        await agent.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: subprocess.run(
                    [*SEF_AGENTS, "--broker", broker_url, "--wait", "2"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env={**os.environ, "COLUMNS": "400"},
                ),
            )
        finally:
            await agent.stop()

    out = asyncio.run(run())
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "ev-7" in line).replace("\xa0", " ")
    for shown in (
        "Garage charger",  # AssetName
        "com.example.charger",  # every interface
        DEMO_INTERFACE,
        "sef.Agent",
        "garage",
        "Plug_State plugged",  # non-standard keys, as published
        "Session_Energy_kWh 12.5",
        "Sys_SOC 61 %",  # a standard key, with its unit
        "Cable_Temp_C 31.5",  # a property of the vendor's own interface
    ):
        assert shown in row, f"{shown!r} not in {row!r}"
    assert "1767225600" not in row, "TimeStamp is not shown as a value"
