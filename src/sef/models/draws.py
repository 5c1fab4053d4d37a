"""Hot-water draw profiles for the water-heater model.

A draw profile is a list of :class:`DrawEvent` (start time, volume, flow rate).
:func:`draw_events_to_steps` turns it into the per-step mean flow, L/min, that
:meth:`sef.models.waterheater.WaterHeaterModel.step` takes. The volume of every
draw is preserved exactly: a step that a draw covers only partly gets the
proportional share (this is also how NREL OCHRE's shipped
``WH Medium UEF Schedule.csv`` spreads the last part-minute of each draw).

Built in: the DOE Uniform Energy Factor 24-hour simulated-use test, "medium
usage" pattern (10 CFR 430 Subpart B, Appendix E; 12 draws, 55 gal = 208.2 L).

CSV schedule format (:func:`load_draw_schedule_csv`)
----------------------------------------------------
A header row, then one draw per row, ``#`` comment lines allowed. Three columns,
recognised by header name (case-insensitive, surrounding spaces ignored):

* start time: ``start`` as ``HH:MM`` or ``HH:MM:SS`` (may exceed 24 h, e.g.
  ``25:30``), or ``start_s`` in seconds from the start of the schedule;
* volume: ``volume_l`` (litres) or ``volume_gal`` (US gallons);
* flow rate: ``flow_l_per_min`` or ``flow_gpm`` (US gallons per minute).

Example::

    start,volume_gal,flow_gpm
    00:00,15,1.7
    00:30,2,1.0
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

#: One US gallon, L.
GALLON_L = 3.785411784

__all__ = [
    "DOE_MEDIUM_UEF_DRAWS",
    "GALLON_L",
    "DrawEvent",
    "doe_medium_draw_profile",
    "draw_events_to_steps",
    "load_draw_schedule_csv",
]


@dataclass(frozen=True)
class DrawEvent:
    """One hot-water draw.

    Attributes
    ----------
    start_s : float
        Start time from the start of the profile, s.
    volume_l : float
        Drawn volume, L (> 0).
    flow_l_per_min : float
        Flow rate while drawing, L/min (> 0).
    """

    start_s: float
    volume_l: float
    flow_l_per_min: float

    def __post_init__(self) -> None:
        if not (self.start_s >= 0 and self.volume_l > 0 and self.flow_l_per_min > 0):
            raise ValueError(f"invalid draw event {self}")

    @property
    def duration_s(self) -> float:
        """Duration of the draw, s."""
        return 60.0 * self.volume_l / self.flow_l_per_min


def _gal(start: str, gallons: float, gpm: float) -> DrawEvent:
    hh, mm = start.split(":")
    return DrawEvent(3600.0 * int(hh) + 60.0 * int(mm), gallons * GALLON_L, gpm * GALLON_L)


#: DOE UEF 24-h test, medium-usage pattern: (start HH:MM, gallons, gpm) as in the
#: test procedure (10 CFR 430 Subpart B App. E, Table III.1 medium) and OCHRE's file.
DOE_MEDIUM_UEF_DRAWS: tuple[DrawEvent, ...] = tuple(
    _gal(s, g, f)
    for s, g, f in (
        ("00:00", 15, 1.7),
        ("00:30", 2, 1.0),
        ("01:43", 9, 1.7),
        ("10:33", 9, 1.7),
        ("11:33", 5, 1.7),
        ("12:03", 1, 1.0),
        ("12:48", 1, 1.0),
        ("12:53", 1, 1.0),
        ("16:03", 1, 1.0),
        ("16:18", 2, 1.0),
        ("16:48", 2, 1.7),
        ("17:03", 7, 1.7),
    )
)


def draw_events_to_steps(
    events: Iterable[DrawEvent], dt_s: float, duration_s: float
) -> NDArray[np.float64]:
    """Mean draw flow per time step.

    Parameters
    ----------
    events : iterable of DrawEvent
        Draws; overlapping draws add up.
    dt_s : float
        Step length, s (> 0).
    duration_s : float
        Length of the profile, s; ``ceil(duration_s / dt_s)`` steps. Draw volume
        after the end is dropped.

    Returns
    -------
    numpy.ndarray
        Mean flow in each step, L/min, shape ``(steps,)``. ``sum(out) * dt_s / 60``
        equals the total drawn volume, L.
    """
    if dt_s <= 0 or duration_s <= 0:
        raise ValueError("dt_s and duration_s must be > 0")
    steps = int(np.ceil(duration_s / dt_s - 1e-9))
    edges = np.arange(steps + 1) * dt_s
    out = np.zeros(steps)
    for ev in events:
        start, end = ev.start_s, ev.start_s + ev.duration_s
        overlap = np.clip(np.minimum(edges[1:], end) - np.maximum(edges[:-1], start), 0.0, None)
        out += overlap / dt_s * ev.flow_l_per_min
    return out


def doe_medium_draw_profile(dt_s: float = 60.0, days: int = 1) -> NDArray[np.float64]:
    """The DOE UEF medium-usage pattern as a per-step flow array.

    Parameters
    ----------
    dt_s : float, default 60
        Step length, s.
    days : int, default 1
        Number of days; the 24-h pattern repeats every day.

    Returns
    -------
    numpy.ndarray
        Mean flow per step, L/min; 208.2 L per day.
    """
    events = [
        DrawEvent(ev.start_s + 86400.0 * d, ev.volume_l, ev.flow_l_per_min)
        for d in range(days)
        for ev in DOE_MEDIUM_UEF_DRAWS
    ]
    return draw_events_to_steps(events, dt_s, 86400.0 * days)


def _parse_start(text: str) -> float:
    parts = text.strip().split(":")
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"start time {text!r} is not HH:MM or HH:MM:SS")
    nums = [float(p) for p in parts] + [0.0]
    return 3600.0 * nums[0] + 60.0 * nums[1] + nums[2]


def _pick(row: dict[str, str], names: Sequence[str]) -> tuple[str, str] | None:
    for name in names:
        value = row.get(name)
        if value is not None and value.strip() != "":
            return name, value.strip()
    return None


def load_draw_schedule_csv(path: str | Path) -> list[DrawEvent]:
    """Read a draw schedule from a CSV file (format in the module docstring).

    Parameters
    ----------
    path : str or pathlib.Path
        CSV file.

    Returns
    -------
    list of DrawEvent
        Sorted by start time.

    Raises
    ------
    ValueError
        A row misses a column or holds an invalid value (the message names the line).
    """
    events: list[DrawEvent] = []
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    if reader.fieldnames is None:
        raise ValueError(f"{path}: empty draw schedule")
    reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
    for lineno, row in enumerate(reader, start=2):
        try:
            start = _pick(row, ("start", "start_s"))
            vol = _pick(row, ("volume_l", "volume_gal"))
            flow = _pick(row, ("flow_l_per_min", "flow_gpm"))
            if start is None or vol is None or flow is None:
                raise ValueError("need a start, a volume and a flow column")
            start_s = float(start[1]) if start[0] == "start_s" else _parse_start(start[1])
            volume_l = float(vol[1]) * (GALLON_L if vol[0] == "volume_gal" else 1.0)
            flow_lpm = float(flow[1]) * (GALLON_L if flow[0] == "flow_gpm" else 1.0)
            events.append(DrawEvent(start_s, volume_l, flow_lpm))
        except ValueError as exc:
            raise ValueError(f"{path}: data row {lineno}: {exc}") from exc
    return sorted(events, key=lambda e: e.start_s)
