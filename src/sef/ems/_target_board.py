"""The live target set through the API (``PUT /control/target``) and the time-limited
windows and agent holds of demand-response events, read by live control.

A target is a list of ``(time_s, kw)`` points (Unix s on the EMS clock, kW), held from
each point's time until the next one (the last holds on). Before its first point, and
when none was set, the live controller follows its scenario's target. The board lives
on the EMS object (:func:`target_board`), so the API and the controller running beside
the EMS share it without importing each other.

**Windows** (:meth:`TargetBoard.put_window`, by key, e.g. an OpenADR event) apply over
``[start_s, end_s)`` only: a ``target_kw`` window replaces the target there (over the
points; the newest window put wins where target windows overlap), a ``limit_kw`` window
caps the metered feeder (the smallest limit of the windows covering a time applies; the
live controller holds it with the feeder guard whatever its scenario's objective).
**Holds** (:meth:`TargetBoard.hold`) keep the live controller's hands off agents that a
demand-response event commands directly, over ``[start_s, end_s)``.

Windows and holds that have ended are dropped when the board is changed or read (with
its ``clock``), so a long run of events does not grow the board.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_HOLDS",
    "MAX_HOLD_AGENTS",
    "MAX_POINTS",
    "MAX_WINDOWS",
    "Hold",
    "TargetBoard",
    "Window",
    "parse_target_csv",
    "target_board",
]

MAX_POINTS = 10_000
"""Most points in one target (a day at 10-s resolution is 8 640)."""
MAX_TARGET_KW = 1e6
"""Largest magnitude of a target point or window value, kW (1 GW: beyond any feeder)."""
MAX_WINDOWS = 10_000
"""Most windows on the board at once (ended ones are dropped)."""
MAX_HOLDS = 10_000
"""Most holds on the board at once (ended ones are dropped)."""
MAX_HOLD_AGENTS = 10_000
"""Most agents in one hold."""

_order = itertools.count()  # put order of windows (the newest target window wins)


@dataclass(frozen=True, slots=True)
class Window:
    """A time-limited target or feeder limit over ``[start_s, end_s)`` (Unix s, kW).

    Attributes:
        start_s: from (Unix s, EMS clock).
        end_s: until (exclusive).
        limit_kw: most the metered feeder may draw (kW); ``None``: no limit.
        target_kw: the target over the window (kW); ``None``: unchanged.
        order: put order (larger: put later).
    """

    start_s: float
    end_s: float
    limit_kw: float | None
    target_kw: float | None
    order: int

    def covers(self, t_s: float) -> bool:
        """Whether ``t_s`` (Unix s) is in ``[start_s, end_s)``."""
        return self.start_s <= t_s < self.end_s


@dataclass(frozen=True, slots=True)
class Hold:
    """Agents the live controller leaves alone over ``[start_s, end_s)`` (Unix s)."""

    agents: frozenset[str]
    start_s: float
    end_s: float


def _span(start_s: float, end_s: float) -> tuple[float, float]:
    try:
        start, end = float(start_s), float(end_s)
    except (OverflowError, TypeError, ValueError):
        raise ValueError(f"span ({start_s!r}, {end_s!r}) is not two numbers") from None
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise ValueError(f"span ({start}, {end}) must be finite with end after start")
    return start, end


def _kw(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        kw = float(value)
    except (OverflowError, TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(kw) or abs(kw) > MAX_TARGET_KW:
        raise ValueError(f"{name} {kw} is not finite or beyond ±{MAX_TARGET_KW:g}")
    return kw


@dataclass
class TargetBoard:
    """The operator's live target and who set it, and the windows and holds of events.

    Attributes:
        points: ``(time_s, kw)`` sorted by time (Unix s, kW); empty: the scenario's.
        version: incremented at every change (the controller re-reads on change).
        set_by: name of the API principal that set the points last.
        set_at: EMS clock time of that change (Unix s).
        windows: by key, the target and limit windows not yet ended.
        holds: by key, the agent holds not yet ended.
        clock: the EMS clock (Unix s) by which ended windows and holds are dropped;
            ``None``: they are kept until removed.
    """

    points: list[tuple[float, float]] = field(default_factory=list)
    version: int = 0
    set_by: str | None = None
    set_at: float | None = None
    windows: dict[str, Window] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    clock: Callable[[], float] | None = field(default=None, repr=False, compare=False)
    _next_end: float = field(default=math.inf, repr=False, compare=False)

    def set(self, points: list[tuple[float, float]], set_by: str | None, now: float) -> None:
        """Replace the target (points are checked and sorted; an empty list clears it).

        Raises:
            ValueError: a point that is not finite, a repeated time, or too many points.
        """
        if len(points) > MAX_POINTS:
            raise ValueError(f"{len(points)} points, at most {MAX_POINTS}")
        try:
            clean = sorted((float(t), float(kw)) for t, kw in points)
        except OverflowError:  # an integer beyond any float (10**400)
            raise ValueError("a point is out of range") from None
        for t, kw in clean:
            if not (math.isfinite(t) and math.isfinite(kw)) or abs(kw) > MAX_TARGET_KW:
                raise ValueError(f"point ({t}, {kw}) is not finite or beyond ±{MAX_TARGET_KW:g}")
        times = [t for t, _ in clean]
        if len(set(times)) != len(times):
            raise ValueError("two points have the same time")
        self.points = clean
        self.version += 1
        self.set_by = set_by
        self.set_at = now

    # -- windows ----------------------------------------------------------------------
    def put_window(
        self,
        key: str,
        start_s: float,
        end_s: float,
        *,
        limit_kw: float | None = None,
        target_kw: float | None = None,
    ) -> None:
        """Put (or replace) window ``key`` over ``[start_s, end_s)`` (Unix s): a feeder
        limit ``limit_kw`` and/or a target ``target_kw`` (kW).

        Raises:
            ValueError: a span that is not finite or not increasing, a value not finite or
                beyond ±1 GW, neither value given, or more than :data:`MAX_WINDOWS`.
        """
        start, end = _span(start_s, end_s)
        limit, target = _kw("limit_kw", limit_kw), _kw("target_kw", target_kw)
        if limit is None and target is None:
            raise ValueError("a window needs limit_kw or target_kw")
        self.prune()
        if key not in self.windows and len(self.windows) >= MAX_WINDOWS:
            raise ValueError(f"{MAX_WINDOWS} windows on the board already")
        self.windows[key] = Window(start, end, limit, target, next(_order))
        self._changed(end)

    def remove_window(self, key: str) -> bool:
        """Remove window ``key``; returns whether there was one."""
        if self.windows.pop(key, None) is None:
            return False
        self.version += 1
        return True

    def limit_at(self, t_s: float) -> float | None:
        """The feeder limit at ``t_s`` (kW): the smallest of the windows covering it;
        ``None``: no limit window covers it."""
        self.prune()
        limits = [
            w.limit_kw for w in self.windows.values() if w.limit_kw is not None and w.covers(t_s)
        ]
        return min(limits) if limits else None

    def limit_series(self, start_s: float, dt_s: float, n: int) -> npt.NDArray[np.float64]:
        """Per step the feeder limit (kW) over ``n`` steps of ``dt_s`` from ``start_s``: the
        smallest limit of the windows overlapping any part of the step (a window that
        starts or ends inside a step limits all of it); ``inf`` where none does."""
        self.prune()
        out = np.full(max(n, 0), np.inf)
        for w in self.windows.values():
            if w.limit_kw is None:
                continue
            first = max(math.floor((w.start_s - start_s) / dt_s), 0)
            last = min(math.ceil((w.end_s - start_s) / dt_s), out.size)
            if first < last:
                np.minimum(out[first:last], w.limit_kw, out=out[first:last])
        return out

    # -- holds ------------------------------------------------------------------------
    def hold(self, key: str, agents: Iterable[str], start_s: float, end_s: float) -> None:
        """Put (or replace) hold ``key``: the live controller leaves ``agents`` alone over
        ``[start_s, end_s)`` (Unix s).

        Raises:
            ValueError: a bad span, ``agents`` a string (not a collection of ids), an agent
                id that is not a non-empty string, more than
                :data:`MAX_HOLD_AGENTS` agents or more than :data:`MAX_HOLDS` holds.
        """
        start, end = _span(start_s, end_s)
        if isinstance(agents, str):  # frozenset("bat-1") would hold "b", "a", "t", ...
            raise ValueError(f"agents must be a collection of ids, not one string {agents!r}")
        ids = frozenset(agents)
        if len(ids) > MAX_HOLD_AGENTS:
            raise ValueError(f"{len(ids)} agents in one hold, at most {MAX_HOLD_AGENTS}")
        if not all(isinstance(a, str) and a for a in ids):
            raise ValueError("agent ids must be non-empty strings")
        self.prune()
        if key not in self.holds and len(self.holds) >= MAX_HOLDS:
            raise ValueError(f"{MAX_HOLDS} holds on the board already")
        self.holds[key] = Hold(ids, start, end)
        self._changed(end)

    def release(self, key: str) -> bool:
        """End hold ``key`` now; returns whether there was one."""
        if self.holds.pop(key, None) is None:
            return False
        self.version += 1
        return True

    def held_at(self, t_s: float) -> frozenset[str]:
        """The agents held at ``t_s`` (Unix s)."""
        self.prune()
        held: set[str] = set()
        for h in self.holds.values():
            if h.start_s <= t_s < h.end_s:
                held |= h.agents
        return frozenset(held)

    # -- reading ----------------------------------------------------------------------
    def series(self, default_kw: Any, start_s: float, dt_s: float) -> npt.NDArray[np.float64]:
        """A per-step target (kW) from ``start_s`` on steps of ``dt_s``: at each step's
        start the target window put last that covers it, else this target's points where
        they apply, else ``default_kw`` (the scenario's series). Limits are not applied
        (:meth:`limit_series`)."""
        target = np.array(default_kw, dtype=np.float64)
        n = target.shape[0]
        t = start_s + dt_s * np.arange(n)
        if self.points:
            times = np.array([p[0] for p in self.points])
            values = np.array([p[1] for p in self.points])
            i = np.searchsorted(times, t, side="right") - 1
            target = np.where(i >= 0, values[np.maximum(i, 0)], target)
        self.prune()
        for w in sorted(self.windows.values(), key=lambda w: w.order):
            if w.target_kw is None:
                continue
            first = max(math.ceil((w.start_s - start_s) / dt_s), 0)
            last = min(math.ceil((w.end_s - start_s) / dt_s), n)
            if first < last:
                target[first:last] = w.target_kw
        return target

    def value_at(self, t_s: float) -> float | None:
        """The target at ``t_s`` (kW): the newest target window covering it, else the
        points' value; ``None`` when neither applies (the scenario's)."""
        self.prune()
        covering = [w for w in self.windows.values() if w.target_kw is not None and w.covers(t_s)]
        if covering:
            return max(covering, key=lambda w: w.order).target_kw
        i = bisect.bisect_right([t for t, _ in self.points], t_s) - 1
        return None if i < 0 else self.points[i][1]

    def prune(self) -> None:
        """Drop the windows and holds that ended by the clock's now (cheap until the first
        of them ends: the earliest end is kept). Values at and after now do not change,
        so ``version`` does not either."""
        if self.clock is None:
            return
        now = self.clock()
        if now < self._next_end:
            return
        self.windows = {k: w for k, w in self.windows.items() if w.end_s > now}
        self.holds = {k: h for k, h in self.holds.items() if h.end_s > now}
        ends = [w.end_s for w in self.windows.values()] + [h.end_s for h in self.holds.values()]
        self._next_end = min(ends, default=math.inf)

    def _changed(self, end_s: float) -> None:
        self._next_end = min(self._next_end, end_s)
        self.version += 1


def parse_target_csv(text: str) -> list[tuple[float, float]]:
    """``time_s,kw`` rows (an optional header line is skipped) → points.

    Raises:
        ValueError: a row that is not two numbers (its line number is in the message).
    """
    points: list[tuple[float, float]] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise ValueError(f"line {n}: expected 2 columns time_s,kw, got {len(row)}")
        try:
            points.append((float(row[0]), float(row[1])))
        except ValueError:
            if n == 1 and not points:
                continue  # a header
            raise ValueError(f"line {n}: not numbers: {row!r}") from None
    return points


def target_board(ems: object) -> TargetBoard:
    """The EMS's target board (created on first use)."""
    board = getattr(ems, "control_target", None)
    if not isinstance(board, TargetBoard):
        clock = getattr(ems, "clock", None)
        board = TargetBoard(clock=getattr(clock, "now", None))
        setattr(ems, "control_target", board)  # noqa: B010 - an attribute EMS does not declare
    return board
