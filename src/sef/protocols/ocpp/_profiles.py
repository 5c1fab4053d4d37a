"""OCPP charging profiles: building them (central system) and obeying them (charge point).

Payloads are snake_case dicts, the form the ``ocpp`` package hands to ``@on`` handlers and
turns into camelCase when it sends (``ocpp.charge_point.snake_to_camel_case``).

Differences between the versions handled here (OCPP 1.6 §5.16 / §7.8, OCPP 2.0.1 K01):

=====================  ==============================  ==================================
                       1.6J                            2.0.1
=====================  ==============================  ==================================
request field          ``cs_charging_profiles``        ``charging_profile``
profile id             ``charging_profile_id``         ``id``
schedule               one object                      a list of 1-3 (``id`` required)
transaction id         integer                         string
=====================  ==============================  ==================================

A limit in amperes becomes kW as ``A * volts * phases / 1000`` (:func:`amps_to_kw`,
default 230 V, ``numberPhases`` or 3 phases as OCPP says when absent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "ChargingLimit",
    "ProfileStore",
    "amps_to_kw",
    "clear_request",
    "iso",
    "kw_to_amps",
    "parse_iso",
    "parse_profile",
    "profile_payload",
]

DEFAULT_VOLTS = 230.0
"""Phase voltage used to turn amperes into kW when the charger declares none (V)."""
PURPOSES = ("ChargePointMaxProfile", "ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile")


def iso(unix_s: float) -> str:
    """An OCPP date-time (UTC, ``Z``, milliseconds) for Unix seconds."""
    text = datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_iso(text: object) -> float:
    """Unix seconds of an OCPP date-time; ``ValueError`` when it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"not a date-time: {text!r}")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def amps_to_kw(amps: float, phases: int = 3, volts: float = DEFAULT_VOLTS) -> float:
    """Power (kW) of ``amps`` per phase on ``phases`` phases at ``volts`` (V) each."""
    return amps * volts * phases / 1000.0


def kw_to_amps(kw: float, phases: int = 3, volts: float = DEFAULT_VOLTS) -> float:
    """Current per phase (A) that carries ``kw`` on ``phases`` phases at ``volts`` (V)."""
    return kw * 1000.0 / (volts * phases)


@dataclass(frozen=True)
class ChargingLimit:
    """One charging profile as a charge point obeys it.

    Attributes:
        profile_id: the profile's id.
        purpose: ``TxProfile``, ``TxDefaultProfile``, ``ChargePointMaxProfile`` (1.6) or
            ``ChargingStationMaxProfile`` (2.0.1).
        stack_level: higher wins among profiles of one purpose.
        unit: ``W`` or ``A``.
        periods: ``(start offset s, limit in unit, phases or None)``, increasing offsets.
        start_s: when the schedule starts (Unix s, clock time).
        duration_s: how long it lasts (s), None = until cleared.
        transaction_id: the transaction a TxProfile is for (as text), None otherwise.
    """

    profile_id: int
    purpose: str
    stack_level: int
    unit: str
    periods: tuple[tuple[float, float, int | None], ...]
    start_s: float
    duration_s: float | None = None
    transaction_id: str | None = None

    def limit_kw(self, t_s: float, volts: float = DEFAULT_VOLTS) -> float | None:
        """The limit at clock time ``t_s`` (kW), or None when the profile is not active
        (before its start or after its duration)."""
        offset = t_s - self.start_s
        if offset < 0 or (self.duration_s is not None and offset >= self.duration_s):
            return None
        current = None
        for start, limit, phases in self.periods:
            if start <= offset:
                current = (limit, phases)
        if current is None:
            return None
        limit, phases = current
        if self.unit == "A":
            return amps_to_kw(limit, phases or 3, volts)
        return limit / 1000.0


def profile_payload(
    version: str,
    *,
    profile_id: int,
    purpose: str,
    limit_kw: float,
    unit: str = "W",
    start_s: float,
    duration_s: float | None = None,
    transaction_id: str | None = None,
    stack_level: int = 0,
    phases: int = 3,
    volts: float = DEFAULT_VOLTS,
) -> dict[str, Any]:
    """The profile of a constant limit ``limit_kw`` (kW) from ``start_s`` (Unix s) for
    ``duration_s`` (s, None = open), in ``unit`` (W, or A per phase on ``phases``).

    ``version`` ``ocpp1.6`` gives the value of ``cs_charging_profiles``, ``ocpp2.0.1`` the
    value of ``charging_profile``."""
    if unit not in ("W", "A"):
        raise ValueError(f"charging rate unit must be W or A, got {unit!r}")
    value = limit_kw * 1000.0 if unit == "W" else kw_to_amps(limit_kw, phases, volts)
    period: dict[str, Any] = {"start_period": 0, "limit": round(max(value, 0.0), 1)}
    if unit == "A":
        period["number_phases"] = phases
    schedule: dict[str, Any] = {
        "charging_rate_unit": unit,
        "charging_schedule_period": [period],
        "start_schedule": iso(start_s),
    }
    if duration_s is not None:
        schedule["duration"] = max(1, math.ceil(duration_s))
    profile: dict[str, Any] = {
        "stack_level": stack_level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Absolute",
    }
    if version == "ocpp1.6":
        profile["charging_profile_id"] = profile_id
        profile["charging_schedule"] = schedule
        if transaction_id is not None:
            profile["transaction_id"] = int(transaction_id)
    else:
        profile["id"] = profile_id
        profile["charging_schedule"] = [{"id": profile_id, **schedule}]
        if transaction_id is not None:
            profile["transaction_id"] = str(transaction_id)
    return profile


