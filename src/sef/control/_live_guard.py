"""The feeder guard in live mode: a do-no-harm peak limit held with the batteries against
every meter sample, between the control app's steps and during its solves.

The app decides once a step (1 min), on telemetry that lags the devices, and its LP solve
can take several steps of a fast demo clock; a heater it loads up (or one that recovers on
its own) then shows on the meter minutes before the app reacts. The guard reads each new
meter sample as it arrives (:class:`FeederGuard`) and keeps ``extra_kw``, the discharge
it adds to the batteries' running rates, with integral action on the meter:

* a sample above the limit adds its excess (kW) to ``extra_kw`` at once;
* a sample more than ``release_band_kw`` below the limit gives back ``release_gain`` of
  the room, so the app's own rates take over again smoothly;
* after a change the guard waits two meter periods before it acts on the same excess
  again or releases, since the first samples after a battery change still hold power
  drawn before it (the meter's reading is the mean over its poll); an excess that grew
  meanwhile (another heater switched on) is new load and is added at once.

The limit is the one a utility asks of any demand response: never a new feeder peak.
For ``track`` it is the larger of the step's target and the forecast base load's peak
over the scenario (the feeder's peak without the fleet); for ``cap`` it is the cap; a
``floor`` sets no upper limit. Whatever the batteries can still discharge (their rate
and SOC limits) is what the guard can add; it cannot command heaters (a shed takes the
UCM's CTA-2045 round trip, minutes at 720x).

What the guard cannot undo it must not cause: :class:`LoadUpBudget` holds back a heater's
Load Up while the meter's last reading plus the elements of the Load Ups and End Sheds
sent and not yet seen by the meter plus this heater's element would pass the limit (the
app re-commands it at a later step when there is room). The 720x demo's worst peak was
the app loading up all three tanks of the 3+3 fleet in its first two minutes, on
telemetry that showed them nearly full: +13.5 kW at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["FeederGuard", "LoadUpBudget", "guard_limit_kw"]

FloatArray = npt.NDArray[np.float64]


def guard_limit_kw(objective: str, target_kw: float, base_peak_kw: float) -> float | None:
    """The feeder limit (kW) for a step: ``cap``: the cap; ``track``: max(target, the
    forecast base peak); ``floor``: none (``None``)."""
    if objective == "floor":
        return None
    if objective == "cap":
        return target_kw
    return max(target_kw, base_peak_kw)


@dataclass
class FeederGuard:
    """Integral peak guard on the meter (module docstring).

    Attributes:
        release_band_kw: room below the limit (kW) the guard keeps before it gives back
            any of its extra discharge.
        release_gain: fraction of the room beyond the band given back per sample (1/1).
        settle_periods: meter periods to wait after a change before acting again on
            the excess it answered (or releasing).
        new_load_kw: while settling, an excess this much (kW) above the one answered is
            new load and is added at once.
        extra_kw: discharge the guard adds to the batteries' running rates (kW, >= 0).
        actions: changes of ``extra_kw`` made (count).
    """

    release_band_kw: float = 1.0
    release_gain: float = 0.5
    settle_periods: float = 2.0
    new_load_kw: float = 0.5
    extra_kw: float = 0.0
    actions: int = 0
    _last_ts: float | None = None
    _period_s: float | None = None
    _hold_until: float = float("-inf")
    _answered_kw: float = 0.0  # the excess the last change answered (kW)

    def sample(self, reading_kw: float, ts: float, limit_kw: float | None) -> bool:
        """Take a meter sample ``reading_kw`` (kW, + = import) taken at ``ts`` (clock s);
        returns whether ``extra_kw`` changed. A sample no newer than the last is ignored."""
        if self._last_ts is not None and ts <= self._last_ts:
            return False
        if self._last_ts is not None:
            gap = ts - self._last_ts
            self._period_s = gap if self._period_s is None else 0.8 * self._period_s + 0.2 * gap
        self._last_ts = ts
        if limit_kw is None or not np.isfinite(reading_kw):
            changed = self.extra_kw != 0.0
            self.extra_kw = 0.0
            return changed
        excess = reading_kw - limit_kw
        if ts < self._hold_until:
            # settling: the samples still hold the power the last change answered; only
            # an excess beyond that is new load (a second heater switching on), added now
            if excess <= self._answered_kw + self.new_load_kw:
                return False
            self.extra_kw += excess - self._answered_kw
            self._answered_kw = excess
            self.actions += 1
            self._hold_until = ts + self.settle_periods * (self._period_s or 0.0)
            return True
        if excess > 0.0:
            new = self.extra_kw + excess
        else:
            room = max(0.0, -excess - self.release_band_kw)
            new = max(0.0, self.extra_kw - self.release_gain * room)
        if abs(new - self.extra_kw) < 1e-9:
            return False
        self.extra_kw = new
        self._answered_kw = max(excess, 0.0)
        self.actions += 1
        self._hold_until = ts + self.settle_periods * (self._period_s or 0.0)
        return True

    def fleet_kw(self, wanted_kw: int, lo: npt.NDArray[np.int64]) -> int:
        """The fleet battery power (kW, + = charge) to run: ``wanted_kw`` less the guard's
        extra discharge, rounded to whole kW toward discharge, not below the fleet's
        discharge limit (``lo``: per battery, kW <= 0)."""
        if self.extra_kw <= 0.0:
            return wanted_kw
        run = int(np.floor(wanted_kw - self.extra_kw))
        return max(run, int(lo.sum()))


@dataclass
class LoadUpBudget:
    """Room on the feeder for heater elements switched on by commands (module docstring).

    Attributes:
        pending_s: how long (clock s) a command's element counts as not yet on the meter.
    """

    pending_s: float = 120.0
    _sent: list[tuple[float, float]] = field(default_factory=list)  # (clock s, element kW)

    def pending_kw(self, now_s: float) -> float:
        """Elements (kW) commanded on in the last ``pending_s`` (clock s)."""
        self._sent = [(t, kw) for t, kw in self._sent if now_s - t < self.pending_s]
        return sum(kw for _, kw in self._sent)

    def allow(
        self, meter_kw: float, limit_kw: float | None, now_s: float, element_kw: float
    ) -> bool:
        """Whether a Load Up of a heater with ``element_kw`` (kW) fits under ``limit_kw``
        with the meter at ``meter_kw`` (kW); no limit: always."""
        if limit_kw is None:
            return True
        return meter_kw + self.pending_kw(now_s) + element_kw <= limit_kw

    def sent(self, now_s: float, element_kw: float) -> None:
        """Count a command that may switch on ``element_kw`` (kW) at ``now_s`` (clock s)."""
        self._sent.append((now_s, element_kw))
