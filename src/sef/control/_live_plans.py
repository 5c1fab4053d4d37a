"""Plans the devices execute on their own clock: battery sequences and staggered heater
events (``EnergyMethod`` arguments).

* **Batteries**: at each re-plan (every control interval, 15 min) every battery gets its
  plan for the next ``plan_horizon_s`` (1 h) as one ``EnergyMethod`` sequence of
  interval-long events (four 15-min events), which supersedes the previous one on the
  agent. The first event is the controller's rate for this step, re-split by each
  battery's nameplate; the later ones split the controller's planned fleet battery power
  of those intervals (an app with an LP plan: ``app.plan.battery_kw``; otherwise the first
  rate is held) over the batteries by their limits along the projected stored energy.
  If the EMS goes silent the batteries finish the hour and then go idle.
* **Corrections** between re-plans: when the controller's fleet battery power for the
  step differs from the running plan's by ``correction_kw`` or more, the batteries whose
  rate changes get the rest of their plan again with the new rate until the interval
  ends (a superseding plan, not a one-step command).
* **Heaters**: the heaters commanded in one step start their events at times staggered
  evenly over ``stagger_s`` (``LiveControl``: 10 s): heater ``r`` of ``n`` first holds its
  present mode for ``r · stagger_s / n`` s, so the fleet never switches at one instant
  (the controller itself spreads larger changes over steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sef.control._live_fleet import LiveFleet, battery_limits
from sef.control.allocation import INT16_MAX, allocate_integer

__all__ = [
    "BatteryPlans",
    "Event",
    "battery_plan",
    "correction_events",
    "plan_events",
    "planned_fleet_kw",
    "stagger_heaters",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Event = tuple[str, int, int]

_HOLD = {0: "endshed", 1: "shed", 2: "charge"}
"""The event that keeps a heater in its present DR mode (normal, shed, load up)."""


def planned_fleet_kw(app: Any, step: int) -> list[float] | None:
    """The app's planned fleet battery power per control interval from ``step`` (kW), if
    it made a plan at ``step`` and exposes it (``app.plan.battery_kw``, ``app.plan_step``)."""
    plan = getattr(app, "plan", None)
    values = getattr(plan, "battery_kw", None)
    if values is None or getattr(app, "plan_step", None) != step:
        return None
    try:
        return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]
    except (TypeError, ValueError):
        return None


def battery_plan(
    first_kw: IntArray,
    future_fleet_kw: Sequence[float] | None,
    fleet: LiveFleet,
    energy_kwh: FloatArray,
    interval_s: float,
    intervals: int,
) -> IntArray:
    """Integer rates (kW, + = charge) per interval and battery, shape ``(intervals, n_b)``.

    Row 0 is ``first_kw``; row ``j`` splits ``future_fleet_kw[j]`` (or, without a plan,
    the sum of ``first_kw``) over the batteries by their limits at the stored energy
    projected to the start of interval ``j`` (nameplate efficiencies).
    """
    n_b = len(fleet.batteries)
    rates = np.zeros((intervals, n_b), dtype=np.int64)
    if n_b == 0 or intervals == 0:
        return rates
    rates[0] = first_kw
    eta_c = np.array([b.eta_c for b in fleet.batteries])
    eta_d = np.array([b.eta_d for b in fleet.batteries])
    hours = interval_s / 3600.0
    energy = np.asarray(energy_kwh, dtype=np.float64).copy()
    held = float(np.sum(first_kw))
    for j in range(1, intervals):
        r = rates[j - 1].astype(np.float64)
        energy += np.where(r > 0, r * eta_c, r / eta_d) * hours
        lo, hi = battery_limits(fleet, energy, interval_s)
        want = (
            future_fleet_kw[j] if future_fleet_kw is not None and j < len(future_fleet_kw) else held
        )
        rates[j] = allocate_integer(round(want), lo, hi)
    return rates


def _event(rate: int, duration_s: int) -> Event:
    rate = int(np.clip(rate, -INT16_MAX, INT16_MAX))
    if rate > 0:
        return ("charge", rate, duration_s)
    if rate < 0:
        return ("discharge", -rate, duration_s)
    return ("idle", 0, duration_s)


def plan_events(rates: IntArray, interval_s: float) -> list[list[Event]]:
    """One ``EnergyMethod`` sequence per battery: an event of ``interval_s`` per row."""
    duration = int(min(round(interval_s), INT16_MAX))
    return [[_event(int(r), duration) for r in rates[:, i]] for i in range(rates.shape[1])]


def correction_events(
    rates: IntArray, battery: int, first_kw: int, first_s: float, interval_s: float
) -> list[Event]:
    """Battery ``battery``'s superseding plan after a correction: ``first_kw`` for the
    ``first_s`` s left of this interval, then its later planned intervals."""
    duration = int(min(round(interval_s), INT16_MAX))
    events = [_event(first_kw, int(min(max(round(first_s), 1), INT16_MAX)))]
    return events + [_event(int(r), duration) for r in rates[1:, battery]]


def stagger_heaters(
    commands: dict[int, list[Event]], modes: IntArray, stagger_s: float
) -> dict[int, list[Event]]:
    """Heater event lists with start times staggered evenly over ``stagger_s`` (s).

    The ``n`` heaters commanded in one step, in index order: heater ``r`` first holds its
    present mode (``modes``: 0 normal, 1 shed, 2 load up) for ``round(r·stagger_s/n)`` s;
    the first starts at once.
    """
    out: dict[int, list[Event]] = {}
    ordered = sorted(commands)
    n = len(ordered)
    for rank, idx in enumerate(ordered):
        delay = int(min(round(rank * stagger_s / n), INT16_MAX)) if n else 0
        hold = _HOLD.get(int(modes[idx]) if idx < len(modes) else 0, "endshed")
        out[idx] = ([(hold, 0, delay)] if delay > 0 else []) + list(commands[idx])
    return out


@dataclass
class BatteryPlans:
    """The batteries' running plan: sent whole at re-plans, corrected in between.

    Attributes:
        horizon_s: length of each plan (s).
        correction_kw: fleet power change (kW) that re-sends the plans between re-plans.
        plan: rates per interval and battery (kW), ``None`` before the first.
        step: the step the plan was made at.
        sent: plans sent (one per re-plan); ``corrections``: corrections sent.
    """

    horizon_s: float = 3600.0
    correction_kw: float = 1.0
    plan: IntArray | None = None
    step: int = 0
    sent: int = 0
    corrections: int = 0

    def update(
        self,
        step: int,
        replan: bool,
        rates: IntArray,
        future_fleet_kw: Sequence[float] | None,
        fleet: LiveFleet,
        energy_kwh: FloatArray,
        interval_steps: int,
        dt_s: float,
        later_offset_kw: float = 0.0,
    ) -> list[tuple[str, list[Event]]]:
        """The ``EnergyMethod`` calls (agent id, events) for ``step``: every battery's new
        plan at a re-plan (or the first step), the changed batteries' corrected plans when
        ``rates`` (kW, this step's) differ from the plan's by ``correction_kw`` or more.

        ``later_offset_kw``: a correction's later intervals discharge this much more (kW,
        the feeder guard's extra: it holds past the interval end if no re-plan comes); the
        plan kept is the app's, without it."""
        ids = fleet.battery_ids
        interval_s = interval_steps * dt_s
        if replan or self.plan is None or self.plan.shape[1] != len(ids):
            n_int = max(1, round(self.horizon_s / interval_s))
            self.plan = battery_plan(rates, future_fleet_kw, fleet, energy_kwh, interval_s, n_int)
            self.step = step
            self.sent += 1
            return list(zip(ids, plan_events(self.plan, interval_s), strict=True))
        self._roll(step, interval_steps)
        if abs(int(rates.sum()) - int(self.plan[0].sum())) < self.correction_kw:
            return []
        left_s = (self.step + interval_steps - step) * dt_s
        sent = self.plan.copy()
        if later_offset_kw > 0.0 and sent.shape[0] > 1:
            lo, hi = battery_limits(fleet, energy_kwh, interval_s)
            for j in range(1, sent.shape[0]):
                sent[j] = allocate_integer(int(np.floor(sent[j].sum() - later_offset_kw)), lo, hi)
        changed = np.nonzero((rates != self.plan[0]) | np.any(sent[1:] != self.plan[1:], axis=0))
        calls = [
            (ids[i], correction_events(sent, i, int(rates[i]), left_s, interval_s))
            for i in changed[0].tolist()
        ]
        self.plan[0] = rates
        self.corrections += 1
        return calls

    def running_fleet_kw(self, step: int, interval_steps: int) -> int | None:
        """The fleet power (kW) the batteries run in ``step``'s interval by the plan
        (rolled on by the clock); ``None`` before the first plan."""
        self._roll(step, interval_steps)
        return None if self.plan is None else int(self.plan[0].sum())

    def _roll(self, step: int, interval_steps: int) -> None:
        """Move the running plan on to the interval ``step`` is in (the batteries run it
        on their own clock when no re-plan came: a late solve, a failed app), so that a
        correction's first event lasts the rest of *that* interval."""
        if self.plan is None or interval_steps <= 0:
            return
        passed = (step - self.step) // interval_steps
        if passed <= 0:
            return
        rows = self.plan.shape[0]
        keep = self.plan[min(passed, rows - 1) :]
        self.plan = keep.copy()
        self.step += passed * interval_steps

    def hold(self, fleet: LiveFleet, interval_s: float, step: int) -> list[tuple[str, list[Event]]]:
        """Bridge a late re-plan: every battery keeps its running rate (``plan[0]``, kW)
        for one more interval, then its later planned intervals; sent at the re-plan step
        before the app solves. Without it the batteries run the old plan's next interval
        (planned an interval ago, without the corrections) until the new plan arrives: at
        720x the MPC's solve is 50-80 simulated s, and those were the demo's worst peaks.
        The held plan is the running plan from ``step`` on (corrections until the new
        plan last the rest of this interval). Nothing when there is no plan or the fleet
        changed."""
        plan = self.plan
        if plan is None or plan.shape[1] != len(fleet.battery_ids):
            return []
        self.plan = plan = np.vstack([plan[:1], plan[2:]])
        self.step = step
        duration = int(min(round(interval_s), INT16_MAX))
        return [
            (agent_id, [_event(int(r), duration) for r in plan[:, i]])
            for i, agent_id in enumerate(fleet.battery_ids)
        ]
