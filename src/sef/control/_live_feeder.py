"""The metered feeder in a live run: every meter sample as it arrives.

:class:`FeederWatch` runs beside the control loop of :class:`~sef.control.live.LiveControl`
(also while the app solves). For each new meter sample (``Net_Power_kW``: the mean since
the meter's previous sample) it

* adds the sample to the **per-step means** of the meter (kW, time-weighted over each
  sample's window): what the feeder really drew in each 1-min step, the figures a
  utility's interval meter would bill (``meter_peak_1min_kw``, ``meter_steps_over``:
  steps whose mean passed the scenario's base-load peak + the largest heater element);
* feeds the **feeder guard** (:class:`~sef.control._live_guard.FeederGuard`); a change of
  its extra discharge corrects the batteries' running plan at once; its limit is the
  objective's and at most a target-board window's (an event's capacity limit, read
  again when the board changes, also between steps);
* keeps the **Load Up budget** (:class:`~sef.control._live_guard.LoadUpBudget`) the
  control loop asks before it sends heaters a Load Up.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sef.control._live_fleet import battery_limits
from sef.control._live_guard import FeederGuard, LoadUpBudget, guard_limit_kw
from sef.control.allocation import allocate_integer

if TYPE_CHECKING:
    from sef.control.live import LiveControl

__all__ = ["FeederWatch"]

log = logging.getLogger("sef.control.live")

Event = tuple[str, int, int]

MAX_AHEAD_S = 300.0
"""Latest a meter sample's time may be ahead of the EMS clock (clock s) to be taken."""


