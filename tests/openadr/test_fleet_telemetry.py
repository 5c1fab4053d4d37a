"""The fleet view and the per-group telemetry of the DR bridge, read from a real registry:
a BIS over Modbus TCP to the battery emulator and a UCM over a pty to the SGD emulator,
in groups, on the test's Mosquitto."""

from __future__ import annotations

import pytest
from dr_stack import dr_stack

from sef.interface import DEMO_INTERFACE
from sef.openadr import MemberKind
from sef.openadr._fleet import fleet_members
from sef.openadr._telemetry import group_telemetry
from support import wait_for


async def test_fleet_members_from_the_registry(broker_url: str) -> None:
    async with dr_stack(broker_url, batteries=1, heaters=1) as stack:
        fleet = {m.agent_id: m for m in fleet_members(stack.ems.registry)}
        assert set(fleet) == {"bat-1", "wh-1"}
        bat, wh = fleet["bat-1"], fleet["wh-1"]
        assert bat.kind is MemberKind.BATTERY and wh.kind is MemberKind.WATER_HEATER
        assert bat.groups == ("batteries", "feeder-1") and wh.groups == ("waterheaters", "feeder-1")
        assert bat.online and wh.online
        # the emulator's SunSpec ratings (docs/bis.md), through the BIS's Nameplate
        assert (bat.charge_rate_kw, bat.discharge_rate_kw, bat.capacity_kwh) == (8.0, 8.0, 60.0)
        assert (bat.soc_min_pct, bat.soc_max_pct) == (5.0, 95.0)
        assert bat.soc_pct == pytest.approx(60.0, abs=1.0)
        assert wh.charge_rate_kw == 4.5 and wh.discharge_rate_kw == 0.0
        assert wh.power_kw == pytest.approx(stack.heaters["wh-1"].power_w / 1000.0, abs=4.5)

        await stack.agents["wh-1"].stop()
        await wait_for(lambda: stack.ems.registry.agents["wh-1"].online is False, 10.0)
        offline = {m.agent_id: m for m in fleet_members(stack.ems.registry)}
        assert offline["wh-1"].online is False and offline["bat-1"].online


async def test_group_telemetry_sums_power_and_energy(broker_url: str) -> None:
    async with dr_stack(broker_url, batteries=2, heaters=1) as stack:
        replies = await stack.ems.call(
            "bat-1", DEMO_INTERFACE, "EnergyMethod", [[["discharge", 3, 600]]]
        )
        assert replies and replies[0].ok
        replies = await stack.ems.call(
            "bat-2", DEMO_INTERFACE, "EnergyMethod", [[["charge", 2, 600]]]
        )
        assert replies and replies[0].ok
        await wait_for(
            lambda: (
                stack.telemetry("bat-1").get("Sys_Power_kW", 0.0) < -2.9
                and stack.telemetry("bat-2").get("Sys_Power_kW", 0.0) > 1.9
            ),
            10.0,
        )
        batteries = group_telemetry(stack.ems.registry, "batteries")
        assert batteries is not None and batteries.members == 2
        powers = [stack.telemetry(a)["Sys_Power_kW"] for a in ("bat-1", "bat-2")]
        assert batteries.power_kw == pytest.approx(sum(powers), abs=1e-9)
        assert batteries.power_kw == pytest.approx(-1.0, abs=0.2)  # -3 + 2 at the emulators
        stored = sum(float(stack.batteries[a].model.energy_kwh[0]) for a in ("bat-1", "bat-2"))
        assert batteries.energy_kwh == pytest.approx(stored, rel=0.02)
        assert batteries.voltage_v is not None and batteries.voltage_v > 0  # DC bus, no meter
        assert batteries.current_a is not None

        heaters = group_telemetry(stack.ems.registry, "waterheaters")
        assert heaters is not None and heaters.members == 1
        assert heaters.energy_kwh is None and heaters.voltage_v is None
        assert heaters.power_kw == pytest.approx(stack.telemetry("wh-1")["Power_W"] / 1000.0)

        everything = group_telemetry(stack.ems.registry, "*")
        feeder = group_telemetry(stack.ems.registry, "feeder-1")
        assert everything is not None and feeder is not None
        assert everything.members == feeder.members == 3
        assert everything.power_kw == pytest.approx(batteries.power_kw + heaters.power_kw, abs=0.1)
        assert group_telemetry(stack.ems.registry, "nobody") is None


async def test_a_meter_gives_the_ac_voltage_not_power(broker_url: str) -> None:
    async with dr_stack(broker_url, batteries=1, heaters=0, meters=1, base_kw=3.0) as stack:
        fleet = {m.agent_id: m for m in fleet_members(stack.ems.registry)}
        assert fleet["meter-1"].kind is MemberKind.METER
        assert fleet["meter-1"].power_kw == pytest.approx(3.0, abs=0.05)
        feeder = group_telemetry(stack.ems.registry, "feeder-1")
        assert feeder is not None and feeder.members == 2
        volts = stack.telemetry("meter-1")["Voltage_V"]
        assert feeder.voltage_v == volts and 100.0 < volts < 300.0  # AC, not the DC bus
        # the feeder's power is the devices' (the meter's 3 kW import includes them)
        assert feeder.power_kw == stack.telemetry("bat-1")["Sys_Power_kW"]
        batteries = group_telemetry(stack.ems.registry, "batteries")
        assert batteries is not None and batteries.voltage_v == pytest.approx(
            stack.telemetry("bat-1")["Sys_DC_Volts"]
        )
