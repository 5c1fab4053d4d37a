"""OpenADR 2.0b event, as openleadr parses it, → library-neutral :class:`DrEvent`.

openleadr hands a VEN's ``on_event`` / ``on_update_event`` handler a plain dict (its
``normalize_dict`` of the ``oadrEvent``): datetimes are aware UTC ``datetime`` objects,
durations ``timedelta``, payloads floats. This module turns one such dict into a
:class:`DrEvent`; it imports nothing from openleadr, so it is tested with hand-built dicts.

Anything it cannot read raises :class:`EventFormatError` with a reason an operator
understands; the adapter answers that event with ``optOut`` (``docs/openadr.md``).

Units (decision 2 of issue 15): values are scaled to the unit in :attr:`DrSignal.unit`:
``powerReal`` W with SI scale ``k`` → ``"kW"``, ``energyReal`` Wh → ``"kWh"``, currency
items → ``"USD"``, ``"USD/kWh"``, ``"USD/kW"``, ``"USD/thm"``; a percent custom unit or an
``x-loadControlPercentOffset`` → ``"%"``; dimensionless signal types (``level``,
``multiplier``, ``priceMultiplier``, ``x-loadControlCapacity``,
``x-loadControlLevelOffset``) → ``None``. A unit it cannot normalise is passed as
``"?<name>:<unit>"`` (the mapping opts out); a signal that needs a unit but has no
``itemBase`` gets ``None`` (the mapping decides).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sef.openadr._model import DrEvent, DrInterval, DrSignal, EventStatus, Targets

__all__ = ["EventFormatError", "event_from_oadr2b", "jsonable"]

SOURCE = "oadr2b"

_SI_EXPONENT = {
    "p": -12,
    "n": -9,
    "micro": -6,
    "m": -3,
    "c": -2,
    "d": -1,
    "none": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
}
"""OpenADR ``siScaleCode`` → power of ten."""

_DIMENSIONLESS_TYPES = frozenset(
    {
        "level",
        "multiplier",
        "priceMultiplier",
        "x-loadControlCapacity",
        "x-loadControlLevelOffset",
    }
)
"""Signal types whose payload has no unit, whatever ``itemBase`` says."""

_BASE_UNITS = {
    # itemBase name: (unit it must carry, SI exponent of the SEF unit, SEF unit)
    "powerReal": ("W", 3, "kW"),
    "energyReal": ("Wh", 3, "kWh"),
}

_CURRENCY_SUFFIX = {
    "currency": "",
    "currencyPerKWh": "/kWh",
    "currencyPerKW": "/kW",
    "currencyPerThm": "/thm",
}


class EventFormatError(ValueError):
    """The event dict cannot be turned into a :class:`DrEvent`; the message is the reason."""


def _seconds(value: Any, what: str) -> float:
    """A ``timedelta`` (or a number of seconds) → seconds, s."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise EventFormatError(f"{what} is not a duration: {value!r}")
    if not math.isfinite(seconds):
        raise EventFormatError(f"{what} is not finite: {value!r}")
    return seconds


