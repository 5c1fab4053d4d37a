"""What live control reads of the EMS's target board (:mod:`sef.ems._target_board`): the
target (the API's points, event target windows), event feeder limits and event holds.

:class:`LiveBoard` is mixed into :class:`~sef.control.live.LiveControl` (the attributes
it reads are LiveControl's). Each read is a version check: the target and the limits
are recomputed only when the board changed. ``docs/control.md``, "Event windows and
holds", says how the controller honours them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from sef.control._live_fleet import LiveFleet
from sef.control.scenario import Scenario
from sef.ems import EMS
from sef.ems._target_board import target_board

__all__ = ["LiveBoard"]


class LiveBoard:
    """The target board as the live controller sees it (mixed into ``LiveControl``)."""

    ems: EMS
    scenario: Scenario
    current: Scenario
    fleet: LiveFleet
    start_s: float | None
    steps_started: int
    _target_version: int
    _limit_version: int
    _limits: npt.NDArray[np.float64]

    def refresh_target(self) -> bool:
        """Apply the target board (the API's target, event windows) if it changed (its
        version); returns whether. The target is at most the board's feeder limit; the
        steps already started keep theirs."""
        board = target_board(self.ems)
        if board.version == self._target_version:
            return False
        self._target_version = board.version
        sc = self.scenario
        start = self.start_s or 0.0
        target = board.series(sc.target_kw, start, sc.dt_s)
        target = np.minimum(target, board.limit_series(start, sc.dt_s, sc.steps))
        k = self.steps_started
        target[:k] = self.current.target_kw[:k]
        self.current = replace(self.current, target_kw=target)
        return True

    def window_limit_kw(self, k: int) -> float | None:
        """The target board's feeder limit in step ``k`` (kW; ``None``: none), re-read
        when the board's version changed (the feeder watch asks at every meter sample)."""
        board = target_board(self.ems)
        if board.version != self._limit_version:
            self._limit_version = board.version
            sc = self.scenario
            self._limits = board.limit_series(self.start_s or 0.0, sc.dt_s, sc.steps)
        limit = float(self._limits[k])
        return None if limit == np.inf else limit

    def held_agents(self) -> frozenset[str]:
        """The agents demand-response events hold now (board holds, EMS clock)."""
        return target_board(self.ems).held_at(self.ems.clock.now())

    def _member_held(self) -> bool:
        """Whether a battery or heater of the fleet is held now (it leaves at once)."""
        held = self.held_agents()
        return bool(held) and not held.isdisjoint((*self.fleet.battery_ids, *self.fleet.heater_ids))
