"""What the EMS knows about one agent: its :class:`AgentRecord` and the last known
:class:`PropertyValue` of each property, kept by the registry (:mod:`sef.ems._registry`).

Compact for a fleet of a million agents (issue 16): a record is a slotted object of about
1.5 KB with its About and telemetry, not 7.5 KB of decoded dicts.

* ``about`` is kept as one tuple ``(keys, value, ...)``: the key tuple is shared by every
  agent that announces the same fields, string values go through a shared intern table,
  other values (lists, objects) are kept as their JSON text (interned too); reading
  ``record.about`` builds a new dict each time (nothing is cached per agent).
* ``interfaces`` (name -> SHA-256) and ``groups`` are read-only mappings and tuples shared
  by all agents announcing the same set (:func:`intern_interfaces`, :func:`intern_groups`).
* a property value (:mod:`sef.ems._values`): a variant mapping (``a{sv}``, as
  ``Telemetry``) packed as a tuple with a shared key/signature tuple, another object or
  array as the payload bytes it came in, decoded on read; a scalar kept decoded.
* no empty dict per agent: ``properties`` and ``rejected_interfaces`` read as empty
  mappings until something is put in them.

The intern tables (:mod:`sef.ems._interning`) are process-wide and bounded
(:data:`INTERN_LIMIT` entries each): past the bound new values are simply not shared (more
memory per agent, no slowdown).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from sef.ems._interning import (
    EMPTY,
    INTERN_LIMIT,
    STRINGS,
    Json,
    _json_values,
    _key_tuples,
    _string_lists,
    intern_groups,
    intern_interfaces,
    intern_key,
    intern_stats,
    intern_tuple,
)
from sef.ems._values import PropertyValue

__all__ = [
    "INTERN_LIMIT",
    "AgentRecord",
    "PropertyValue",
    "intern_groups",
    "intern_interfaces",
    "intern_key",
    "intern_stats",
]

log = logging.getLogger("sef.ems.registry")

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _pack_about(fields: Mapping[str, Any], agent_id: str) -> tuple[Any, ...] | None:
    """About fields as ``(keys, value, ...)``: shared keys, interned strings, JSON text for
    lists and objects. ``None`` for no fields."""
    if not fields:
        return None
    values: list[Any] = [intern_tuple(_key_tuples, tuple(fields))]
    strings = STRINGS.get
    for value in fields.values():
        if type(value) is str:
            value = agent_id if value == agent_id else (strings(value) or intern_key(value))
        elif isinstance(value, (list, dict)):
            listed = (
                tuple(value) if type(value) is list and all(type(v) is str for v in value) else None
            )
            shared = None if listed is None else _string_lists.get(listed)
            if shared is None:  # (a list of strings is found without encoding it)
                text = _ENCODER.encode(value)
                shared = _json_values.get(text)
                if shared is None:
                    shared = Json(text)
                    if len(_json_values) < INTERN_LIMIT:
                        _json_values[text] = shared
                if listed is not None and len(_string_lists) < INTERN_LIMIT:
                    _string_lists[listed] = shared
            value = shared
        values.append(value)
    return tuple(values)


def _unpack_about(packed: tuple[Any, ...] | None, agent_id: str) -> dict[str, Any]:
    """The About fields of :func:`_pack_about` as a new dict."""
    if packed is None:
        return {}
    out: dict[str, Any] = {}
    for key, value in zip(packed[0], packed[1:], strict=True):
        if isinstance(value, Json):
            try:
                value = json.loads(value)
            except ValueError as exc:  # never from _pack_about: a clear reason, no crash
                log.warning("agent %s: About field %s not decodable: %s", agent_id, key, exc)
                value = None
        out[key] = value
    return out


class _LazyDict(MutableMapping[str, Any]):
    """A record's dict slot read as an empty mapping until something is put in it (then the
    dict is made and stored in the slot): no empty dict per agent."""

    __slots__ = ("_record", "_slot")

    def __init__(self, record: AgentRecord, slot: str) -> None:
        self._record = record
        self._slot = slot

    def _dict(self, create: bool) -> dict[str, Any] | None:
        found: dict[str, Any] | None = getattr(self._record, self._slot)
        if found is None and create:
            found = {}
            setattr(self._record, self._slot, found)
        return found

    def __getitem__(self, key: str) -> Any:
        found = self._dict(False)
        if found is None:
            raise KeyError(key)
        return found[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._dict(True)[key] = value  # type: ignore[index]

    def __delitem__(self, key: str) -> None:
        found = self._dict(False)
        if found is None:
            raise KeyError(key)
        del found[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict(False) or ())

    def __len__(self) -> int:
        return len(self._dict(False) or ())

    def __repr__(self) -> str:
        return repr(self._dict(False) or {})


_STATUS = {None: "unknown", True: "online", False: "offline"}


class AgentRecord:
    """Everything the EMS knows about one agent; kept after the agent goes offline.

    ``about``, ``interfaces``, ``groups``, ``properties`` and ``rejected_interfaces`` are
    stored compactly (module docstring) and read as mappings and sequences; assigning them
    packs the new value."""

    __slots__ = (
        "_about",
        "_groups",
        "_interfaces",
        "_properties",
        "_rejected",
        "agent_id",
        "backfilled",
        "bdseq",
        "birth_ts",
        "duplicates",
        "expected_seq",
        "first_seen",
        "gaps",
        "keepalive_s",
        "last_seen",
        "last_seq",
        "messages",
        "offline_reason",
        "offline_since",
        "online",
        "online_since",
    )

    def __init__(
        self,
        agent_id: str,
        online: bool | None = None,
        bdseq: int | None = None,
        about: Mapping[str, Any] | None = None,
        interfaces: Mapping[str, str] | None = None,
        groups: Iterable[str] = (),
        properties: Mapping[str, PropertyValue] | None = None,
        first_seen: float = 0.0,
        last_seen: float = 0.0,
        online_since: float | None = None,
        offline_since: float | None = None,
        offline_reason: str | None = None,
        keepalive_s: int | None = None,
        expected_seq: int | None = None,
        last_seq: int | None = None,
        birth_ts: float | None = None,
        gaps: int = 0,
        duplicates: int = 0,
        backfilled: int = 0,
        messages: int = 0,
        rejected_interfaces: Mapping[str, str] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.online = online
        self.bdseq = bdseq
        self._about = _pack_about(about, agent_id) if about else None
        self._interfaces = intern_interfaces(interfaces) if interfaces else EMPTY
        self._groups = intern_groups(groups)
        self._properties: dict[str, PropertyValue] | None = (
            {intern_key(k): v for k, v in properties.items()} if properties else None
        )
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.online_since = online_since
        self.offline_since = offline_since
        self.offline_reason = offline_reason
        self.keepalive_s = keepalive_s
        self.expected_seq = expected_seq
        """Next seq due from the agent (``None``: unknown, set by the next live message)."""
        self.last_seq = last_seq
        """Last seq accepted in the agent's current session; a live message behind or
        equal to it is a duplicate (``docs/protocol.md`` §4.6). ``None``: none yet."""
        self.birth_ts = birth_ts
        """``ts`` of the birth (online status, seq 0) accepted for the current session,
        Unix s: a live birth of the same session with the same ``ts`` is a replayed copy."""
        self.gaps = gaps
        self.duplicates = duplicates
        """Live messages dropped as duplicates (replays, redeliveries) since the EMS
        started."""
        self.backfilled = backfilled
        """Backfilled property updates (``"backfill": true``) taken as history since the
        EMS started."""
        self.messages = messages
        self._rejected: dict[str, str] | None = (
            dict(rejected_interfaces) if rejected_interfaces else None
        )

    # -- compact fields, read as mappings --------------------------------------------
    @property
    def about(self) -> dict[str, Any]:
        """The AllJoyn About fields (a new dict at each read)."""
        return _unpack_about(self._about, self.agent_id)

    @about.setter
    def about(self, fields: Mapping[str, Any]) -> None:
        self._about = _pack_about(fields, self.agent_id)

    def about_field(self, key: str) -> Any:
        """One About field (``None`` if absent) without building the dict."""
        packed = self._about
        if packed is None:
            return None
        try:
            value = packed[packed[0].index(key) + 1]
        except ValueError:
            return None
        return json.loads(value) if isinstance(value, Json) else value

    @property
    def interfaces(self) -> Mapping[str, str]:
        """Interfaces announced in About: name -> SHA-256 of the XML (read-only, shared)."""
        return self._interfaces

    @interfaces.setter
    def interfaces(self, refs: Mapping[str, str]) -> None:
        self._interfaces = intern_interfaces(refs)

    @property
    def groups(self) -> tuple[str, ...]:
        """Groups announced in About (a tuple shared by agents with the same groups)."""
        return self._groups

    @groups.setter
    def groups(self, groups: Iterable[str]) -> None:
        self._groups = intern_groups(groups)

    @property
    def properties(self) -> MutableMapping[str, PropertyValue]:
        """Last known values: ``"interface.Property"`` -> :class:`PropertyValue`."""
        found = self._properties
        return found if found is not None else _LazyDict(self, "_properties")

    @properties.setter
    def properties(self, values: Mapping[str, PropertyValue]) -> None:
        self._properties = {intern_key(k): v for k, v in values.items()} or None

    def set_property(self, key: str, value: PropertyValue) -> None:
        """Put the last known value of ``key`` (``"interface.Property"``)."""
        found = self._properties
        if found is None:
            found = self._properties = {}
        found[intern_key(key)] = value

    @property
    def rejected_interfaces(self) -> MutableMapping[str, str]:
        """Interfaces whose XML the EMS refused from this agent: name -> why."""
        found = self._rejected
        return found if found is not None else _LazyDict(self, "_rejected")

    @rejected_interfaces.setter
    def rejected_interfaces(self, values: Mapping[str, str]) -> None:
        self._rejected = dict(values) or None

    # -- reads ---------------------------------------------------------------------
    def prop(self, interface: str, name: str) -> Any:
        """Last known value of ``interface.name`` (JSON mapping), or ``None``."""
        found = self._properties
        entry = None if found is None else found.get(f"{interface}.{name}")
        return None if entry is None else entry.value

    def summary(self) -> dict[str, Any]:
        """A JSON-able view for ``sef agents --json`` and the API."""
        about = self.about
        return {
            "id": self.agent_id,
            "status": _STATUS[self.online],
            "bdseq": self.bdseq,
            "device_name": about.get("DeviceName"),
            "manufacturer": about.get("Manufacturer"),
            "model": about.get("ModelNumber"),
            "software_version": about.get("SoftwareVersion"),
            "interfaces": sorted(self._interfaces),
            "groups": list(self._groups),
            "last_seen": self.last_seen,
            "online_since": self.online_since,
            "offline_since": self.offline_since,
            "offline_reason": self.offline_reason,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "backfilled": self.backfilled,
            "properties": {
                k: {"value": v.value, "ts": v.ts} for k, v in (self._properties or {}).items()
            },
            "rejected_interfaces": dict(self._rejected or {}),
        }

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.agent_id,
            self.online,
            self.bdseq,
            self.about,
            dict(self._interfaces),
            self._groups,
            dict(self._properties or {}),
            self.first_seen,
            self.last_seen,
            self.online_since,
            self.offline_since,
            self.offline_reason,
            self.keepalive_s,
            self.expected_seq,
            self.last_seq,
            self.birth_ts,
            self.gaps,
            self.duplicates,
            self.backfilled,
            self.messages,
            dict(self._rejected or {}),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentRecord):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"AgentRecord({self.agent_id!r}, online={self.online!r}, bdseq={self.bdseq!r}, "
            f"groups={list(self._groups)!r}, interfaces={sorted(self._interfaces)!r}, "
            f"properties={sorted(self._properties or ())!r})"
        )
