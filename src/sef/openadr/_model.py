"""The library-neutral model of a demand-response event, as every VEN adapter hands it over.

An adapter (OpenADR 2.0b, OpenADR 3, later IEEE 2030.5) turns its protocol's event into a
:class:`DrEvent`; the bridge (:mod:`sef.openadr._bridge`) maps it to device commands or
target windows and answers with an :class:`OptDecision`. Nothing here imports a protocol
library.

Times are Unix seconds (s) **on the EMS clock** (:mod:`sef.clock`): in a deployment the EMS
clock is real time, so they are the VTN's UTC times; a test or demo that runs the EMS on a
scaled clock has its VTN stamp events on that clock. Values are already in the unit named
by :attr:`DrSignal.unit` (the adapter applies the protocol's scale, e.g. OpenADR 2.0b
``powerReal`` W with scale ``k`` → ``"kW"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "DrEvent",
    "DrInterval",
    "DrSignal",
    "EventKey",
    "EventStatus",
    "Opt",
    "OptDecision",
    "Targets",
    "TelemetrySample",
]

EventKey = tuple[str, str, int]
"""``(source, event_id, modification)``: one version of one event from one adapter."""


class Opt(StrEnum):
    """The VEN's answer to an event."""

    IN = "optIn"
    OUT = "optOut"


class EventStatus(StrEnum):
    """An event's status as the VTN states it (OpenADR 2.0b ``eventStatus``; OpenADR 3 events
    have none, their adapter derives it from the intervals and the clock)."""

    NONE = "none"
    FAR = "far"
    NEAR = "near"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class DrInterval:
    """One interval of a signal.

    Attributes:
        start_s: start, Unix s on the EMS clock.
        duration_s: length, s (> 0 for a valid event; the mapping refuses others).
        value: the payload in the signal's unit (a SIMPLE level, kW, %, currency/kWh...).
    """

    start_s: float
    duration_s: float
    value: float

    @property
    def end_s(self) -> float:
        """End of the interval, Unix s."""
        return self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class DrSignal:
    """One signal (OpenADR 2.0b ``eiEventSignal``, OpenADR 3 payload type) of an event.

    Attributes:
        name: the signal name, upper case as in the standards: ``SIMPLE``,
            ``LOAD_DISPATCH``, ``LOAD_CONTROL``, ``CHARGE_STATE``, ``ELECTRICITY_PRICE``,
            ``ENERGY_PRICE``, ``DEMAND_CHARGE``, ``IMPORT_CAPACITY_LIMIT``, ``PRICE``, ``x-…``.
        type: the signal type (2.0b ``signalType``: ``level``, ``setpoint``, ``delta``,
            ``multiplier``, ``price``, ``priceRelative``, ``priceMultiplier``,
            ``x-loadControlCapacity``, ``x-loadControlLevelOffset``,
            ``x-loadControlPercentOffset``, ``x-loadControlSetpoint``); OpenADR 3 payloads
            have no type, their adapter sets the one the payload implies (``level`` for
            SIMPLE, ``setpoint`` for a limit, ``price`` for PRICE).
        unit: the unit of every interval value after scaling (``"kW"``, ``"kWh"``,
            ``"%"``, ``"USD/kWh"``, ...), ``None`` where the signal has none (a level), or
            the protocol's text prefixed ``"?"`` when the adapter could not normalise it.
        intervals: the intervals in time order.
    """

    name: str
    type: str
    unit: str | None
    intervals: tuple[DrInterval, ...]


@dataclass(frozen=True, slots=True)
class Targets:
    """Whom an event addresses. All empty: the VEN's whole fleet.

    Attributes:
        groups: SEF group names (2.0b ``groupID``, OpenADR 3 ``targets`` of type group).
        resources: resource ids (2.0b ``resourceID``): a SEF group name or an agent id.
        vens: VEN ids or names (2.0b ``venID``); they address this VEN as a whole.
    """

    groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    vens: tuple[str, ...] = ()

    @property
    def whole_fleet(self) -> bool:
        """No group or resource named: every device of this VEN."""
        return not self.groups and not self.resources


@dataclass(frozen=True, slots=True)
class DrEvent:
    """One version (modification) of a demand-response event.

    Attributes:
        source: the adapter that delivered it (``"oadr2b"``, ``"oadr3"``).
        event_id: the VTN's event id.
        modification: its modification number (2.0b ``modificationNumber``; OpenADR 3:
            a counter the adapter bumps when ``modificationDateTime`` changes).
        program: the program / market context it belongs to.
        status: as the VTN states it (see :class:`EventStatus`).
        start_s: the event's start, Unix s on the EMS clock.
        duration_s: its length, s.
        randomize_s: the window for a randomised start (2.0b ``tolerance/startafter``,
            OpenADR 3 ``randomizeStart``), s; 0: start on time.
        ramp_up_s: 2.0b ``x-eiRampUp``, s (0: none).
        recovery_s: 2.0b ``x-eiRecovery``, s (0: none).
        priority: lower is more important (2.0b ``priority``; 0 = none given).
        test: a test event: it is answered but nothing is sent to devices.
        response_required: whether the VTN wants an opt answer (2.0b ``always``/``never``).
        targets: whom it addresses.
        signals: its signals (the mapping uses the first one it supports).
        raw: the protocol's event as JSON-able data, for the history and the API.
    """

    source: str
    event_id: str
    modification: int
    program: str
    status: EventStatus
    start_s: float
    duration_s: float
    signals: tuple[DrSignal, ...]
    targets: Targets = Targets()
    randomize_s: float = 0.0
    ramp_up_s: float = 0.0
    recovery_s: float = 0.0
    priority: int = 0
    test: bool = False
    response_required: bool = True
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> EventKey:
        """``(source, event_id, modification)``."""
        return (self.source, self.event_id, self.modification)

    @property
    def end_s(self) -> float:
        """Scheduled end, Unix s (``inf`` for an event of unknown length)."""
        return self.start_s + self.duration_s if math.isfinite(self.duration_s) else math.inf


@dataclass(frozen=True, slots=True)
class OptDecision:
    """The answer to one event version, with the reason an operator reads in the history."""

    opt: Opt
    reason: str

    @classmethod
    def opt_in(cls, reason: str = "mapped") -> OptDecision:
        """Opted in."""
        return cls(Opt.IN, reason)

    @classmethod
    def opt_out(cls, reason: str) -> OptDecision:
        """Opted out because of ``reason``."""
        return cls(Opt.OUT, reason)


@dataclass(frozen=True, slots=True)
class TelemetrySample:
    """One group's aggregated telemetry, what a usage report carries.

    Attributes:
        group: the group (or ``"*"`` for the whole fleet).
        time_s: newest sample time among the members, Unix s on the EMS clock.
        power_kw: Σ real power drawn from the grid, kW (a discharging battery counts
            negative).
        energy_kwh: Σ stored energy, kWh (batteries' state of charge × capacity; heaters
            report none), ``None`` when no member reports it.
        voltage_v: mean AC voltage, V, ``None`` when no member reports one.
        current_a: Σ current, A, ``None`` when no member reports one.
        members: how many members contributed.
    """

    group: str
    time_s: float
    power_kw: float
    energy_kwh: float | None
    voltage_v: float | None
    current_a: float | None
    members: int
