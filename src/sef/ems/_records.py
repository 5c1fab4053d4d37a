"""What the EMS knows about one agent: its :class:`AgentRecord` and the last known
:class:`PropertyValue` of each property, kept by the registry (:mod:`sef.ems._registry`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AgentRecord", "PropertyValue"]


@dataclass(slots=True)
class PropertyValue:
    """Last known value of a property (JSON mapping), its sender time and receipt time
    (Unix s), and the per-session sequence number it came with (``None`` if absent)."""

    value: Any
    ts: float | None
    received: float
    seq: int | None = None


@dataclass
class AgentRecord:
    """Everything the EMS knows about one agent; kept after the agent goes offline."""

    agent_id: str
    online: bool | None = None
    bdseq: int | None = None
    about: dict[str, Any] = field(default_factory=dict)
    interfaces: dict[str, str] = field(default_factory=dict)  # name -> sha256 announced
    groups: list[str] = field(default_factory=list)
    properties: dict[str, PropertyValue] = field(default_factory=dict)  # "iface.prop" -> value
    first_seen: float = 0.0
    last_seen: float = 0.0
    online_since: float | None = None
    offline_since: float | None = None
    offline_reason: str | None = None
    keepalive_s: int | None = None
    expected_seq: int | None = None
    """Next seq due from the agent (``None``: unknown, set by the next live message)."""
    last_seq: int | None = None
    """Last seq accepted in the agent's current session; a live message behind or equal to
    it is a duplicate (``docs/protocol.md`` §4.6). ``None``: none yet."""
    birth_ts: float | None = None
    """``ts`` of the birth (online status, seq 0) accepted for the current session, Unix s:
    a live birth of the same session with the same ``ts`` is a replayed copy."""
    gaps: int = 0
    duplicates: int = 0
    """Live messages dropped as duplicates (replays, redeliveries) since the EMS started."""
    backfilled: int = 0
    """Backfilled property updates (``"backfill": true``) taken as history since the EMS
    started."""
    messages: int = 0
    rejected_interfaces: dict[str, str] = field(default_factory=dict)  # name -> why

    def prop(self, interface: str, name: str) -> Any:
        """Last known value of ``interface.name`` (JSON mapping), or ``None``."""
        entry = self.properties.get(f"{interface}.{name}")
        return None if entry is None else entry.value

    def summary(self) -> dict[str, Any]:
        """A JSON-able view for ``sef agents --json`` and the API."""
        return {
            "id": self.agent_id,
            "status": {None: "unknown", True: "online", False: "offline"}[self.online],
            "bdseq": self.bdseq,
            "device_name": self.about.get("DeviceName"),
            "manufacturer": self.about.get("Manufacturer"),
            "model": self.about.get("ModelNumber"),
            "software_version": self.about.get("SoftwareVersion"),
            "interfaces": sorted(self.interfaces),
            "groups": list(self.groups),
            "last_seen": self.last_seen,
            "online_since": self.online_since,
            "offline_since": self.offline_since,
            "offline_reason": self.offline_reason,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "backfilled": self.backfilled,
            "properties": {k: {"value": v.value, "ts": v.ts} for k, v in self.properties.items()},
            "rejected_interfaces": dict(self.rejected_interfaces),
        }
