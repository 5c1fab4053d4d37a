"""Event shapes for the OpenADR 2.0b acceptance tests: what the packaged mapping makes of
them (read from ``mapping.toml`` as data), raw events for the openleadr VTN, the malformed
or unsupported ones the EMS must refuse (and the reasons it must log), and shapes no
schema-valid 2.0b message can carry.

Imported by bare name (tests/openadr is on sys.path while its tests run, and on mypy's path).
"""

from __future__ import annotations

import contextlib
import math
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openleadr.preflight
from e2e_support import Ven, on_clock
from oadr2b_vtn import MARKET_CONTEXT, _ignore_opt
from openleadr import objects

import sef.openadr
from sef.models.waterheater_dr import DRMode

# ---------------------------------------------------------------------- expectations

RATINGS_KW = {"bat-1": 8.0, "bat-2": 4.0}
"""The batteries' charge and discharge ratings, kW (``e2e_stack``'s default)."""

HEATER_MODE = {
    "shed": DRMode.SHED,
    "discharge": DRMode.CRITICAL_PEAK,
    "charge": DRMode.LOAD_UP,
    "endshed": DRMode.NORMAL,
    "idle": DRMode.NORMAL,
}
"""What each EnergyMethod command puts a CTA-2045 heater in (docs/openadr.md, ucm.md)."""


def simple_band(level: int) -> dict[str, Any]:
    """The packaged table's SIMPLE band for ``level``, read from mapping.toml as data."""
    table = tomllib.loads(
        (Path(sef.openadr.__file__).parent / "mapping.toml").read_text(encoding="utf-8")
    )
    [rule] = [r for r in table["rule"] if r["signals"] == ["SIMPLE"]]
    bands = [b for b in rule["bands"] if b.get("at_least", -math.inf) <= level]
    return dict(bands[-1])


def simple_battery_kw(level: int, rating_kw: float) -> float:
    """The battery power SIMPLE ``level`` maps to, kW (+ charge): shed ⌈rating × base⌉."""
    battery = simple_band(level)["battery"]
    assert battery["cmd"] == "shed", battery
    return -float(math.ceil(round(rating_kw * battery.get("base", 0.0), 9)))


def pro_rata_kw(setpoint_kw: float) -> dict[str, float]:
    """A LOAD_DISPATCH setpoint P on the battery group (docs/openadr.md): the batteries'
    total goes to P, split pro-rata to their ratings, each share rounded up to whole kW."""
    total = sum(RATINGS_KW.values())
    sign = -1.0 if setpoint_kw < 0 else 1.0
    return {
        b: sign * math.ceil(round(abs(setpoint_kw) * r / total, 9)) for b, r in RATINGS_KW.items()
    }


# ---------------------------------------------------------------------- VTN shapes


def raw_event(
    event_id: str,
    start: datetime,
    signal_name: str,
    signal_type: str,
    payloads: list[float],
    interval_s: float,
    *,
    measurement: objects.Measurement | None = None,
    target: objects.Target,
) -> objects.Event:
    """A one-signal event as the openleadr VTN keeps it (for ``server.add_raw_event``):
    one interval of ``interval_s`` s per payload from ``start``; ``measurement`` is the
    signal's ``itemBase`` (``None``: none)."""
    step = timedelta(seconds=interval_s)
    return objects.Event(
        event_descriptor=objects.EventDescriptor(
            event_id=event_id,
            modification_number=0,
            market_context=MARKET_CONTEXT,
            event_status="far",
            created_date_time=datetime.now(UTC),
        ),
        active_period=objects.ActivePeriod(dtstart=start, duration=step * len(payloads)),
        event_signals=[
            objects.EventSignal(
                intervals=[
                    objects.Interval(
                        dtstart=start + i * step, duration=step, signal_payload=v, uid=i
                    )
                    for i, v in enumerate(payloads)
                ],
                signal_name=signal_name,
                signal_type=signal_type,
                signal_id=f"{event_id}-sig",
                measurement=measurement,
            )
        ],
        targets=[target],
        response_required="always",
    )


KWH = objects.Measurement(name="energyReal", description="RealEnergy", unit="Wh", scale="k")
"""An ``itemBase`` of kWh (``energyReal``, Wh, scale k)."""

KW = objects.Measurement(
    name="powerReal",
    description="RealPower",
    unit="W",
    scale="k",
    power_attributes=objects.PowerAttributes(60, 240, True),
)
"""An ``itemBase`` of kW (``powerReal``, W, scale k)."""


