"""Real-time layer for EV chargers and PV inverters (issue 17), and the LP's EV groups.

EVs (OCPP chargers: a limit per charger, AC kW):

* :func:`ev_groups`: the plugged EVs (and, with perfect foresight, the sessions that will
  arrive) grouped by (first LP interval, deadline interval) — a departure cohort — with
  their summed AC need and power bound per interval (rating × plugged share of the
  interval), for :mod:`._lp_der`. An EV departing after the horizon owes by the horizon end
  only what it could not still get at its rating afterwards (``need − P·(dep − t_H)``).
* :meth:`EVDispatcher.must_kw`: the least each EV must charge in this step so that it can
  still reach its need at its rating by departure less a reserve (``reserve_s``, 30 min:
  taper, a late forecast); a hard floor of every step.
* :meth:`EVDispatcher.allocate`: a fleet power (kW) → per-charger limits: every EV its
  must-run power, the rest **least laxity first** (laxity = time to departure − time to
  charge the remaining need at the EV's rating), each EV up to its acceptance. So the
  cohort plan is realised per EV and no EV is left behind for its cohort.

PV (SunSpec 704 active-power limit, ``WMaxLimPct`` per inverter): :func:`pv_limits`
turns a ceiling on the fleet's output (kW) into per-inverter limits, each system the
same share of its estimated available power, summing to the ceiling. A ceiling, not an
amount: a cloud passing lowers the output and the curtailment with it, and a PV surge
within the step is held at the ceiling at once (the batteries follow at the next step).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sef.control.controllers._lp_der import EVGroup
from sef.control.controllers.base import EVArrivals, Observation

__all__ = ["EVDispatcher", "ev_groups", "pv_limits"]

FloatArray = npt.NDArray[np.float64]
_H = 3600.0


def ev_groups(
    obs: Observation, arrivals: EVArrivals | None, interval_s: float, n_int: int
) -> list[EVGroup]:
    """LP groups of the plugged EVs (+ ``arrivals``) from ``obs.t_s`` over ``n_int``
    intervals of ``interval_s`` seconds (see module docstring)."""
    t0, t_end = obs.t_s, obs.t_s + n_int * interval_s
    live = obs.ev_need_kwh > 1e-6
    arr = [np.full(int(live.sum()), t0)]
    dep = [obs.ev_departure_s[live]]
    need = [obs.ev_need_kwh[live]]
    rate = [obs.ev_max_kw[live]]
    if arrivals is not None and arrivals.arrival_s.size:
        arr.append(np.maximum(arrivals.arrival_s, t0))
        dep.append(arrivals.departure_s)
        need.append(arrivals.need_kwh)
        rate.append(arrivals.max_kw)
    a, d, e, p = (np.concatenate(x) for x in (arr, dep, need, rate))
    ok = (d > t0) & (a < t_end) & (e > 1e-6) & (p > 0)
    a, d, e, p = a[ok], d[ok], e[ok], p[ok]
    if not a.size:
        return []
    starts = t0 + np.arange(n_int) * interval_s
    share = np.clip(
        (np.minimum(d[:, None], starts + interval_s) - np.maximum(a[:, None], starts)) / interval_s,
        0.0,
        1.0,
    )
    first = np.floor((a - t0) / interval_s).astype(np.int64)
    last = np.minimum(np.ceil((d - t0) / interval_s).astype(np.int64) - 1, n_int - 1)
    beyond = d > t_end
    owed = np.where(beyond, np.maximum(e - p * (d - t_end) / _H, 0.0), e)
    groups = []
    keys = first * (n_int + 1) + last
    for key in np.unique(keys):
        g = keys == key
        groups.append(
            EVGroup(
                energy_kwh=float(owed[g].sum()),
                max_kwh=float(e[g].sum()),
                p_max_kw=(p[g, None] * share[g]).sum(axis=0),
                deadline=int(last[g][0]),
            )
        )
    return groups


class EVDispatcher:
    """Per-charger limits from a fleet EV power (see module docstring).

    Parameters:
        reserve_s: time kept in hand before each departure by the must-run floor (s).
    """

    def __init__(self, reserve_s: float = 1800.0) -> None:
        self.reserve_s = reserve_s

    def must_kw(self, obs: Observation) -> FloatArray:
        """Least AC power per charger this step (kW) that keeps each EV's need reachable
        at its rating by its departure less the reserve."""
        rate = obs.ev_max_kw
        left_s = np.nan_to_num(obs.ev_departure_s - obs.t_s - obs.dt_s - self.reserve_s)
        after = rate * np.maximum(left_s, 0.0) / _H
        must = np.maximum(obs.ev_need_kwh - after, 0.0) / (obs.dt_s / _H)
        return np.asarray(np.minimum(must, rate), dtype=np.float64)

    def max_kw(self, obs: Observation) -> FloatArray:
        """Most AC power per charger this step (kW): acceptance, and no more than the need."""
        cap = obs.ev_need_kwh / (obs.dt_s / _H)
        return np.asarray(np.minimum(obs.ev_max_kw, cap), dtype=np.float64)

    def allocate(self, obs: Observation, fleet_kw: float) -> FloatArray:
        """Per-charger limits (kW) summing to ``fleet_kw`` clipped to [Σ must, Σ max]."""
        lo, hi = self.must_kw(obs), self.max_kw(obs)
        lo = np.minimum(lo, hi)
        out = lo.copy()
        extra = float(fleet_kw) - float(lo.sum())
        if extra <= 0:
            return out
        with np.errstate(divide="ignore", invalid="ignore"):
            need_s = np.where(obs.ev_max_kw > 0, obs.ev_need_kwh / obs.ev_max_kw * _H, np.inf)
        left_s = np.nan_to_num(obs.ev_departure_s - obs.t_s, nan=np.inf)
        laxity = np.where(
            np.isfinite(need_s), left_s - np.where(np.isfinite(need_s), need_s, 0.0), np.inf
        )
        room = hi - lo
        order = np.lexsort((np.arange(room.size), laxity))
        order = order[room[order] > 0]
        cum = np.cumsum(room[order])
        full = int(np.searchsorted(cum, extra))
        out[order[:full]] = hi[order[:full]]
        if full < order.size:
            rest = extra - (float(cum[full - 1]) if full else 0.0)
            out[order[full]] += rest
        return out


def pv_limits(
    available_kw: FloatArray, ac_kw: FloatArray, ceiling_kw: float, surge: float = 0.1
) -> FloatArray | None:
    """Per-inverter active-power limits (kW) that hold the fleet's output at or under
    ``ceiling_kw`` (``None``: no limit — the ceiling is above the fleet's rating, or more
    than ``surge`` × the fleet's rating above the estimate: a rise that large within one
    step is rare, and limits sent for it would hold back single systems rising under a
    passing cloud edge while the fleet has room).

    ``available_kw`` is the estimate per system for the step. Below it, each system gets the
    same share of its estimate, ``limit_i = available_i · ceiling / Σ available``, which
    curtails the excess in proportion. Above it, each system gets its estimate plus a
    share of the spare ``ceiling − Σ available`` in proportion to its rating, so a system
    is held only if it rises by more than its share within the step (a system at 0 at
    dawn still gets its share). Either way ``Σ limit_i ≤ ceiling`` whatever the PV does.
    """
    if ceiling_kw >= float(ac_kw.sum()):
        return None
    total = float(available_kw.sum())
    if ceiling_kw <= 0:
        return np.zeros(ac_kw.shape)
    if total <= ceiling_kw:
        spare = ceiling_kw - total
        if spare > surge * float(ac_kw.sum()):
            return None
        lim = available_kw + spare * ac_kw / float(ac_kw.sum())
        return np.asarray(np.minimum(lim, ac_kw), dtype=np.float64)
    return np.asarray(np.minimum(available_kw * (ceiling_kw / total), ac_kw), dtype=np.float64)