def _unix(value: Any, what: str) -> float:
    """An aware ``datetime`` (or an ISO-8601 text) → Unix s. A naive one is taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EventFormatError(f"{what} is not a date-time: {value!r}") from None
    if not isinstance(value, datetime):
        raise EventFormatError(f"{what} is not a date-time: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EventFormatError(f"{what} missing or not a record: {value!r}")
    return value


def _list(value: Any) -> list[Any]:
    """Openleadr gives one element as itself and several as a list."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _measurement(signal: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The signal's ``itemBase``. openleadr stores it under ``measurement``, except for item
    names missing from its own table (``currencyPerKW`` is misspelt there): those stay under
    their snake-case element name, recognisable by an ``item_units`` member."""
    found = signal.get("measurement")
    if isinstance(found, Mapping):
        return found
    for key, value in signal.items():
        if isinstance(value, Mapping) and "item_units" in value:
            name = "currencyPerKW" if key == "currency_per_kw" else key
            return {
                "name": name,
                "unit": value.get("item_units"),
                "scale": value.get("si_scale_code", "none"),
                "description": value.get("item_description"),
            }
    return None


def _unit_and_factor(signal_type: str, item: Mapping[str, Any] | None) -> tuple[str | None, float]:
    """The SEF unit of a signal's payloads and the factor that converts them to it."""
    if signal_type in _DIMENSIONLESS_TYPES:
        return None, 1.0
    if signal_type == "x-loadControlPercentOffset":
        return "%", 1.0
    if item is None:
        return None, 1.0
    name = str(item.get("name"))
    unit = str(item.get("unit"))
    scale = str(item.get("scale") or "none")
    if scale not in _SI_EXPONENT:
        return f"?{name}:{unit}:{scale}", 1.0
    exponent = _SI_EXPONENT[scale]
    if name in _BASE_UNITS:
        base_unit, sef_exponent, sef_unit = _BASE_UNITS[name]
        if unit != base_unit:
            return f"?{name}:{unit}", 1.0
        return sef_unit, 10.0 ** (exponent - sef_exponent)
    if name in _CURRENCY_SUFFIX and len(unit) == 3 and unit.isalpha():
        return f"{unit.upper()}{_CURRENCY_SUFFIX[name]}", 10.0**exponent
    if name == "customUnit" and unit.lower() in ("%", "percent"):
        return "%", 10.0**exponent
    return f"?{name}:{unit}", 1.0


def _intervals(
    raw_intervals: Sequence[Any], start_s: float, event_duration_s: float, factor: float
) -> tuple[DrInterval, ...]:
    """Intervals in time order; a start not given follows the previous interval's end."""
    if not raw_intervals:
        raise EventFormatError("signal has no intervals")
    intervals: list[DrInterval] = []
    cursor = start_s
    for index, raw in enumerate(raw_intervals):
        interval = _mapping(raw, f"interval {index}")
        begin = (
            _unix(interval["dtstart"], f"interval {index} dtstart")
            if interval.get("dtstart") is not None
            else cursor
        )
        if interval.get("duration") is not None:
            duration = _seconds(interval["duration"], f"interval {index} duration")
        elif index == len(raw_intervals) - 1 and math.isfinite(event_duration_s):
            duration = start_s + event_duration_s - begin
        else:
            raise EventFormatError(f"interval {index} has no duration")
        if duration < 0:
            raise EventFormatError(f"interval {index} has a negative duration ({duration} s)")
        payload = interval.get("signal_payload")
        if isinstance(payload, bool) or not isinstance(payload, int | float):
            raise EventFormatError(f"interval {index} payload is not a number: {payload!r}")
        value = float(payload) * factor
        if not math.isfinite(value):
            raise EventFormatError(f"interval {index} payload is not finite: {payload!r}")
        intervals.append(DrInterval(start_s=begin, duration_s=duration, value=value))
        cursor = begin + duration
    return tuple(sorted(intervals, key=lambda i: i.start_s))


def _signal(raw: Any, index: int, start_s: float, duration_s: float) -> DrSignal:
    signal = _mapping(raw, f"signal {index}")
    name = signal.get("signal_name")
    signal_type = signal.get("signal_type")
    if not isinstance(name, str) or not name:
        raise EventFormatError(f"signal {index} has no name")
    if not isinstance(signal_type, str) or not signal_type:
        raise EventFormatError(f"signal {index} ({name}) has no type")
    if not name.lower().startswith("x-"):
        name = name.upper()
    unit, factor = _unit_and_factor(signal_type, _measurement(signal))
    intervals = _intervals(_list(signal.get("intervals")), start_s, duration_s, factor)
    return DrSignal(name=name, type=signal_type, unit=unit, intervals=intervals)


def _signals(event: Mapping[str, Any]) -> list[Any]:
    raw = event.get("event_signals")
    if isinstance(raw, Mapping):  # openleadr sometimes keeps the wrapper element
        raw = raw.get("event_signals")
    signals = _list(raw)
    if not signals:
        raise EventFormatError("event has no signals")
    return signals


