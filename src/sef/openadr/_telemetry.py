"""A group's telemetry now, aggregated from the EMS registry for usage reports
(``TELEMETRY_USAGE``) and for the delivered-vs-requested figure of an event.

Members of ``group`` are the **online** agents that announced it (``"*"``: every online
agent); an agent contributes when its last ``Telemetry`` has the key read for it:

* real power, kW, summed (+ = drawn from the grid): a battery's ``Sys_Power_kW`` (+ =
  charging, so a discharging battery counts negative), a water heater's ``Power_W`` / 1000.
  A meter's ``Net_Power_kW`` is **not** added: the feeder it meters includes the devices;
* stored energy, kWh, summed over batteries: ``Sys_Energy_kWh``, else ``Sys_SOC`` % ×
  ``Capacity_kWh`` (nameplate) or ``Sys_Rated_Energy``; water heaters report none;
* voltage, V: the mean AC ``Voltage_V`` of the group's meters; in a group without a meter
  that reports one, the mean DC bus voltage ``Sys_DC_Volts`` of its batteries;
* current, A: Σ ``Current_A`` (AC) where members report it, else Σ ``Sys_DC_Current`` of
  the batteries (+ = charging).

``time_s`` is the newest contributing sample's ``TimeStamp`` (sender time), else its
receipt time, Unix s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sef.ems._records import AgentRecord
from sef.ems._registry import Registry
from sef.interface import DEMO_INTERFACE
from sef.openadr._fleet import finite, member_kind, plain, power_kw
from sef.openadr._model import TelemetrySample
from sef.openadr._plan import MemberKind

__all__ = ["agents_power_kw", "group_records", "group_telemetry"]


def group_records(registry: Registry, group: str) -> list[AgentRecord]:
    """The online members of ``group`` (``"*"``: every online agent), by agent id."""
    records = registry.agents.values() if group == "*" else registry.group_members(group)
    return sorted((r for r in records if r.online is True), key=lambda r: r.agent_id)


def _sample_time(record: AgentRecord, telemetry: dict[str, Any]) -> float:
    stamp = finite(telemetry, "TimeStamp")
    if stamp is not None:
        return stamp
    entry = record.properties.get(f"{DEMO_INTERFACE}.Telemetry")
    return 0.0 if entry is None else entry.ts if entry.ts is not None else entry.received


def _energy_kwh(plate: dict[str, Any], telemetry: dict[str, Any]) -> float | None:
    stored = finite(telemetry, "Sys_Energy_kWh")
    if stored is not None:
        return stored
    soc = finite(telemetry, "Sys_SOC")
    capacity = finite(plate, "Capacity_kWh") or finite(telemetry, "Sys_Rated_Energy")
    return None if soc is None or capacity is None else soc / 100.0 * capacity


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(group: str, records: Iterable[AgentRecord]) -> TelemetrySample | None:
    """The :class:`TelemetrySample` of ``records`` under the name ``group`` (see the module
    docstring), ``None`` if none of them reports anything."""
    power = 0.0
    energy: list[float] = []
    ac_v: list[float] = []
    dc_v: list[float] = []
    ac_i: list[float] = []
    dc_i: list[float] = []
    members, newest = 0, 0.0
    for record in records:
        telemetry = plain(record.prop(DEMO_INTERFACE, "Telemetry"))
        plate = plain(record.prop(DEMO_INTERFACE, "Nameplate"))
        kind = member_kind(plate, telemetry)
        if kind is None or not telemetry:
            continue
        contributed = False
        if kind is not MemberKind.METER:
            kw = power_kw(kind, telemetry)
            if kw is not None:
                power += kw
                contributed = True
        if kind is MemberKind.BATTERY:
            kwh = _energy_kwh(plate, telemetry)
            if kwh is not None:
                energy.append(kwh)
                contributed = True
        for key, into in (("Voltage_V", ac_v), ("Current_A", ac_i)):
            value = finite(telemetry, key)
            if value is not None:
                into.append(value)
                contributed = True
        if kind is MemberKind.BATTERY:
            for key, into in (("Sys_DC_Volts", dc_v), ("Sys_DC_Current", dc_i)):
                value = finite(telemetry, key)
                if value is not None:
                    into.append(value)
        if contributed:
            members += 1
            newest = max(newest, _sample_time(record, telemetry))
    if not members:
        return None
    return TelemetrySample(
        group=group,
        time_s=newest,
        power_kw=power,
        energy_kwh=sum(energy) if energy else None,
        voltage_v=_mean(ac_v) if ac_v else _mean(dc_v),
        current_a=sum(ac_i) if ac_i else sum(dc_i) if dc_i else None,
        members=members,
    )


def group_telemetry(registry: Registry, group: str) -> TelemetrySample | None:
    """The group's aggregated telemetry now (``"*"``: the whole online fleet)."""
    return aggregate(group, group_records(registry, group))


def agents_power_kw(registry: Registry, agents: Iterable[str]) -> float | None:
    """Σ power drawn by these agents now, kW (meters excluded), ``None`` when none of them
    reports power."""
    total, seen = 0.0, False
    for agent_id in agents:
        record = registry.agents.get(agent_id)
        if record is None:
            continue
        telemetry = plain(record.prop(DEMO_INTERFACE, "Telemetry"))
        kind = member_kind(plain(record.prop(DEMO_INTERFACE, "Nameplate")), telemetry)
        if kind is None or kind is MemberKind.METER:
            continue
        kw = power_kw(kind, telemetry)
        if kw is not None:
            total, seen = total + kw, True
    return total if seen else None
