"""Console views of the EMS registry (rich): the agents table of ``sef agents``,
``sef ems`` and ``sef demo``.

It lives in the EMS layer so that both the CLI and the demo (which sits below the CLI)
can use it without importing upwards. The table shows whatever an agent publishes: its
interfaces, its ``AssetName`` and every key of its telemetry (standard keys first, with
their units from ``docs/interfaces.md``; any other key after them, by name).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from sef.ems._records import AgentRecord

__all__ = ["STANDARD_TELEMETRY_UNITS", "agents_table", "asset_name", "telemetry_text"]

STANDARD_TELEMETRY_UNITS: dict[str, str] = {
    "Event": "",
    "Event_Rate_kW": " kW",
    "Sys_SOC": " %",
    "Sys_Power_kW": " kW",
    "Sys_Energy_kWh": " kWh",
    "Sys_Rated_Energy": " kWh",
    "Sys_Rated_Power": " kW",
    "Sys_DC_Volts": " V",
    "Sys_DC_Current": " A",
    "Setpoint_kW": " kW",
    "Requested_kW": " kW",
    "Op_State": "",
    "Power_W": " W",
    "Energy_Stored_Wh": " Wh",
    "Energy_Capacity_Wh": " Wh",
    "Energy_Used_Wh": " Wh",
    "Tank_Temp_C": " °C",
    "State": "",
    "Link": "",
    "PV_Power_kW": " kW",
    "Limit_kW": " kW",
    "Curtailed_pct": " %",
    "Reactive_var": " var",
    "Energy_Produced_Wh": " Wh",
    "EV_Rate_kW": " kW",
    "EV_Energy_kWh": " kWh",
    "EV_Need_kWh": " kWh",
    "Charge_Limit_kW": " kW",
    "EV_Laxity_s": " s",
}
"""The standard telemetry keys SEF's agents publish, in display order, with their units
(the table of ``docs/interfaces.md``); other keys are shown after them without a unit."""

_SKIPPED = frozenset({"TimeStamp"})


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _plain(value: Any) -> Any:
    """A variant ``[signature, value]`` unwrapped; anything else as it is."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        return value[1]
    return value


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def asset_name(record: AgentRecord) -> str:
    """The agent's ``AssetName`` property (of whichever interface has one), or ``""``."""
    for key, entry in sorted(record.properties.items()):
        if key.rpartition(".")[2] == "AssetName" and isinstance(entry.value, str):
            return entry.value
    return ""


def telemetry_text(record: AgentRecord, limit: int | None = None) -> str:
    """Every telemetry value of an agent, standard keys first, e.g.
    ``Event charge · Sys_SOC 45.2 % · Vendor_Key 3``; at most ``limit`` per property.

    Properties holding ``a{sv}`` show each key but ``TimeStamp``; other properties (but
    ``AssetName``, shown on its own) show as ``Name value``.
    """
    parts: list[str] = []
    fault = False
    for key, entry in sorted(record.properties.items()):
        name = key.rpartition(".")[2]
        value = entry.value
        if not isinstance(value, dict):
            if name != "AssetName":
                parts.append(f"{escape(name)} {_shown(_plain(value))}")
            continue
        plain = {k: _plain(v) for k, v in value.items() if k not in _SKIPPED}
        ordered = [k for k in STANDARD_TELEMETRY_UNITS if k in plain]
        ordered += sorted(k for k in plain if k not in STANDARD_TELEMETRY_UNITS)
        for item in ordered[:limit]:
            unit = STANDARD_TELEMETRY_UNITS.get(item, "").replace(" ", "\u00a0")  # unbroken
            parts.append(f"{escape(item)} {_shown(plain[item])}{unit}")
        fault = fault or plain.get("Comm_Fault") is True or plain.get("Link") == "down"
    if fault:
        parts.append("[red]FAULT[/]")
    return " · ".join(parts)


def agents_table(
    records: list[AgentRecord],
    title: str = "SEF agents",
    homes: Mapping[str, str] | None = None,
) -> Table:
    """A rich table of agents: status, asset name, interfaces, groups, last seen, and
    every telemetry value; with ``homes`` (agent id -> home id) also each agent's home
    (gateway; ``-`` when it is behind none)."""
    table = Table(title=title, expand=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("status", no_wrap=True)
    if homes is not None:
        table.add_column("home", no_wrap=True)
    table.add_column("asset")
    table.add_column("interfaces")
    table.add_column("groups")
    table.add_column("seen (UTC)", no_wrap=True)
    table.add_column("telemetry", ratio=1)
    for r in records:
        status = {True: "[green]online[/]", False: "[red]offline[/]", None: "unknown"}[r.online]
        style = "dim" if r.online is False else None
        seen = r.offline_since if r.online is False else (r.last_seen or r.online_since)
        home = [] if homes is None else [escape(homes.get(r.agent_id) or "-")]
        table.add_row(
            escape(r.agent_id),
            status,
            *home,
            escape(asset_name(r)),
            escape(", ".join(sorted(r.interfaces))),
            escape(", ".join(r.groups)),
            _when(seen)[11:],
            telemetry_text(r),
            style=style,
        )
    return table
