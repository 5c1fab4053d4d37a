"""OpenADR 3 event JSON → :class:`~sef.openadr.DrEvent`, and usage samples → report JSON,
both checked with the ``openadr3`` models.

Used by :mod:`sef.openadr._oadr3`. An event is first validated with ``openadr3``'s
``RawEvent`` (the JSON's types), then coerced into its ``Event`` model, whose
``resolved_intervals()`` applies the 3.1 ``intervalPeriod`` inheritance (an interval without
its own start begins where the previous one ended). What the library does not check is
checked here: every interval resolves to a start and a positive duration, every payload
value is one finite number. A failure raises :class:`EventRejected` with the reason.

Mapping (docs/openadr.md, "OpenADR 3"):

- each payload type becomes one :class:`DrSignal` named after it; its ``type`` is
  ``level`` (SIMPLE), ``price`` (PRICE, EXPORT_PRICE), ``setpoint`` (capacity limits and
  ``*_SETPOINT``), ``delta`` (``*_RELATIVE``), otherwise ``other``;
- units come from the event's ``payloadDescriptors`` (or, failing those, the program's):
  ``KW``/``W``/``MW`` → ``kW``, ``KWH``/``WH``/``MWH`` → ``kWh`` (values scaled), a price
  with ``currency`` ``USD`` per ``KWH`` → ``USD/kWh``; anything else → ``"?<raw>"`` so the
  mapping opts out; a payload type that needs a unit but has no descriptor → ``"?"``;
- the event-level ``intervalPeriod.randomizeStart`` (which ``resolved_intervals()`` drops)
  is read here; without it the first interval's own ``randomizeStart`` counts;
- ``targets`` (3.1: a list of strings) name SEF groups;
- the status is derived from the clock (OpenADR 3 events have none): far before the first
  interval, active during, completed after.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from openadr3.entities.models import Event
from openadr3.entities.raw import RawEvent, RawEventPayloadDescriptor, RawReport
from pydantic import ValidationError

from sef.openadr._model import (
    DrEvent,
    DrInterval,
    DrSignal,
    EventStatus,
    Targets,
    TelemetrySample,
)

__all__ = [
    "MAX_RAW_BYTES",
    "SOURCE",
    "EventRejected",
    "iso_time",
    "payload_unit",
    "signal_type",
    "to_dr_event",
    "usage_report",
    "wants_usage",
]

SOURCE = "oadr3"

MAX_RAW_BYTES = 64 * 1024
"""The largest event JSON kept as ``DrEvent.raw`` (and so in the history), bytes; a larger
one is kept as a stub naming its size (the history holds up to 10 000 versions)."""

_RAW_KEPT_KEYS = ("id", "programID", "eventName", "createdDateTime", "modificationDateTime")

_SIGNAL_TYPES = {
    "SIMPLE": "level",
    "PRICE": "price",
    "EXPORT_PRICE": "price",
    "IMPORT_CAPACITY_LIMIT": "setpoint",
    "EXPORT_CAPACITY_LIMIT": "setpoint",
    "IMPORT_CAPACITY_SUBSCRIPTION": "setpoint",
    "EXPORT_CAPACITY_SUBSCRIPTION": "setpoint",
}
_PRICES = frozenset({"PRICE", "EXPORT_PRICE"})
_UNITLESS = frozenset({"SIMPLE"})
_POWER_ENERGY = {  # OpenADR 3 units text → (SEF unit, factor to it)
    "KW": ("kW", 1.0),
    "W": ("kW", 0.001),
    "MW": ("kW", 1000.0),
    "KWH": ("kWh", 1.0),
    "WH": ("kWh", 0.001),
    "MWH": ("kWh", 1000.0),
}
_PER_ENERGY = {"KWH": 1.0, "WH": 1000.0, "MWH": 0.001}  # price per unit → per kWh
_CURRENCIES = frozenset({"USD", "EUR", "GBP", "CAD", "AUD", "CHF"})


class EventRejected(ValueError):
    """An event the adapter cannot hand over; ``str()`` is the reason an operator reads."""


def signal_type(payload_type: str) -> str:
    """The :attr:`DrSignal.type` an OpenADR 3 payload type implies."""
    if payload_type in _SIGNAL_TYPES:
        return _SIGNAL_TYPES[payload_type]
    if payload_type.endswith("_RELATIVE"):
        return "delta"
    if payload_type.endswith("_SETPOINT"):
        return "setpoint"
    return "other"


def payload_unit(
    payload_type: str, units: str | None, currency: str | None
) -> tuple[str | None, float]:
    """``(unit, factor)``: the normalised unit of a payload type's values and the factor
    that scales a value to it (``"?<raw>"`` and 1 when it cannot be normalised)."""
    if payload_type in _PRICES:
        if currency in _CURRENCIES and units is not None and units.upper() in _PER_ENERGY:
            return f"{currency}/kWh", _PER_ENERGY[units.upper()]
        return f"?{currency or ''}/{units or ''}", 1.0
    if units is None:
        return (None, 1.0) if payload_type in _UNITLESS else ("?", 1.0)
    known = _POWER_ENERGY.get(units.upper())
    if known is None:
        return f"?{units}", 1.0
    return known


def wants_usage(raw: Mapping[str, Any]) -> bool:
    """Whether the event asks for USAGE reports (a ``reportDescriptors`` entry)."""
    descriptors = raw.get("reportDescriptors")
    if not isinstance(descriptors, list):
        return False
    return any(isinstance(d, dict) and d.get("payloadType") == "USAGE" for d in descriptors)


def _descriptors(
    event: RawEvent, program_descriptors: Sequence[Mapping[str, Any]]
) -> dict[str, RawEventPayloadDescriptor]:
    found: dict[str, RawEventPayloadDescriptor] = {}
    for item in program_descriptors:  # the program's are defaults
        try:
            descriptor = RawEventPayloadDescriptor.model_validate(item)
        except ValidationError:
            continue
        if descriptor.object_type == "EVENT_PAYLOAD_DESCRIPTOR":
            found[descriptor.payload_type] = descriptor
    for descriptor in event.payload_descriptors or ():
        found[descriptor.payload_type] = descriptor
    return found


def _check_values(event: RawEvent) -> None:
    for interval in event.intervals or ():
        for payload in interval.payloads:
            values = payload.values
            if len(values) != 1:
                raise EventRejected(
                    f"interval {interval.id}: {payload.type} has {len(values)} values, want 1"
                )
            value = values[0]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise EventRejected(
                    f"interval {interval.id}: {payload.type} value {value!r} is not a number"
                )
            if not math.isfinite(value):
                raise EventRejected(f"interval {interval.id}: {payload.type} value {value!r}")


def _check_starts(event: RawEvent) -> None:
    """Every ``start`` is a date-time: ``openadr3`` (pendulum, not strict) would read a bare
    ``"17:00"`` as today at 17:00."""
    periods = [event.interval_period] + [i.interval_period for i in event.intervals or ()]
    for period in periods:
        if period is None or period.start is None:
            continue
        try:
            datetime.fromisoformat(period.start)
        except ValueError as exc:
            raise EventRejected(f"start {period.start!r} is not an RFC 3339 date-time") from exc


def _status(start_s: float, end_s: float, now_s: float) -> EventStatus:
    if now_s < start_s:
        return EventStatus.FAR
    return EventStatus.ACTIVE if now_s < end_s else EventStatus.COMPLETED


def to_dr_event(
    raw: Mapping[str, Any],
    *,
    program_name: str,
    modification: int,
    now_s: float,
    program_descriptors: Sequence[Mapping[str, Any]] = (),
) -> DrEvent:
    """Convert one event as the VTN sent it.

    Args:
        raw: the event JSON (camelCase).
        program_name: its program's ``programName``.
        modification: the adapter's modification counter for this version.
        now_s: EMS clock now, Unix s (for the status).
        program_descriptors: the program's ``payloadDescriptors`` (unit defaults).

    Raises:
        EventRejected: not a usable OpenADR 3 event (the reason in words).
    """
    data = dict(raw)
    try:
        checked = RawEvent.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise EventRejected(f"not an OpenADR 3 event: {where}: {first['msg']}") from exc
    if not checked.id:
        raise EventRejected("event has no id")
    if not checked.intervals:
        raise EventRejected("event has no intervals")
    _check_values(checked)
    _check_starts(checked)
    try:
        event = Event.from_raw(data)
        resolved = event.resolved_intervals()
    except Exception as exc:  # pendulum's parse errors, pydantic, decimal: all "malformed"
        raise EventRejected(f"bad time or duration: {exc}") from exc
    descriptors = _descriptors(checked, program_descriptors)
    series: dict[str, list[DrInterval]] = {}
    starts: list[float] = []
    ends: list[float] = []

    def unit_of(payload_type: str) -> tuple[str | None, float]:
        found = descriptors.get(payload_type)
        return payload_unit(
            payload_type, found.units if found else None, found.currency if found else None
        )

    for interval in resolved:
        period = interval.interval_period.period if interval.interval_period else None
        if period is None:
            raise EventRejected(f"interval {interval.id} has no start or no duration")
        start_s, end_s = period[0].timestamp(), period[1].timestamp()
        if not end_s > start_s:
            raise EventRejected(f"interval {interval.id} has a duration <= 0")
        starts.append(start_s)
        ends.append(end_s)
        for payload in interval.payloads:
            _, factor = unit_of(payload.type)
            value = float(payload.values[0]) * factor
            if not math.isfinite(value):
                raise EventRejected(f"interval {interval.id}: {payload.type} value out of range")
            series.setdefault(payload.type, []).append(DrInterval(start_s, end_s - start_s, value))
    signals = []
    for name, intervals in series.items():
        found = descriptors.get(name)
        unit, _ = payload_unit(
            name, found.units if found else None, found.currency if found else None
        )
        ordered = tuple(sorted(intervals, key=lambda item: item.start_s))
        signals.append(DrSignal(name=name, type=signal_type(name), unit=unit, intervals=ordered))
    event_period = event.interval_period
    randomize = event_period.randomize_start if event_period is not None else None
    if randomize is None and resolved[0].interval_period is not None:
        randomize = resolved[0].interval_period.randomize_start
    start_s, end_s = min(starts), max(ends)
    return DrEvent(
        source=SOURCE,
        event_id=checked.id,
        modification=modification,
        program=program_name,
        status=_status(start_s, end_s, now_s),
        start_s=start_s,
        duration_s=end_s - start_s,
        signals=tuple(signals),
        targets=Targets(groups=tuple(checked.targets or ())),
        randomize_s=randomize.total_seconds() if randomize is not None else 0.0,
        priority=checked.priority or 0,
        test=False,
        response_required=False,
        raw=bounded_raw(data),
    )


def bounded_raw(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` itself when its JSON is at most :data:`MAX_RAW_BYTES`; else a stub: its
    short identifying fields (each cut to 200 chars) and ``"rawOmittedBytes"``."""
    size = len(json.dumps(data, default=str).encode())
    if size <= MAX_RAW_BYTES:
        return dict(data)
    stub: dict[str, Any] = {
        key: value[:200] if isinstance(value, str) else value
        for key in _RAW_KEPT_KEYS
        if isinstance(value := data.get(key), str | int | float | bool | None) and key in data
    }
    stub["rawOmittedBytes"] = size
    return stub