def _targets(event: Mapping[str, Any]) -> Targets:
    by_type = event.get("targets_by_type")
    if not isinstance(by_type, Mapping):
        by_type = {}
        for target in _list(event.get("targets")):
            if isinstance(target, Mapping):
                for key, value in target.items():
                    by_type.setdefault(key, []).extend(_list(value))

    def names(key: str) -> tuple[str, ...]:
        return tuple(str(v) for v in _list(by_type.get(key)) if v is not None)

    return Targets(groups=names("group_id"), resources=names("resource_id"), vens=names("ven_id"))


def _status(value: Any) -> EventStatus:
    try:
        return EventStatus(str(value))
    except ValueError:
        raise EventFormatError(f"unknown event status {value!r}") from None


def _optional_seconds(period: Mapping[str, Any], key: str) -> float:
    value = period.get(key)
    if value is None:
        return 0.0
    seconds = _seconds(value, key)
    if seconds < 0:
        raise EventFormatError(f"{key} is negative ({seconds} s)")
    return seconds


def _randomize_s(period: Mapping[str, Any]) -> float:
    """``tolerance/tolerate/startafter`` as the VEN parses it (quirk 6b); the VTN-side shape
    ``tolerance/startafter`` is read too."""
    tolerance = period.get("tolerance")
    if not isinstance(tolerance, Mapping):
        return 0.0
    tolerate = tolerance.get("tolerate", tolerance)
    if not isinstance(tolerate, Mapping):
        return 0.0
    return _optional_seconds(tolerate, "startafter")


def event_from_oadr2b(event: Mapping[str, Any], *, source: str = SOURCE) -> DrEvent:
    """Convert one openleadr event dict to a :class:`DrEvent`.

    Times become Unix s (the VTN's UTC is the EMS clock in a deployment); an active period
    of duration 0 (OpenADR: open-ended) becomes ``duration_s = inf``.

    Raises:
        EventFormatError: a field is missing or not valid; the message says which.
    """
    event = _mapping(event, "event")
    descriptor = _mapping(event.get("event_descriptor"), "event_descriptor")
    event_id = descriptor.get("event_id")
    if event_id is None or str(event_id) == "":
        raise EventFormatError("event has no event_id")
    modification = descriptor.get("modification_number", 0)
    if isinstance(modification, bool) or not isinstance(modification, int) or modification < 0:
        raise EventFormatError(f"modification_number is not a count: {modification!r}")
    period = _mapping(event.get("active_period"), "active_period")
    if period.get("dtstart") is None:
        raise EventFormatError("active_period has no dtstart")
    start_s = _unix(period["dtstart"], "active_period dtstart")
    if period.get("duration") is None:
        raise EventFormatError("active_period has no duration")
    duration_s = _seconds(period["duration"], "active_period duration")
    if duration_s < 0:
        raise EventFormatError(f"active_period duration is negative ({duration_s} s)")
    if duration_s == 0:
        duration_s = math.inf
    priority = descriptor.get("priority") or 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise EventFormatError(f"priority is not an integer: {priority!r}")
    test_flag = descriptor.get("test_event", False)
    response_required = event.get("response_required", "always")
    if response_required not in ("always", "never"):
        raise EventFormatError(f"response_required is {response_required!r}")
    signals = tuple(
        _signal(raw, index, start_s, duration_s) for index, raw in enumerate(_signals(event))
    )
    return DrEvent(
        source=source,
        event_id=str(event_id),
        modification=modification,
        program=str(descriptor.get("market_context") or ""),
        status=_status(descriptor.get("event_status")),
        start_s=start_s,
        duration_s=duration_s,
        signals=signals,
        targets=_targets(event),
        randomize_s=_randomize_s(period),
        ramp_up_s=_optional_seconds(period, "ramp_up"),
        recovery_s=_optional_seconds(period, "recovery"),
        priority=priority,
        test=test_flag is not False and test_flag is not None,
        response_required=response_required == "always",
        raw=jsonable(event),
    )


def jsonable(value: Any) -> Any:
    """The event dict as JSON-able data: datetimes → ISO text, durations → seconds (s)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
