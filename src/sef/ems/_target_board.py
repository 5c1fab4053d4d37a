"""The live target set through the API (``PUT /control/target``), read by live control.

A target is a list of ``(time_s, kw)`` points (Unix s on the EMS clock, kW), held from
each point's time until the next one (the last holds on). Before its first point, and
when none was set, the live controller follows its scenario's target. The board lives
on the EMS object (:func:`target_board`), so the API and the controller running beside
the EMS share it without importing each other.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_POINTS", "TargetBoard", "parse_target_csv", "target_board"]

MAX_POINTS = 10_000
MAX_TARGET_KW = 1e6
"""Largest magnitude of a target point, kW (1 GW: beyond any feeder)."""
"""Most points in one target (a day at 10-s resolution is 8 640)."""


@dataclass
class TargetBoard:
    """The operator's live target and who set it.

    Attributes:
        points: ``(time_s, kw)`` sorted by time (Unix s, kW); empty: the scenario's.
        version: incremented at every change (the controller re-reads on change).
        set_by: name of the API principal that set it last.
        set_at: EMS clock time of that change (Unix s).
    """

    points: list[tuple[float, float]] = field(default_factory=list)
    version: int = 0
    set_by: str | None = None
    set_at: float | None = None

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

    def series(self, default_kw: Any, start_s: float, dt_s: float) -> npt.NDArray[np.float64]:
        """A per-step target (kW) from ``start_s`` on steps of ``dt_s``: this target where
        it applies, ``default_kw`` (the scenario's series) elsewhere."""
        target = np.array(default_kw, dtype=np.float64)
        for k in range(target.shape[0]):
            value = self.value_at(start_s + k * dt_s)
            if value is not None:
                target[k] = value
        return target

    def value_at(self, t_s: float) -> float | None:
        """The target at ``t_s`` (kW), or ``None`` before the first point / when unset."""
        i = bisect.bisect_right([t for t, _ in self.points], t_s) - 1
        return None if i < 0 else self.points[i][1]


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
        board = TargetBoard()
        setattr(ems, "control_target", board)  # noqa: B010 - an attribute EMS does not declare
    return board