class FeederWatch:
    """Meter samples of a live run: step means, the feeder guard, the Load Up budget.

    Args:
        live: the live run (its EMS registry, fleet, scenario, plans and clock).
        guard: hold the feeder limit with the batteries (``LiveControl.feeder_guard``).
    """

    def __init__(self, live: LiveControl, guard: bool = True) -> None:
        self.live = live
        self.guard_on = guard
        self.guard = FeederGuard()
        self.budget = LoadUpBudget()
        self.load_ups_held = 0
        self.wanted_kw = 0
        """The step's fleet battery power before the guard (kW, + = charge)."""
        steps = live.scenario.steps
        self._kw_s = np.zeros(steps)  # meter energy per step (kW·s)
        self._s = np.zeros(steps)  # seconds of meter samples per step
        self._last_ts: float | None = None
        self._interval = -1  # the control interval the running plan was last seen in
        self._bad_time_logged = False
        sc = live.scenario
        self.base_peak_kw = float(np.max(sc.base_expected_kw)) if steps else 0.0
        """The forecast base load's peak (kW): the guard's limit for ``track``."""

    # -- the loop ---------------------------------------------------------------------
    async def run(self, poll_s: float) -> None:
        """Look for a new meter sample every ``poll_s`` real seconds, until cancelled."""
        while True:
            await asyncio.sleep(poll_s)
            try:
                self.once()
            except Exception:  # the watch must outlive a bad sample or a fleet change
                log.exception("feeder watch: a meter sample could not be acted on")

    def once(self) -> None:
        """Take the meter's newest sample, if it is new."""
        live = self.live
        assert live.start_s is not None
        sample = live.meter_sample()
        if sample is None:
            return
        reading, ts = sample
        if not math.isfinite(ts) or ts > live.ems.clock.now() + MAX_AHEAD_S:
            # a broken or hostile meter's time: taken, it would hide every later sample
            if not self._bad_time_logged:
                log.warning("feeder watch: meter sample time %r is not plausible: ignored", ts)
                self._bad_time_logged = True
            return
        if self._last_ts is not None and ts <= self._last_ts:
            return
        prev, self._last_ts = self._last_ts, ts
        live.log_device_power()  # the sample is read against what the devices drew then
        if ts < live.start_s:
            return  # before the run: not the guard's to hold
        if prev is not None:
            self._bin(max(prev, live.start_s), ts, reading)
        sc = live.current
        # the step by the clock: a solve may hold the control loop past an interval end
        k = int(np.clip((ts - live.start_s) // sc.dt_s, 0, sc.steps - 1))
        limit = self.limit_kw(k)
        changed = self.guard_on and self.guard.sample(reading, ts, limit)
        if not live.fleet.batteries:
            self.guard.extra_kw = 0.0  # nothing to discharge: nothing to owe later
            return
        interval = k // max(sc.interval_steps, 1)
        running = live.running_fleet_kw(k)
        if interval != self._interval and running is not None:
            # the batteries moved on to their plan's next interval on their own clock (no
            # re-plan yet): that row is what the app wants now; the extra still applies
            self._interval = interval
            if live.steps_started < interval * sc.interval_steps:  # the loop is behind
                self.wanted_kw = running
                changed = changed or self.guard.extra_kw > 0.0
        if not changed:
            return
        energy = live.observe(k, 0.0).battery_energy_kwh
        lo, hi = battery_limits(live.fleet, energy, sc.dt_s)
        # the guard cannot add more than the batteries can still discharge (nor less than 0)
        room = float(self.wanted_kw - lo.sum())
        self.guard.extra_kw = max(0.0, min(self.guard.extra_kw, room))
        calls = live.correct_batteries(k, self.battery_rates(lo, hi), energy)
        log.debug(
            "feeder guard at %.0f s (%.1f s after the sample), step %d: meter %.2f kW, "
            "limit %s kW, extra discharge %.1f kW, %d calls",
            ts - live.start_s,
            live.ems.clock.now() - ts,
            k,
            reading,
            limit,
            self.guard.extra_kw,
            calls,
        )

    # -- what the control loop asks -----------------------------------------------------
    def limit_kw(self, k: int) -> float | None:
        """The feeder limit at step ``k`` (kW; ``None``: none): the objective's, and at
        most the target board's window limit (an event's, whatever the objective)."""
        sc = self.live.current
        limit = guard_limit_kw(sc.objective, float(sc.target_kw[k]), self.base_peak_kw)
        window = self.live.window_limit_kw(k)
        if window is None:
            return limit
        return window if limit is None else min(limit, window)

    def battery_rates(
        self, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Per-battery rates (kW) for the step's wanted fleet power less the guard's extra."""
        return allocate_integer(self.guard.fleet_kw(self.wanted_kw, lo), lo, hi)

    def budget_heaters(self, k: int, commands: dict[int, list[Event]]) -> dict[int, list[Event]]:
        """The heater commands of step ``k`` less the Load Ups the feeder has no room for
        (only with a meter and the guard). End Sheds (rebounds) count, never held."""
        live = self.live
        sample = live.meter_sample()
        if sample is None or not self.guard_on:
            return commands
        now = live.ems.clock.now()
        limit = self.limit_kw(k)
        kept: dict[int, list[Event]] = {}
        for j in sorted(commands):
            seq = commands[j]
            element = live.fleet.heaters[j].element_kw
            first = seq[0][0] if seq else ""
            if first == "charge":
                if not self.budget.allow(sample[0], limit, now, element):
                    self.load_ups_held += 1
                    continue
                self.budget.sent(now, element)
            elif first == "endshed":
                self.budget.sent(now, element)
            kept[j] = seq
        return kept

    # -- the meter's step means -----------------------------------------------------------
    def _bin(self, t0: float, t1: float, kw: float) -> None:
        """Add ``kw`` (kW) over clock time ``(t0, t1]`` to the steps it overlaps."""
        live = self.live
        assert live.start_s is not None
        dt = live.scenario.dt_s
        a, b = (t0 - live.start_s) / dt, (t1 - live.start_s) / dt
        first, last = int(np.floor(a)), int(np.ceil(b))
        for k in range(max(first, 0), min(last, self._s.size)):
            overlap = (min(b, k + 1) - max(a, k)) * dt
            if overlap > 0:
                self._kw_s[k] += kw * overlap
                self._s[k] += overlap

    def step_means_kw(self, steps: int) -> npt.NDArray[np.float64]:
        """The meter's mean (kW) of each of the first ``steps`` steps (NaN: no sample)."""
        s = self._s[:steps]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s > 0, self._kw_s[:steps] / s, np.nan)

    def figures(self, steps: int) -> dict[str, float]:
        """Summary figures of the run's first ``steps`` steps (``SimResult.extra``)."""
        means = self.step_means_kw(steps)
        sc = self.live.scenario
        heaters = self.live.fleet.heaters
        element = max((h.element_kw for h in heaters), default=0.0)
        allowed = float(np.max(sc.base_kw[:steps])) + element if steps else np.nan
        have = np.isfinite(means)
        return {
            "guard_actions": float(self.guard.actions),
            "load_ups_held": float(self.load_ups_held),
            "meter_peak_1min_kw": float(np.max(means[have])) if have.any() else float("nan"),
            "meter_steps_over": float(np.sum(means[have] > allowed)),
            "meter_allowed_kw": allowed,
        }
