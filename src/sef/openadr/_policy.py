"""The operator's opt-out policy: which events the VEN answers optOut automatically.

:meth:`OptPolicy.decide` takes an event, what the mapping made of it and the fleet, and
returns the :class:`~sef.openadr.OptDecision` with the reason an operator reads in the
history. Pure logic; the API stores and edits the policy as JSON (:meth:`OptPolicy.as_json`,
:meth:`OptPolicy.from_json`). The rules are listed in ``docs/openadr.md``, "Opt-out policy".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sef.openadr._mapping import targeted_members
from sef.openadr._model import DrEvent, OptDecision
from sef.openadr._plan import FleetMember, MemberKind, Plan, Unsupported

__all__ = ["OptPolicy", "available_reduction_kw"]

_KEYS = (
    "blocked_programs",
    "blocked_signals",
    "opt_out_test_events",
    "must_deliver",
    "max_duration_s",
)


def available_reduction_kw(members: Sequence[FleetMember]) -> float:
    """How far the online members can lower their load, kW: every battery's discharge rating
    plus what it charges now, plus every water heater's present power (a shed heater draws
    none). Meters and offline members count nothing."""
    total = 0.0
    for m in members:
        if not m.online:
            continue
        power = m.power_kw if m.power_kw is not None and math.isfinite(m.power_kw) else 0.0
        if m.kind is MemberKind.BATTERY:
            total += max(0.0, m.discharge_rate_kw) + max(0.0, power)
        elif m.kind is MemberKind.WATER_HEATER:
            total += max(0.0, power)
    return total


@dataclass(frozen=True, slots=True)
class OptPolicy:
    """The automatic opt-out rules.

    Attributes:
        blocked_programs: programs (market contexts) always opted out of.
        blocked_signals: signal names (``SIMPLE``, ``LOAD_DISPATCH``…) always opted out
            of, when the plan was made from one of them.
        opt_out_test_events: answer test events optOut (default: optIn; nothing is sent
            for a test event either way).
        must_deliver: opt out when the event asks for a larger reduction than the targeted
            online fleet can give (:func:`available_reduction_kw`).
        max_duration_s: opt out of events longer than this, s (``None``: no limit).
    """

    blocked_programs: frozenset[str] = frozenset()
    blocked_signals: frozenset[str] = frozenset()
    opt_out_test_events: bool = False
    must_deliver: bool = False
    max_duration_s: float | None = None

    def decide(
        self, event: DrEvent, plan: Plan | Unsupported, fleet: Sequence[FleetMember]
    ) -> OptDecision:
        """The answer (optIn or optOut) for one event version, with the reason.

        Order: unsupported by the mapping → blocked program → blocked signal → test event →
        too long → cannot deliver → optIn.
        """
        if isinstance(plan, Unsupported):
            return OptDecision.opt_out(plan.reason)
        if event.program in self.blocked_programs:
            return OptDecision.opt_out(f"operator blocks program {event.program}")
        signal = plan.signal
        if signal in self.blocked_signals:
            return OptDecision.opt_out(f"operator blocks signal {signal}")
        if event.test:
            if self.opt_out_test_events:
                return OptDecision.opt_out("test event: operator opts out of test events")
            return OptDecision.opt_in("test event: answered, nothing sent")
        if self.max_duration_s is not None and event.duration_s > self.max_duration_s:
            return OptDecision.opt_out(
                f"event lasts {event.duration_s:g} s, operator allows at most "
                f"{self.max_duration_s:g} s"
            )
        if self.must_deliver and plan.requested_kw is not None and plan.requested_kw < 0:
            members, _ = targeted_members(event.targets, fleet)
            if not plan.dispatches:  # a window for the live controller: the whole fleet
                members = tuple(fleet)
            available = available_reduction_kw(members)
            wanted = -plan.requested_kw
            if wanted > available + 1e-6:
                return OptDecision.opt_out(
                    f"fleet cannot deliver {wanted:.0f} kW: at most {available:.0f} kW available"
                )
        return OptDecision.opt_in(f"mapped {plan.signal}".rstrip())

    def as_json(self) -> dict[str, Any]:
        """The policy as JSON-able data (sorted lists), what ``from_json`` reads back."""
        return {
            "blocked_programs": sorted(self.blocked_programs),
            "blocked_signals": sorted(self.blocked_signals),
            "opt_out_test_events": self.opt_out_test_events,
            "must_deliver": self.must_deliver,
            "max_duration_s": self.max_duration_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OptPolicy:
        """A policy from JSON data; missing keys take their defaults.

        Raises:
            ValueError: an unknown key or a value of the wrong type, naming the key.
        """
        if not isinstance(data, Mapping):
            raise ValueError("policy: expected a JSON object")
        for key in data:
            if key not in _KEYS:
                raise ValueError(f"policy: unknown key {key!r} (allowed: {', '.join(_KEYS)})")
        return cls(
            blocked_programs=_names(data, "blocked_programs"),
            blocked_signals=_names(data, "blocked_signals"),
            opt_out_test_events=_flag(data, "opt_out_test_events"),
            must_deliver=_flag(data, "must_deliver"),
            max_duration_s=_duration(data, "max_duration_s"),
        )


def _names(data: Mapping[str, Any], key: str) -> frozenset[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"policy: {key} must be a list of non-empty strings")
    return frozenset(value)


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"policy: {key} must be true or false")
    return value


def _duration(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"policy: {key} must be a number of seconds or null")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"policy: {key} must be a positive finite number of seconds")
    return float(value)
