"""The fleet as the demand-response mapping sees it, read from the EMS registry.

Every agent that publishes the demo interface's ``Nameplate`` (``a{sv}``; keys in
``docs/interfaces.md``, "Nameplate keys") is a :class:`~sef.openadr.FleetMember` of its
``DeviceType`` (``battery``, ``water_heater``, ``meter``); an agent without a nameplate is
classified from its ``Telemetry`` keys (``Sys_Energy_kWh`` / ``Sys_SOC``: battery,
``Energy_Stored_Wh`` / ``Tank_Temp_C`` / ``Power_W``: water heater, ``Net_Power_kW``:
meter), and an agent that is neither is left out. Offline agents are members with
``online=False`` (the mapping and the policy decide what that means).

Values taken (a missing or non-numeric key gives the member's default):

* battery: ``Charge_Rate_kW``, ``Discharge_Rate_kW``, ``Capacity_kWh`` (else telemetry
  ``Sys_Rated_Energy``), ``SOC_Min_pct``, ``SOC_Max_pct``; state of charge telemetry
  ``Sys_SOC`` (%), power ``Sys_Power_kW`` (kW, + = charging, i.e. drawn from the grid);
* water heater: ``Element_kW`` (a heat pump's ``Compressor_kW`` when given) as its
  charge rate; power ``Power_W`` / 1000 (kW, + = consuming);
* meter: power ``Net_Power_kW`` (kW, + = import).
"""

from __future__ import annotations

import math
from typing import Any

from sef.ems._records import AgentRecord
from sef.ems._registry import Registry
from sef.interface import DEMO_INTERFACE
from sef.openadr._plan import FleetMember, MemberKind

__all__ = ["finite", "fleet_members", "member_kind", "plain", "power_kw"]


def plain(value: Any) -> dict[str, Any]:
    """An ``a{sv}`` JSON mapping (``{key: [signature, value]}``) → ``{key: value}``."""
    if not isinstance(value, dict):
        return {}
    return {k: v[1] if isinstance(v, list) and len(v) == 2 else v for k, v in value.items()}


def finite(values: dict[str, Any], key: str) -> float | None:
    """``values[key]`` as a finite float, else ``None`` (bools are not numbers here)."""
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def member_kind(plate: dict[str, Any], telemetry: dict[str, Any]) -> MemberKind | None:
    """The device family from the nameplate's ``DeviceType``, else from telemetry keys."""
    kind = plate.get("DeviceType")
    if kind in ("battery", "water_heater", "meter"):
        return MemberKind(kind)
    if plate.get("DeviceType") is not None:
        return None  # a device type SEF does not control
    if "Net_Power_kW" in telemetry:
        return MemberKind.METER
    if "Sys_Energy_kWh" in telemetry or "Sys_SOC" in telemetry:
        return MemberKind.BATTERY
    if {"Energy_Stored_Wh", "Tank_Temp_C", "Power_W"} & telemetry.keys():
        return MemberKind.WATER_HEATER
    return None


def power_kw(kind: MemberKind, telemetry: dict[str, Any]) -> float | None:
    """A member's power drawn from the grid now, kW (+ = consuming or charging), from its
    telemetry; ``None`` when it reports none."""
    if kind is MemberKind.BATTERY:
        return finite(telemetry, "Sys_Power_kW")
    if kind is MemberKind.WATER_HEATER:
        watts = finite(telemetry, "Power_W")
        return None if watts is None else watts / 1000.0
    return finite(telemetry, "Net_Power_kW")


def _member(record: AgentRecord) -> FleetMember | None:
    plate = plain(record.prop(DEMO_INTERFACE, "Nameplate"))
    telemetry = plain(record.prop(DEMO_INTERFACE, "Telemetry"))
    kind = member_kind(plate, telemetry)
    if kind is None:
        return None
    common: dict[str, Any] = {
        "agent_id": record.agent_id,
        "kind": kind,
        "groups": tuple(record.groups),
        "online": record.online is True,
        "power_kw": power_kw(kind, telemetry),
    }
    if kind is MemberKind.BATTERY:
        capacity = finite(plate, "Capacity_kWh") or finite(telemetry, "Sys_Rated_Energy") or 0.0
        return FleetMember(
            **common,
            charge_rate_kw=max(finite(plate, "Charge_Rate_kW") or 0.0, 0.0),
            discharge_rate_kw=max(finite(plate, "Discharge_Rate_kW") or 0.0, 0.0),
            capacity_kwh=max(capacity, 0.0),
            soc_pct=finite(telemetry, "Sys_SOC"),
            soc_min_pct=finite(plate, "SOC_Min_pct") or 0.0,
            soc_max_pct=finite(plate, "SOC_Max_pct") or 100.0,
        )
    if kind is MemberKind.WATER_HEATER:
        element = finite(plate, "Element_kW") or 0.0
        compressor = finite(plate, "Compressor_kW") or 0.0
        heat_pump = plate.get("Heater_Type") == "heat_pump" and compressor > 0
        return FleetMember(**common, charge_rate_kw=max(compressor if heat_pump else element, 0.0))
    return FleetMember(**common)


def fleet_members(registry: Registry) -> list[FleetMember]:
    """Every agent of the registry the mapping can address, sorted by agent id."""
    members = (_member(registry.agents[a]) for a in registry.sorted_ids())
    return [m for m in members if m is not None]