@contextlib.contextmanager
def let_simple_levels_through(event_ids: set[str]) -> Iterator[None]:
    """While active, openleadr's pre-flight check of an outgoing ``oadrDistributeEvent`` is
    shown the SIMPLE payloads of the named events as 0: its rule 9 refuses levels outside
    0–3 (and the VTN then answers that VEN's every poll with HTTP 500). The real payload is
    rendered, so the VEN receives it, schema-valid and signed as usual."""
    original: Callable[[dict[str, Any]], None] = openleadr.preflight._preflight_oadrDistributeEvent

    def preflight(message_payload: dict[str, Any]) -> None:
        hidden: list[tuple[dict[str, Any], Any]] = []
        for event in message_payload.get("events") or ():
            if event["event_descriptor"]["event_id"] not in event_ids:
                continue
            for signal in event["event_signals"]:
                for interval in signal["intervals"]:
                    hidden.append((interval, interval["signal_payload"]))
                    interval["signal_payload"] = 0
        try:
            original(message_payload)
        finally:
            for interval, payload in hidden:
                interval["signal_payload"] = payload

    openleadr.preflight._preflight_oadrDistributeEvent = preflight
    try:
        yield
    finally:
        openleadr.preflight._preflight_oadrDistributeEvent = original


REFUSED = {
    # event id: the reason the log must give for it
    "bad-xfoo": "unsupported signal x-foo (type level)",
    "bad-setpoint": "LOAD_CONTROL x-loadControlSetpoint (a temperature) is not supported",
    "bad-charge": "CHARGE_STATE setpoint: no online battery in the event's targets",
    "bad-no-unit": "LOAD_DISPATCH setpoint: unit none not accepted (accepted: kW)",
    "bad-group": "the event's targets name no known group or agent: feeder-9",
    "bad-level7": "SIMPLE level interval 0: value 7 outside 0…3",
}


def queue_refused_events(ven: Ven) -> None:
    """The schema-valid events the mapping must refuse, queued at the VTN."""
    server, ven_id, start = ven.vtn.server, ven.ven_id, on_clock(ven.stack, 60.0)
    to_us = objects.Target(ven_id=ven_id)

    def add(
        event_id: str,
        name: str,
        type_: str,
        value: float,
        target: objects.Target,
        measurement: objects.Measurement | None = None,
    ) -> None:
        event = raw_event(
            event_id, start, name, type_, [value], 600, target=target, measurement=measurement
        )
        server.add_raw_event(ven_id=ven_id, event=event, callback=_ignore_opt)

    add("bad-xfoo", "x-foo", "level", 1, to_us)
    add("bad-setpoint", "LOAD_CONTROL", "x-loadControlSetpoint", 50, to_us)
    add("bad-charge", "CHARGE_STATE", "setpoint", 30, objects.Target(group_id="waterheaters"), KWH)
    add("bad-no-unit", "LOAD_DISPATCH", "setpoint", -5, objects.Target(resource_id="batteries"))
    add("bad-group", "SIMPLE", "level", 1, objects.Target(group_id="feeder-9"))
    add("bad-level7", "SIMPLE", "level", 7, to_us)  # sent by let_simple_levels_through


def schema_invalid_events(start: datetime) -> dict[str, tuple[dict[str, Any], str]]:
    """Event dicts (openleadr's parsed shape) the wire cannot carry, and their reasons."""

    def event(event_id: str, **changes: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "event_descriptor": {
                "event_id": event_id,
                "modification_number": 0,
                "market_context": MARKET_CONTEXT,
                "event_status": "far",
            },
            "active_period": {"dtstart": start, "duration": timedelta(seconds=600)},
            "event_signals": [
                {
                    "signal_name": "SIMPLE",
                    "signal_type": "level",
                    "intervals": [
                        {
                            "dtstart": start,
                            "signal_payload": 2.0,
                            "duration": timedelta(seconds=600),
                        }
                    ],
                }
            ],
            "targets": [{"ven_id": "VEN-sef-ems"}],
            "response_required": "always",
        }
        base.update(changes)
        return base

    return {
        "inv-no-start": (
            event("inv-no-start", active_period={"duration": timedelta(seconds=600)}),
            "malformed event: active_period has no dtstart",
        ),
        "inv-text-payload": (
            event(
                "inv-text-payload",
                event_signals=[
                    {
                        "signal_name": "SIMPLE",
                        "signal_type": "level",
                        "intervals": [
                            {
                                "dtstart": start,
                                "signal_payload": "high",
                                "duration": timedelta(seconds=600),
                            }
                        ],
                    }
                ],
            ),
            "malformed event: interval 0 payload is not a number: 'high'",
        ),
        "inv-no-signals": (
            event("inv-no-signals", event_signals=[]),
            "malformed event: event has no signals",
        ),
    }
