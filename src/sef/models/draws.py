"""Hot-water draw profiles for the water-heater model.

A draw profile is a list of :class:`DrawEvent` (start time, volume, flow rate).
:func:`draw_events_to_steps` turns it into the per-step mean flow, L/min, that
:meth:`sef.models.waterheater.WaterHeaterModel.step` takes. The volume of every
draw is preserved exactly: a step that a draw covers only partly gets the
proportional share (this is also how NREL OCHRE's shipped
``WH Medium UEF Schedule.csv`` spreads the last part-minute of each draw).

For a fleet, :class:`DrawSchedule` keeps every heater's draws as a sparse list of
pieces (heater, start, end, flow) and makes the per-step flow vector of the fleet one
step at a time, so memory grows with the number of draws, not with steps × heaters.

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
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: One US gallon, L.
GALLON_L = 3.785411784

__all__ = [
    "DOE_MEDIUM_UEF_DRAWS",
    "GALLON_L",
    "DrawEvent",
    "DrawSchedule",
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


def _fits_int16(values: NDArray[np.intp]) -> bool:
    """Whether every value fits a signed 16-bit integer."""
    return bool(values.size == 0 or (values.min() >= -32768 and values.max() <= 32767))


class DrawSchedule:
    """The draws of a fleet of ``n`` heaters on a grid of ``steps`` × ``dt_s``, stored sparsely.

    Each draw is a *piece* ``(heater, start_s, end_s, flow_l_per_min)`` inside
    ``[0, steps·dt_s]`` (a draw that wraps past the end is given as two pieces). Step
    ``k`` gets, per heater, the mean flow of the pieces overlapping ``[k·dt_s, (k+1)·dt_s)``
    (L/min, interval mean: volumes are exact). Storage is 28 bytes per piece plus a step
    index (16 bytes per step): the DOE medium pattern is 12 pieces per heater-day,
    ≈ 340 B instead of 11.5 kB for a dense ``(1440, n)`` float64 matrix.

    The per-step values are computed, and added up, in the order the dense reference
    (:func:`sef.control.profiles.draw_matrix`) uses, so a row equals the dense matrix's
    row bit for bit.

    Parameters:
        n: number of heaters.
        dt_s: step length (s, > 0).
        steps: number of steps.
        heater: heater index of each piece, ``(p,)``.
        start_s, end_s: start and end of each piece (s), ``0 ≤ start < end ≤ steps·dt_s``.
        flow_l_per_min: flow while drawing (L/min), ``(p,)``.
    """

    def __init__(
        self,
        n: int,
        dt_s: float,
        steps: int,
        heater: ArrayLike,
        start_s: ArrayLike,
        end_s: ArrayLike,
        flow_l_per_min: ArrayLike,
    ) -> None:
        if dt_s <= 0 or steps < 0 or n < 0:
            raise ValueError("dt_s must be > 0, steps and n >= 0")
        heater = np.asarray(heater, dtype=np.intp)
        if heater.size and (heater.min() < 0 or heater.max() >= n):
            raise ValueError("heater index out of range")
        key = np.floor(np.asarray(start_s, dtype=np.float64) / dt_s).astype(np.intp)
        np.negative(key, out=key)  # minus the first step
        # stable sort by first step, latest first: a step's candidate pieces are then one
        # slice, in the order the dense reference adds them (radix sort on 16-bit keys)
        order = np.argsort(key.astype(np.int16) if _fits_int16(key) else key, kind="stable")
        self.n = int(n)
        self.dt_s = float(dt_s)
        self.steps = int(steps)
        self._heater = heater.astype(np.int32)[order]
        self._start = np.asarray(start_s, dtype=np.float64)[order]
        self._end = np.asarray(end_s, dtype=np.float64)[order]
        self._flow = np.asarray(flow_l_per_min, dtype=np.float64)[order]
        key = key[order]
        del order
        #: most steps one piece overlaps
        self._span = int(np.max(np.ceil(self._end / dt_s) + key)) if key.size else 0
        k = -np.arange(self.steps)
        #: pieces starting in step k: ``[_begin[k], _stop[k])``
        self._begin = np.searchsorted(key, k, side="left")
        self._stop = np.searchsorted(key, k, side="right")
        self._total: NDArray[np.float64] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(steps, n)``: the shape of the equivalent dense matrix."""
        return self.steps, self.n

    @property
    def pieces(self) -> int:
        """Number of stored draw pieces."""
        return int(self._heater.size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays."""
        arrays = (self._heater, self._start, self._end, self._flow, self._begin, self._stop)
        return int(sum(a.nbytes for a in arrays))

    def step_pieces(self, k: int) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
        """Sparse step ``k``: heater indices and their flow contributions (L/min).

        A heater appears once per piece that overlaps the step (so possibly twice).
        """
        lo_i = int(self._begin[k])
        hi_i = int(self._stop[max(0, k - max(self._span, 1) + 1)])
        s0 = self._start[lo_i:hi_i]
        s1 = self._end[lo_i:hi_i]
        lo = k * self.dt_s
        ov = np.clip(np.minimum(lo + self.dt_s, s1) - np.maximum(lo, s0), 0.0, None)
        ok = np.nonzero(ov > 0)[0]
        return self._heater[lo_i:hi_i][ok], ov[ok] / self.dt_s * self._flow[lo_i:hi_i][ok]

    def row(self, k: int, out: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        """Per-heater mean flow of step ``k`` (L/min), ``(n,)``; written into ``out`` if given."""
        if not 0 <= k < self.steps:
            raise IndexError(f"step {k} outside 0..{self.steps - 1}")
        if out is None:
            out = np.zeros(self.n)
        else:
            out.fill(0.0)
        h, v = self.step_pieces(k)
        np.add.at(out, h, v)
        return out

    def total_lpm(self) -> NDArray[np.float64]:
        """Fleet draw flow per step (L/min), ``(steps,)`` (computed once, then cached)."""
        if self._total is None:
            buf = np.zeros(self.n)
            self._total = np.array([self.row(k, buf).sum() for k in range(self.steps)])
        return self._total

    def sum(self, axis: int) -> NDArray[np.float64]:
        """As the dense matrix's ``sum(axis)``: per heater (``axis=0``) or per step (``1``)."""
        if axis == 1:
            return self.total_lpm().copy()
        if axis != 0:
            raise ValueError("axis must be 0 or 1")
        acc = np.zeros(self.n)
        buf = np.zeros(self.n)
        for k in range(self.steps):
            acc += self.row(k, buf)
        return acc

    def to_dense(self) -> NDArray[np.float64]:
        """The dense ``(steps, n)`` matrix (for small fleets and tests)."""
        out = np.zeros((self.steps, self.n))
        for k in range(self.steps):
            self.row(k, out[k])
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[np.float64]:
        dense = self.to_dense()
        return dense if dtype is None else dense.astype(dtype)

    def __getitem__(self, key: int | tuple[Any, ...]) -> Any:
        """``schedule[k]``: the row of step ``k`` (a new array); ``schedule[k, idx]``:
        ``row(k)[idx]`` (one value, a slice or fancy index of heaters)."""
        if isinstance(key, tuple):
            k, *rest = key
            sl = rest[0] if len(rest) == 1 else None
            if (
                isinstance(sl, slice)
                and sl.start in (None, 0)
                and sl.step in (None, 1)
                and isinstance(sl.stop, int | np.integer)
                and sl.stop >= 0
            ):
                return self._first_heaters(int(k), min(int(sl.stop), self.n))
            return self.row(int(k))[tuple(rest)]
        return self.row(int(key))

    def _first_heaters(self, k: int, m: int) -> NDArray[np.float64]:
        """``row(k)[:m]`` without making the whole row (a sample of a large fleet)."""
        if not 0 <= k < self.steps:
            raise IndexError(f"step {k} outside 0..{self.steps - 1}")
        h, v = self.step_pieces(k)
        keep = h < m
        out = np.zeros(max(m, 0))
        np.add.at(out, h[keep], v[keep])
        return out
