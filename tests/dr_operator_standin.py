"""A stand-in for the demand-response bridge as operators see it (a
:class:`sef.openadr._operator.DrOperator`): a real :class:`DrHistory`, one adapter's status,
a small opt-out policy that validates its input, and opt overrides that change the record
as the bridge does (the API, the store, the dashboard and the CLI are under test, not the
bridge)."""

from __future__ import annotations

import math
from typing import Any

from sef.openadr import AdapterStatus, DrHistory, EventRecord, Opt

POLICY_KEYS = {"opt_out_programs", "opt_out_signals", "max_shortfall_kw"}


class StandInOperator:
    """Implements ``DrOperator``; ``overrides`` lists each ``set_opt`` call."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s
        self.history = DrHistory()
        self.policy: dict[str, Any] = {
            "opt_out_programs": [],
            "opt_out_signals": [],
            "max_shortfall_kw": 0.0,
        }
        self.adapters = [
            AdapterStatus(
                "oadr2b",
                "https://vtn.example/OpenADR2/Simple/2.0b",
                registered=True,
                ven_id="ven-7",
                last_ok_s=now_s,
                programs=["peak", "eco"],
            )
        ]
        self.overrides: list[tuple[str, str, Opt, str]] = []

    def statuses(self) -> list[AdapterStatus]:
        return list(self.adapters)

    def policy_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, list) else v for k, v in self.policy.items()}

    def set_policy_json(self, data: dict[str, Any]) -> None:
        unknown = sorted(set(data) - POLICY_KEYS)
        if unknown:
            raise ValueError(f"unknown key {unknown[0][:40]!r}; known: {sorted(POLICY_KEYS)}")
        new = self.policy_json()
        for key in ("opt_out_programs", "opt_out_signals"):
            if key in data:
                value = data[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{key} must be a list of names")
                if len(value) > 100:
                    raise ValueError(f"{key}: at most 100 names, got {len(value)}")
                new[key] = list(value)
        if "max_shortfall_kw" in data:
            kw = data["max_shortfall_kw"]
            if isinstance(kw, bool) or not isinstance(kw, int | float):
                raise ValueError("max_shortfall_kw must be a number (kW)")
            if not math.isfinite(kw) or not 0 <= kw <= 1e6:
                raise ValueError(f"max_shortfall_kw must be 0..1e6 kW, got {kw!r}"[:80])
            new["max_shortfall_kw"] = float(kw)
        self.policy = new

    async def set_opt(self, source: str, event_id: str, opt: Opt, reason: str) -> EventRecord:
        record = self.history.latest(source, event_id)
        if record is None:
            raise KeyError((source, event_id))
        if record.status in ("completed", "cancelled", "failed"):
            raise ValueError(f"the event is {record.status}")
        reason = f"operator: {reason}" if reason else "operator"  # as DrBridge words it
        self.overrides.append((source, event_id, opt, reason))
        status = (
            "opted_out"
            if opt is Opt.OUT
            else ("active" if record.start_s <= self.now_s else "scheduled")
        )
        updated = self.history.update(record.key, opt=opt.value, status=status, reason=reason)
        assert updated is not None
        return updated


def event(
    event_id: str, now_s: float, *, start_in_s: float, length_s: float = 3600.0, **changes: Any
) -> EventRecord:
    """A history record of an event starting ``start_in_s`` after ``now_s``."""
    start = now_s + start_in_s
    fields: dict[str, Any] = {
        "source": "oadr2b",
        "event_id": event_id,
        "modification": 0,
        "program": "peak",
        "signal": "SIMPLE",
        "status": "active" if start_in_s <= 0 else "scheduled",
        "opt": "optIn",
        "reason": "mapped",
        "received_s": now_s + min(start_in_s, 0) - 60,
        "start_s": start,
        "end_s": start + length_s,
        "requested_kw": -10.0,
        "raw": {"eventID": event_id},
    }
    fields.update(changes)
    return EventRecord(**fields)
