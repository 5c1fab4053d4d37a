"""Console views of the EMS registry (rich): the agents table of ``sef agents``,
``sef ems`` and ``sef demo``.

It lives in the EMS layer so that both the CLI and the demo (which sits below the CLI)
can use it without importing upwards.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich.table import Table

from sef.ems._records import AgentRecord

__all__ = ["TELEMETRY_HIGHLIGHTS", "agents_table", "telemetry_text"]

TELEMETRY_HIGHLIGHTS = (
    ("Event", ""),
    ("Sys_SOC", " %"),
    ("Sys_Power_kW", " kW"),
    ("Sys_Energy_kWh", " kWh"),
    ("Op_State", ""),
    ("Power_W", " W"),
    ("Energy_Stored_Wh", " Wh"),
    ("Link", ""),
)
"""Telemetry keys an operator wants first, with their display units."""


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def telemetry_text(record: AgentRecord, limit: int = 5) -> str:
    """The most telling telemetry values of an agent, e.g. ``charge · SOC 45.2 %``."""
    parts: list[str] = []
    for _key, entry in sorted(record.properties.items()):
        value = entry.value
        if not isinstance(value, dict):  # plain properties such as AssetName
            continue
        plain = {
            name: item[1] if isinstance(item, list) and len(item) == 2 else item
            for name, item in value.items()
        }
        keys = [(k, unit) for k, unit in TELEMETRY_HIGHLIGHTS if k in plain] or [
            (k, "") for k in plain if k != "TimeStamp"
        ]
        for name, unit in keys[:limit]:
            shown = plain[name]
            if isinstance(shown, float):
                shown = f"{shown:.1f}"
            parts.append(f"{name.removeprefix('Sys_').split('_')[0]} {shown}{unit}")
        if plain.get("Comm_Fault") is True or plain.get("Link") == "down":
            parts.append("[red]FAULT[/]")
    return " · ".join(parts)


def agents_table(records: list[AgentRecord], title: str = "SEF agents") -> Table:
    """A rich table of agents: status, groups, last seen, last telemetry."""
    table = Table(title=title, expand=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("groups")
    table.add_column("seen (UTC)", no_wrap=True)
    table.add_column("last telemetry", ratio=1)
    for r in records:
        status = {True: "[green]online[/]", False: "[red]offline[/]", None: "unknown"}[r.online]
        style = "dim" if r.online is False else None
        seen = r.offline_since if r.online is False else (r.last_seen or r.online_since)
        table.add_row(
            r.agent_id,
            status,
            ", ".join(r.groups),
            _when(seen)[11:],
            telemetry_text(r),
            style=style,
        )
    return table
