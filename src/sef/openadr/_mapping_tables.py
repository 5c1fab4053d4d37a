"""The mapping table (``mapping.toml``): its model, loading and validation.

The packaged table (``sef/openadr/mapping.toml``) is SEF's default; an operator may load an
edited copy. :func:`load_mapping` checks every key and raises :class:`ValueError` naming the
key path of the first problem (``rule[3].bands[1].battery.cmd: unknown command 'boost'``), so
a bad table is refused at start-up, never half-applied to an event.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sef.interface import Command

__all__ = ["METHODS", "Band", "BandAction", "MappingTable", "Rule", "load_mapping"]

METHODS = frozenset(
    {
        "bands",
        "power_setpoint",
        "power_delta",
        "power_multiplier",
        "soc_setpoint",
        "soc_delta",
        "soc_multiplier",
        "import_limit",
        "demand_charge",
        "unsupported",
    }
)
"""The ways a rule turns a signal into commands (``docs/openadr.md``, "Mapping")."""

_MAX_LEAD_S = 10 * 366 * 86400.0
"""The largest ``[limits] max_lead_s`` a table may set (10 years), s."""
_MAX_RANDOMIZE_S = 31 * 86400.0
"""The largest ``[limits] max_randomize_s`` a table may set (31 days), s."""


@dataclass(frozen=True, slots=True)
class BandAction:
    """What one device kind does inside a band.

    Attributes:
        cmd: the ``EnergyMethod`` command.
        base: rate as a share of the device's rating at value 0 (0…1 after clipping).
        per_value: added share per unit of the signal's value.
    """

    cmd: Command
    base: float = 0.0
    per_value: float = 0.0

    def share(self, value: float) -> float:
        """The share of the rating (0…1) this action asks for at ``value``."""
        return min(1.0, max(0.0, self.base + self.per_value * value))


@dataclass(frozen=True, slots=True)
class Band:
    """One value band of a ``bands`` rule: from ``lower`` (``-inf``: from nowhere) upward.

    Attributes:
        lower: where the band starts, in the signal's unit.
        inclusive: whether ``lower`` itself belongs to the band (``at_least``) or not
            (``above``).
        battery: what a battery does.
        water_heater: what a water heater does.
    """

    lower: float
    inclusive: bool
    battery: BandAction
    water_heater: BandAction

    def contains_start(self, value: float) -> bool:
        """Whether ``value`` is at or past this band's start."""
        return value >= self.lower if self.inclusive else value > self.lower


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: a set of signal names × types and how they map.

    Attributes:
        signals: signal names (upper case).
        types: signal types.
        units: units accepted (``None``: a value without unit).
        method: one of :data:`METHODS`.
        min_value: smallest value accepted, in the unit.
        max_value: largest value accepted.
        integral: only whole numbers accepted (levels).
        bands: for ``bands``, in rising order.
        reason: for ``unsupported``, the words of the opt-out.
    """

    signals: tuple[str, ...]
    types: tuple[str, ...]
    units: tuple[str | None, ...]
    method: str
    min_value: float = -math.inf
    max_value: float = math.inf
    integral: bool = False
    bands: tuple[Band, ...] = ()
    reason: str = ""

    def band_for(self, value: float) -> Band | None:
        """The band ``value`` falls in (``None`` if below the first band)."""
        found: Band | None = None
        for band in self.bands:
            if band.contains_start(value):
                found = band
        return found


@dataclass(frozen=True, slots=True)
class MappingTable:
    """The whole table.

    Attributes:
        rules: in file order; the first rule matching a signal's name and type wins.
        max_event_s: longest event accepted, s.
        efficiency_pct: one-way battery efficiency used to time CHARGE_STATE, %.
        contracted_kw: the site's contracted demand for DEMAND_CHARGE, kW (``None``: none).
        max_lead_s: the furthest ahead an event may start (its start minus now), s.
        max_randomize_s: the widest random-start window accepted, s.
    """

    rules: tuple[Rule, ...]
    max_event_s: float = 31 * 86400.0
    efficiency_pct: float = 97.5
    contracted_kw: float | None = None
    max_lead_s: float = 400 * 86400.0
    max_randomize_s: float = 86400.0

    def rule_for(self, name: str, signal_type: str) -> Rule | None:
        """The rule for a signal (``None``: the table has none)."""
        for rule in self.rules:
            if name in rule.signals and signal_type in rule.types:
                return rule
        return None


def load_mapping(path: Path | None = None) -> MappingTable:
    """Load and validate a mapping table.

    Args:
        path: an operator's TOML file; ``None``: the table packaged with SEF.

    Raises:
        ValueError: the file is not TOML or breaks the table's rules; the message names the
            key path (``rule[2].units``).
        OSError: the file cannot be read.
    """
    if path is None:
        text = resources.files("sef.openadr").joinpath("mapping.toml").read_text("utf-8")
        where = "packaged mapping.toml"
    else:
        text = path.read_text("utf-8")
        where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"mapping table {where}: not valid TOML: {exc}") from None
    try:
        return _table(data)
    except _BadKey as exc:
        raise ValueError(f"mapping table {where}: {exc.path}: {exc.problem}") from None


class _BadKey(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _table(data: Mapping[str, Any]) -> MappingTable:
    _only(data, "", {"limits", "charge_state", "demand_charge", "rule"})
    limits = _section(data, "limits")
    _only(limits, "limits", {"max_event_s", "max_lead_s", "max_randomize_s"})
    charge_state = _section(data, "charge_state")
    _only(charge_state, "charge_state", {"efficiency_pct"})
    demand = _section(data, "demand_charge")
    _only(demand, "demand_charge", {"contracted_kw"})
    max_event_s = _number(limits, "max_event_s", "limits", 31 * 86400.0, lo=1.0)
    max_lead_s = _number(limits, "max_lead_s", "limits", 400 * 86400.0, lo=0.0, hi=_MAX_LEAD_S)
    max_randomize_s = _number(
        limits, "max_randomize_s", "limits", 86400.0, lo=0.0, hi=_MAX_RANDOMIZE_S
    )
    efficiency = _number(charge_state, "efficiency_pct", "charge_state", 97.5, lo=1.0, hi=100.0)
    contracted = (
        _number(demand, "contracted_kw", "demand_charge", 0.0, lo=0.0)
        if "contracted_kw" in demand
        else None
    )
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise _BadKey("rule", "expected a non-empty array of [[rule]] tables")
    rules = tuple(_rule(raw, f"rule[{i}]") for i, raw in enumerate(raw_rules))
    return MappingTable(rules, max_event_s, efficiency, contracted, max_lead_s, max_randomize_s)


def _rule(raw: Any, path: str) -> Rule:
    if not isinstance(raw, dict):
        raise _BadKey(path, "expected a table")
    _only(
        raw,
        path,
        {"signals", "types", "units", "method", "min", "max", "integral", "bands", "reason"},
    )
    signals = _strings(raw, "signals", path)
    types = _strings(raw, "types", path)
    method = raw.get("method")
    if method not in METHODS:
        raise _BadKey(
            f"{path}.method", f"unknown method {method!r} (one of {', '.join(sorted(METHODS))})"
        )
    if method == "unsupported":
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise _BadKey(f"{path}.reason", "an unsupported rule needs a reason")
        return Rule(signals, types, (), method, reason=reason)
    units = tuple(u or None for u in _strings(raw, "units", path, allow_empty_text=True))
    lo = _number(raw, "min", path, -math.inf)
    hi = _number(raw, "max", path, math.inf)
    if lo > hi:
        raise _BadKey(f"{path}.max", f"{hi} is below min {lo}")
    integral = raw.get("integral", False)
    if not isinstance(integral, bool):
        raise _BadKey(f"{path}.integral", "expected true or false")
    bands: tuple[Band, ...] = ()
    if method == "bands":
        raw_bands = raw.get("bands")
        if not isinstance(raw_bands, list) or not raw_bands:
            raise _BadKey(f"{path}.bands", "a bands rule needs a non-empty array of bands")
        bands = tuple(_band(b, f"{path}.bands[{i}]", i) for i, b in enumerate(raw_bands))
        for i in range(1, len(bands)):
            prev, cur = bands[i - 1], bands[i]
            if cur.lower < prev.lower or (
                cur.lower == prev.lower and not (prev.inclusive and not cur.inclusive)
            ):
                raise _BadKey(f"{path}.bands[{i}]", "bands must start in rising order")
        if not bands[0].contains_start(lo):
            raise _BadKey(f"{path}.bands[0]", f"the first band must cover min ({lo})")
    elif "bands" in raw:
        raise _BadKey(f"{path}.bands", f"only a bands rule has bands, not {method}")
    return Rule(signals, types, units, method, lo, hi, integral, bands)


def _band(raw: Any, path: str, index: int) -> Band:
    if not isinstance(raw, dict):
        raise _BadKey(path, "expected a table")
    _only(raw, path, {"at_least", "above", "battery", "water_heater"})
    if "at_least" in raw and "above" in raw:
        raise _BadKey(path, "give at_least or above, not both")
    if "at_least" in raw:
        lower, inclusive = _number(raw, "at_least", path, 0.0), True
    elif "above" in raw:
        lower, inclusive = _number(raw, "above", path, 0.0), False
    elif index == 0:
        lower, inclusive = -math.inf, True
    else:
        raise _BadKey(path, "only the first band may leave out at_least / above")
    return Band(
        lower,
        inclusive,
        _action(raw.get("battery"), f"{path}.battery"),
        _action(raw.get("water_heater"), f"{path}.water_heater"),
    )


def _action(raw: Any, path: str) -> BandAction:
    if not isinstance(raw, dict):
        raise _BadKey(path, 'expected a table such as { cmd = "shed", base = 0.5 }')
    _only(raw, path, {"cmd", "base", "per_value"})
    try:
        cmd = Command(str(raw.get("cmd")))
    except ValueError:
        known = ", ".join(c.value for c in Command)
        raise _BadKey(
            f"{path}.cmd", f"unknown command {raw.get('cmd')!r} (one of {known})"
        ) from None
    return BandAction(cmd, _number(raw, "base", path, 0.0), _number(raw, "per_value", path, 0.0))


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _BadKey(key, "expected a table")
    return value


def _only(data: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise _BadKey(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _strings(
    data: Mapping[str, Any], key: str, path: str, *, allow_empty_text: bool = False
) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _BadKey(f"{path}.{key}", "expected a non-empty array of strings")
    if not allow_empty_text and not all(v.strip() for v in value):
        raise _BadKey(f"{path}.{key}", "empty string")
    return tuple(value)


def _number(
    data: Mapping[str, Any],
    key: str,
    path: str,
    default: float,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _BadKey(f"{path}.{key}", f"expected a number, got {value!r}")
    if not lo <= value <= hi:
        raise _BadKey(f"{path}.{key}", f"{value} is outside {lo}…{hi}")
    return float(value)
