"""Perfect-foresight optimum: the yardstick for the other controllers.

The same LP and real-time layer as the MPC, with the **realised** base load and draws
as forecast and a horizon reaching the scenario end (the whole day, shrinking), with the
same objective and end-energy rule (``return``: at the scenario end; ``free``: none) and
no forecast reserve for a cap (its forecast is exact). Re-planned every interval from
the measured state, so it is the best that the aggregate model and the same dispatch
can do in closed loop on the real (nonlinear) plant. ``first_plan`` is the open-loop
optimum of the whole day on the linear model; its ``rmse_kw`` (on the LP grid) is
reported as the ideal bound.
"""

from __future__ import annotations

from sef.control.controllers._lp import LPPlan
from sef.control.controllers.mpc import MPCController

__all__ = ["OptimalController"]


class OptimalController(MPCController):
    """Whole-horizon LP with perfect foresight (see module docstring)."""

    name = "optimal"
    perfect_foresight = True

    def horizon_intervals(self, step: int) -> int:
        """Intervals left to the scenario end."""
        return max(1, -(-(self.sc.steps - step) // self.m))

    def _day_ends(self, step: int, n_int: int) -> list[tuple[int, float, float]]:
        if self.end_energy == "free":
            return []
        w_ref = self.w_ref if self.w_ref is not None else 0.0
        return [(n_int - 1, self.b_ref, w_ref)]

    @property
    def first_plan(self) -> LPPlan | None:
        """The open-loop whole-day plan (``None`` before the first step)."""
        return self.plans[0][1] if self.plans else None