def clear_request(version: str, *, profile_id: int | None, purpose: str | None) -> dict[str, Any]:
    """Keyword arguments of ``call.ClearChargingProfile`` for ``version``."""
    if version == "ocpp1.6":
        out: dict[str, Any] = {}
        if profile_id is not None:
            out["id"] = profile_id
        if purpose is not None:
            out["charging_profile_purpose"] = purpose
        return out
    if profile_id is not None:
        return {"charging_profile_id": profile_id}
    criteria = {"charging_profile_purpose": purpose} if purpose is not None else {}
    return {"charging_profile_criteria": criteria}


def _num(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{name} is not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} is not finite: {value!r}")
    return number


def parse_profile(version: str, profile: object, now_s: float) -> ChargingLimit:
    """A received profile (snake_case dict) as a :class:`ChargingLimit`.

    A ``Relative`` profile (or one without ``start_schedule``) starts at ``now_s``.

    Raises:
        ValueError: the profile is not usable (names what is wrong).
    """
    if not isinstance(profile, dict):
        raise ValueError("charging profile is not an object")
    key = "charging_profile_id" if version == "ocpp1.6" else "id"
    schedule = profile.get("charging_schedule")
    if isinstance(schedule, list):
        if not schedule:
            raise ValueError("charging profile has no schedule")
        schedule = schedule[0]
    if not isinstance(schedule, dict):
        raise ValueError("charging schedule is not an object")
    purpose = profile.get("charging_profile_purpose")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown charging profile purpose {purpose!r}")
    unit = schedule.get("charging_rate_unit")
    if unit not in ("W", "A"):
        raise ValueError(f"charging rate unit must be W or A, got {unit!r}")
    raw_periods = schedule.get("charging_schedule_period")
    if not isinstance(raw_periods, list) or not raw_periods:
        raise ValueError("charging schedule has no periods")
    periods = []
    for item in raw_periods:
        if not isinstance(item, dict):
            raise ValueError("charging schedule period is not an object")
        phases = item.get("number_phases")
        periods.append(
            (
                _num(item.get("start_period"), "start_period"),
                max(_num(item.get("limit"), "limit"), 0.0),
                int(phases) if isinstance(phases, int) and phases in (1, 2, 3) else None,
            )
        )
    periods.sort(key=lambda p: p[0])
    start = now_s
    if profile.get("charging_profile_kind") != "Relative" and "start_schedule" in schedule:
        start = parse_iso(schedule["start_schedule"])
    duration = schedule.get("duration")
    tx = profile.get("transaction_id")
    return ChargingLimit(
        profile_id=int(_num(profile.get(key), key)),
        purpose=str(purpose),
        stack_level=int(_num(profile.get("stack_level", 0), "stack_level")),
        unit=str(unit),
        periods=tuple(periods),
        start_s=start,
        duration_s=None if duration is None else _num(duration, "duration"),
        transaction_id=None if tx is None else str(tx),
    )


@dataclass
class ProfileStore:
    """The profiles a charge point holds, and the limit they give (OCPP's composite
    schedule reduced to its present value).

    Rules: a new profile replaces one with the same id, or the same purpose and stack
    level; the highest stack level active now wins within a purpose; a ``TxProfile`` of the
    running transaction overrides the ``TxDefaultProfile``; a max profile caps both.
    """

    profiles: dict[int, ChargingLimit] = field(default_factory=dict)

    def install(self, limit: ChargingLimit) -> None:
        """Add ``limit`` (replacing a profile of the same id or purpose and stack level)."""
        for pid, old in list(self.profiles.items()):
            if pid == limit.profile_id or (
                old.purpose == limit.purpose and old.stack_level == limit.stack_level
            ):
                del self.profiles[pid]
        self.profiles[limit.profile_id] = limit

    def clear(
        self,
        profile_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> int:
        """Remove the profiles matching every criterion given; returns how many."""
        gone = [
            pid
            for pid, p in self.profiles.items()
            if (profile_id is None or pid == profile_id)
            and (purpose is None or p.purpose == purpose)
            and (stack_level is None or p.stack_level == stack_level)
        ]
        for pid in gone:
            del self.profiles[pid]
        return len(gone)

    def end_transaction(self) -> None:
        """A transaction ended: its TxProfiles go (OCPP: they last one transaction)."""
        self.clear(purpose="TxProfile")

    def _best(
        self, purposes: tuple[str, ...], t_s: float, tx: str | None, volts: float
    ) -> float | None:
        best: tuple[int, float] | None = None
        for p in self.profiles.values():
            if p.purpose not in purposes:
                continue
            if p.purpose == "TxProfile" and p.transaction_id not in (None, tx):
                continue
            kw = p.limit_kw(t_s, volts)
            if kw is not None and (best is None or p.stack_level > best[0]):
                best = (p.stack_level, kw)
        return None if best is None else best[1]

    def limit_kw(
        self, t_s: float, transaction_id: str | None, volts: float = DEFAULT_VOLTS
    ) -> float | None:
        """The limit in force at ``t_s`` (kW), or None when no profile limits charging."""
        tx = self._best(("TxProfile",), t_s, transaction_id, volts) if transaction_id else None
        limit = tx if tx is not None else self._best(("TxDefaultProfile",), t_s, None, volts)
        cap = self._best(("ChargePointMaxProfile", "ChargingStationMaxProfile"), t_s, None, volts)
        if cap is not None:
            limit = cap if limit is None else min(limit, cap)
        return limit
