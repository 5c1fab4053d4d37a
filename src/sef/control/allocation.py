"""Integer kW rates for a fleet, and decisions as ``EnergyMethod`` event sequences.

``EnergyMethod`` rates are int16 kW, so a fractional fleet power (kW) must become integer
per-battery rates. :func:`allocate_integer` splits an integer total over the batteries
in proportion to weights (each battery's room in the requested direction, so SOCs
converge), never beyond each battery's integer limits, and rounds by the
**largest-remainder** method so the rates add up exactly to the total.

The fractional part of the fleet request is **carried** to the next step by
:class:`FleetAllocator` (first-order sigma-delta): the integer totals then average to the
requested power over time and the carry stays within ±0.5 kW — at 1-minute steps the
error is 0.5 kW for one minute, not a lasting bias. (The alternative, exact within the
step, is time-sharing by one battery: ``[("discharge", 3, 40), ("discharge", 2, 20)]``
for 2.67 kW over 60 s; the event format allows it, the simulator does not need it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sef.control.controllers.base import WH_KEEP, WH_LOAD_UP, WH_NORMAL, WH_SHED, Decision

__all__ = [
    "INT16_MAX",
    "DeviceEvents",
    "FleetAllocator",
    "allocate_integer",
    "battery_limits_kw",
    "decision_to_events",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
INT16_MAX = 32767
Event = tuple[str, int, int]


def battery_limits_kw(
    energy_kwh: FloatArray,
    e_min_kwh: float,
    e_max_kwh: float,
    rated_kw: float,
    dt_s: float,
    eta_c: float = 1.0,
    eta_d: float = 1.0,
) -> tuple[IntArray, IntArray]:
    """Integer AC power limits (kW) for one step: ``(lo <= 0, hi >= 0)`` per battery.

    ``lo`` is minus the discharge power the stored energy above ``e_min_kwh`` sustains
    for ``dt_s`` (and the rating), ``hi`` the charge power the room below ``e_max_kwh``
    takes; both rounded toward zero so an integer rate never hits an SOC limit.
    """
    hours = dt_s / 3600.0
    dis = np.minimum(rated_kw, np.maximum(energy_kwh - e_min_kwh, 0.0) * eta_d / hours)
    chg = np.minimum(rated_kw, np.maximum(e_max_kwh - energy_kwh, 0.0) / eta_c / hours)
    return -np.floor(dis + 1e-9).astype(np.int64), np.floor(chg + 1e-9).astype(np.int64)


def allocate_integer(
    total_kw: int, lo_kw: IntArray, hi_kw: IntArray, weights: FloatArray | None = None
) -> IntArray:
    """Split an integer fleet power into integer per-device rates (kW, + = charge).

    Parameters:
        total_kw: fleet power (kW, integer); clipped to ``[sum(lo), sum(hi)]``.
        lo_kw: lowest rate per device (kW, ``<= 0``).
        hi_kw: highest rate per device (kW, ``>= 0``).
        weights: share weights (>= 0); default: each device's limit in the direction
            of ``total_kw`` (equal utilisation).

    Returns:
        Integer rates, ``lo <= r <= hi``, ``sum(r) == clip(total, sum(lo), sum(hi))``.
    """
    lo = np.asarray(lo_kw, dtype=np.int64)
    hi = np.asarray(hi_kw, dtype=np.int64)
    n = lo.shape[0]
    total = int(np.clip(total_kw, lo.sum(), hi.sum()))
    if n == 0 or total == 0:
        return np.zeros(n, dtype=np.int64)
    sign = 1 if total > 0 else -1
    cap = (hi if sign > 0 else -lo).astype(np.float64)
    w = cap.copy() if weights is None else np.asarray(weights, dtype=np.float64) * (cap > 0)
    if w.sum() <= 0:
        w = cap.copy()
    want = float(abs(total))
    share = np.zeros(n)
    free = cap > 0
    for _ in range(n):  # water-filling: cap shares at the limits, redistribute the excess
        rest = want - share[~free].sum()
        share[free] = rest * w[free] / w[free].sum()
        over = free & (share > cap)
        if not over.any():
            break
        share[over] = cap[over]
        free &= ~over
        if not free.any() or w[free].sum() <= 0:
            break
    share = np.minimum(share, cap)
    base = np.floor(share + 1e-9)
    missing = round(float(want - base.sum()))
    frac = np.where(base < cap, share - base, -np.inf)
    if missing > 0:  # +1 kW to the largest remainders first; then any device with room
        order = np.argsort(-frac, kind="stable")
        room = order[base[order] < cap[order]]
        base[room[:missing]] += 1
    return (sign * base).astype(np.int64)


@dataclass
class FleetAllocator:
    """Integer allocation with the fractional remainder carried to the next step.

    Attributes:
        carry_kw: remainder carried from the last step (kW), ``|carry| <= 0.5`` unless
            the fleet limits bound the request (the carry is then dropped).
    """

    carry_kw: float = 0.0

    def allocate(
        self, fleet_kw: float, lo_kw: IntArray, hi_kw: IntArray, weights: FloatArray | None = None
    ) -> IntArray:
        """Integer rates (kW) for a fractional fleet power ``fleet_kw`` (kW, + = charge)."""
        request = float(fleet_kw) + self.carry_kw
        total = round(request)
        lo_sum, hi_sum = int(np.sum(lo_kw)), int(np.sum(hi_kw))
        bounded = total < lo_sum or total > hi_sum
        total = min(max(total, lo_sum), hi_sum)
        self.carry_kw = 0.0 if bounded else request - total
        return allocate_integer(total, lo_kw, hi_kw, weights)


@dataclass(frozen=True)
class DeviceEvents:
    """``EnergyMethod`` argument per device: lists of ``(cmd, rate_kW, duration_s)``.

    Attributes:
        batteries: one event list per battery (always sent: it replaces the last one).
        water_heaters: event lists only for heaters whose mode changes (index → events).
    """

    batteries: list[list[Event]]
    water_heaters: dict[int, list[Event]]


def _battery_events(rate: int, duration_s: int) -> list[Event]:
    if rate > 0:
        return [("charge", rate, duration_s)]
    if rate < 0:
        return [("discharge", -rate, duration_s)]
    return [("idle", 0, duration_s)]


def decision_to_events(
    decision: Decision, plan_kw: Sequence[npt.ArrayLike] | None = None
) -> DeviceEvents:
    """Turn a :class:`Decision` into per-device ``EnergyMethod`` event lists.

    Battery ``i`` gets ``charge``/``discharge``/``idle`` at ``|rate|`` for
    ``decision.battery_duration_s`` (the next decision replaces it). With ``plan_kw``
    (further per-step integer rate arrays) the list continues with those, one event per
    step, so an agent keeps following the plan if the EMS goes silent. Heaters: Shed →
    ``("shed", 0, d)``, Load Up → ``("charge", 0, d)`` (the UCM maps ``charge`` to
    CTA-2045 Load Up), back to normal → ``("endshed", 0, 0)``.

    Raises:
        ValueError: a rate or duration does not fit int16.
    """
    dur = int(decision.battery_duration_s)
    wh_dur = int(decision.wh_duration_s)
    steps = [np.asarray(decision.battery_kw, dtype=np.int64)]
    steps += [np.asarray(p, dtype=np.int64) for p in (plan_kw or [])]
    for arr in steps:
        if arr.size and int(np.abs(arr).max()) > INT16_MAX:
            raise ValueError("battery rate does not fit int16 kW")
    if not (0 <= dur <= INT16_MAX and 0 <= wh_dur <= INT16_MAX):
        raise ValueError("event durations must be 0..32767 s (int16)")
    batteries: list[list[Event]] = []
    for i in range(steps[0].shape[0]):
        events: list[Event] = []
        for arr in steps:
            events += _battery_events(int(arr[i]), dur)
        batteries.append(events)
    heaters: dict[int, list[Event]] = {}
    cmd = np.asarray(decision.wh_command)
    for idx in np.nonzero(cmd != WH_KEEP)[0].tolist():
        code = int(cmd[idx])
        if code == WH_SHED:
            heaters[idx] = [("shed", 0, wh_dur)]
        elif code == WH_LOAD_UP:
            heaters[idx] = [("charge", 0, wh_dur)]
        elif code == WH_NORMAL:
            heaters[idx] = [("endshed", 0, 0)]
        else:
            raise ValueError(f"unknown water-heater command code {code}")
    return DeviceEvents(batteries, heaters)