def iso_time(time_s: float) -> str:
    """Unix s → RFC 3339 UTC (``2026-12-07T17:00:00Z``)."""
    return datetime.fromtimestamp(time_s, UTC).isoformat().replace("+00:00", "Z")


def usage_report(
    program_id: str, event_id: str, ven_name: str, samples: Sequence[TelemetrySample]
) -> dict[str, Any]:
    """A USAGE report body: one resource per group sample, one interval stamped at the
    sample time with the group's power, kW (``DIRECT_READ``, units ``KW``).

    Checked with ``openadr3``'s ``RawReport`` before it leaves (``programID``, a spec field
    the library's model lacks, is left out of that check).
    """
    resources = [
        {
            "resourceName": sample.group,
            "intervalPeriod": {"start": iso_time(sample.time_s)},
            "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [sample.power_kw]}]}],
        }
        for sample in samples
    ]
    body: dict[str, Any] = {
        "objectType": "REPORT",
        "programID": program_id,
        "eventID": event_id,
        "clientName": ven_name,
        "reportName": f"{ven_name} usage",
        "payloadDescriptors": [
            {
                "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                "payloadType": "USAGE",
                "readingType": "DIRECT_READ",
                "units": "KW",
            }
        ],
        "resources": resources,
    }
    RawReport.model_validate({k: v for k, v in body.items() if k != "programID"})
    return body
