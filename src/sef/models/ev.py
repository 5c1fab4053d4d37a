"""Electric-vehicle charging sessions, vectorized with numpy.

One :class:`EVFleet` steps one EV or a fleet of 100 000 with the same code (like
:class:`sef.models.battery.BatteryModel`): every quantity is a numpy array of shape
``(n,)``, one entry per EV *session* (one plug-in: arrival, departure, energy wanted).

Units: time in seconds on the fleet's own time axis (``t_s``; Unix s for an emulator, or
seconds from the start of a simulation), power in kW, energy in kWh.

Sign convention: power is the **AC power drawn from the grid** by the charger (kW, >= 0;
an EV here never discharges).

Per step of ``dt_s`` seconds under a charger limit ``limit_kw`` (AC kW, what the
charging profile allows)::

    P_ac = min(limit_kw, max_rate_kw * taper(soc))     while plugged and below target
    E_batt' = E_batt + efficiency * P_ac * t_plugged / 3600
    delivered_kwh' = delivered_kwh + P_ac * t_plugged / 3600

``t_plugged`` is the part of the step in which the EV is plugged in
(``arrival_s <= t < departure_s``), so an arrival or departure inside a step is
pro-rated and energy is conserved exactly. The EV stops at its *target* stored energy
(arrival energy + ``need_kwh``, at most the battery size): the driver's charge limit.
The last step lands exactly on the target (no overshoot); the returned power is then the
step's mean AC power.

**Taper** (constant-current / constant-voltage end of charge): above ``taper_soc``
(default 0.8) the EV accepts ``max_rate_kw * max(taper_floor, (1 - soc) / (1 -
taper_soc))``, evaluated at the state of charge at the start of each step (explicit;
steps of a minute or less keep the error small). ``taper_soc=1.0`` turns it off.

**Laxity** (how much an EV's charging can be delayed): ``laxity_s = time left to departure
- time to deliver the remaining energy at the fastest rate the EV accepts`` (the
charger's own rating and the taper ignored: optimistic). An EV with negative laxity can no
longer meet its departure energy. :meth:`EVFleet.meets_departure` checks a concrete plan
(``limit_kw`` for ``hold_s`` seconds, then full rate).

The session generator is in :mod:`sef.models.ev_sessions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["TAPER_FLOOR", "TAPER_SOC", "EVFleet", "EVSessions"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_S_PER_H = 3600.0
_EPS_KWH = 1e-9
TAPER_SOC = 0.8
"""State of charge (fraction) above which the EV's acceptance tapers (default)."""
TAPER_FLOOR = 0.1
"""Lowest fraction of ``max_rate_kw`` the taper goes down to (so a session finishes)."""


def _arr(value: npt.ArrayLike, n: int, name: str) -> FloatArray:
    out = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)))
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} must be finite")
    return out


@dataclass(frozen=True)
class EVSessions:
    """The plug-in sessions of ``n`` EVs (arrays of shape ``(n,)``, scalars broadcast).

    Attributes:
        arrival_s: plug-in time (s, on the fleet's time axis).
        departure_s: unplug time (s), > ``arrival_s``.
        need_kwh: energy the driver wants added to the battery by departure (kWh, >= 0,
            battery side).
        battery_kwh: usable battery capacity (kWh, > 0).
        max_rate_kw: the EV's on-board charger AC limit (kW, > 0).
        efficiency: AC -> battery efficiency of charger and on-board charger (0..1].
        soc0: state of charge at arrival (fraction 0..1).
    """

    arrival_s: FloatArray
    departure_s: FloatArray
    need_kwh: FloatArray
    battery_kwh: FloatArray
    max_rate_kw: FloatArray
    efficiency: FloatArray
    soc0: FloatArray

    @classmethod
    def build(
        cls,
        arrival_s: npt.ArrayLike,
        departure_s: npt.ArrayLike,
        need_kwh: npt.ArrayLike,
        *,
        battery_kwh: npt.ArrayLike = 60.0,
        max_rate_kw: npt.ArrayLike = 7.2,
        efficiency: npt.ArrayLike = 0.9,
        soc0: npt.ArrayLike = 0.3,
    ) -> EVSessions:
        """Sessions from arrays or scalars (broadcast to the longest); checks the values.

        Raises:
            ValueError: a value is not finite or out of range (names it).
        """
        n = max(np.size(v) for v in (arrival_s, departure_s, need_kwh, battery_kwh, soc0))
        s = cls(
            arrival_s=_arr(arrival_s, n, "arrival_s"),
            departure_s=_arr(departure_s, n, "departure_s"),
            need_kwh=_arr(need_kwh, n, "need_kwh"),
            battery_kwh=_arr(battery_kwh, n, "battery_kwh"),
            max_rate_kw=_arr(max_rate_kw, n, "max_rate_kw"),
            efficiency=_arr(efficiency, n, "efficiency"),
            soc0=_arr(soc0, n, "soc0"),
        )
        checks = {
            "departure_s > arrival_s": np.all(s.departure_s > s.arrival_s),
            "need_kwh >= 0": np.all(s.need_kwh >= 0),
            "battery_kwh > 0": np.all(s.battery_kwh > 0),
            "max_rate_kw > 0": np.all(s.max_rate_kw > 0),
            "0 < efficiency <= 1": np.all((s.efficiency > 0) & (s.efficiency <= 1)),
            "0 <= soc0 <= 1": np.all((s.soc0 >= 0) & (s.soc0 <= 1)),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid EV sessions: {', '.join(bad)}")
        return s

    @property
    def n(self) -> int:
        """Number of sessions."""
        return int(self.arrival_s.shape[0])


class EVFleet:
    """``n`` EVs charging under per-EV charger limits; see the module docstring.

    Attributes:
        sessions: the :class:`EVSessions` (read-only arrays).
        t_s: the fleet's time (s); :meth:`step` advances it by ``dt_s``.
        energy_kwh: energy stored in each battery (kWh).
        target_kwh: stored energy at which each EV stops (kWh) = arrival energy + need,
            at most the battery size.
        delivered_kwh: AC energy drawn since arrival (kWh): what the charger meters.
        power_kw: mean AC power of the last step (kW).
        taper_soc: state of charge above which acceptance tapers (fraction; 1 = no taper).
    """

    def __init__(
        self, sessions: EVSessions, *, t0_s: float = 0.0, taper_soc: float = TAPER_SOC
    ) -> None:
        """Start at time ``t0_s`` (s) with every battery at its arrival state of charge."""
        if not 0 < taper_soc <= 1:
            raise ValueError(f"taper_soc must be in (0, 1], got {taper_soc!r}")
        if not math.isfinite(t0_s):
            raise ValueError("t0_s must be finite")
        self.sessions = sessions
        self.taper_soc = taper_soc
        self.t_s = float(t0_s)
        self.energy_kwh: FloatArray = sessions.soc0 * sessions.battery_kwh
        self.target_kwh: FloatArray = np.minimum(
            self.energy_kwh + sessions.need_kwh, sessions.battery_kwh
        )
        self.delivered_kwh: FloatArray = np.zeros(sessions.n)
        self.power_kw: FloatArray = np.zeros(sessions.n)

    @property
    def n(self) -> int:
        """Number of EVs (sessions)."""
        return self.sessions.n

    # -- state ------------------------------------------------------------------------------
    def plugged(self, t_s: float | None = None) -> BoolArray:
        """Whether each EV is plugged in at ``t_s`` (default: now)."""
        t = self.t_s if t_s is None else t_s
        s = self.sessions
        return (s.arrival_s <= t) & (t < s.departure_s)

    @property
    def soc(self) -> FloatArray:
        """State of charge (fraction 0..1)."""
        return self.energy_kwh / self.sessions.battery_kwh

    @property
    def remaining_kwh(self) -> FloatArray:
        """Battery-side energy still wanted before departure (kWh, >= 0)."""
        return np.maximum(self.target_kwh - self.energy_kwh, 0.0)

    @property
    def remaining_ac_kwh(self) -> FloatArray:
        """AC energy the charger still has to deliver (kWh, >= 0)."""
        return self.remaining_kwh / self.sessions.efficiency

    def acceptance_kw(self) -> FloatArray:
        """The AC power each EV accepts now (kW): ``max_rate_kw`` times the taper; 0 at
        its target."""
        s = self.sessions
        frac = np.ones(self.n)
        if self.taper_soc < 1:
            frac = np.clip((1.0 - self.soc) / (1.0 - self.taper_soc), TAPER_FLOOR, 1.0)
        return np.where(self.remaining_kwh > _EPS_KWH, s.max_rate_kw * frac, 0.0)

    def time_left_s(self, t_s: float | None = None) -> FloatArray:
        """Seconds until each EV's departure (0 once gone)."""
        t = self.t_s if t_s is None else t_s
        return np.maximum(self.sessions.departure_s - t, 0.0)

    def min_time_s(self) -> FloatArray:
        """Shortest time to deliver the remaining energy at ``max_rate_kw`` (s)."""
        return self.remaining_ac_kwh / self.sessions.max_rate_kw * _S_PER_H

    def laxity_s(self, t_s: float | None = None) -> FloatArray:
        """Time each EV's charging can still be postponed (s): time left to departure
        (from its arrival if it has not come yet) minus :meth:`min_time_s`. Negative: the
        departure energy can no longer be met."""
        t = self.t_s if t_s is None else t_s
        s = self.sessions
        start = np.maximum(s.arrival_s, t)
        return np.maximum(s.departure_s - start, 0.0) - self.min_time_s()

    def required_kw(self, t_s: float | None = None) -> FloatArray:
        """The constant AC power (kW) that meets each EV's need exactly at departure
        (``inf`` when it is gone with energy still missing; 0 when nothing is missing)."""
        t = self.t_s if t_s is None else t_s
        left_h = np.maximum(self.sessions.departure_s - t, 0.0) / _S_PER_H
        need = self.remaining_ac_kwh
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(need > _EPS_KWH, need / left_h, 0.0)
        return np.asarray(out, dtype=np.float64)

    def meets_departure(
        self, limit_kw: npt.ArrayLike, hold_s: npt.ArrayLike, t_s: float | None = None
    ) -> BoolArray:
        """Whether each EV still gets its energy if charged at ``limit_kw`` (AC kW) for
        ``hold_s`` seconds (``inf`` = until departure), then at ``max_rate_kw`` until
        departure. Taper ignored (optimistic); a 1 Wh tolerance."""
        t = self.t_s if t_s is None else t_s
        s = self.sessions
        start = np.maximum(s.arrival_s, t)
        left_s = np.maximum(s.departure_s - start, 0.0)
        hold = np.minimum(np.broadcast_to(np.asarray(hold_s, dtype=np.float64), (self.n,)), left_s)
        lim = np.minimum(np.maximum(np.asarray(limit_kw, dtype=np.float64), 0.0), s.max_rate_kw)
        ac_kwh = (lim * hold + s.max_rate_kw * (left_s - hold)) / _S_PER_H
        return np.asarray(ac_kwh * s.efficiency >= self.remaining_kwh - 1e-3, dtype=np.bool_)

    # -- dynamics ---------------------------------------------------------------------------
    def step(self, dt_s: float, limit_kw: npt.ArrayLike) -> FloatArray:
        """Advance ``dt_s`` seconds with each charger limited to ``limit_kw`` (AC kW,
        broadcastable; NaN or negative means 0). Returns the mean AC power of the step
        per EV (kW) and advances :attr:`t_s`."""
        if not (dt_s >= 0 and math.isfinite(dt_s)):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        s = self.sessions
        lim = np.nan_to_num(np.broadcast_to(np.asarray(limit_kw, dtype=np.float64), (self.n,)))
        lim = np.maximum(lim, 0.0)
        if dt_s == 0:
            self.power_kw = np.zeros(self.n)
            return self.power_kw
        t0, t1 = self.t_s, self.t_s + dt_s
        plugged_s = np.clip(np.minimum(s.departure_s, t1) - np.maximum(s.arrival_s, t0), 0.0, dt_s)
        p = np.minimum(lim, self.acceptance_kw())
        # no overshoot: the AC energy that brings the battery exactly to its target
        ac_kwh = np.minimum(p * plugged_s / _S_PER_H, self.remaining_ac_kwh)
        self.energy_kwh = np.minimum(self.energy_kwh + ac_kwh * s.efficiency, s.battery_kwh)
        self.delivered_kwh = self.delivered_kwh + ac_kwh
        self.power_kw = ac_kwh * _S_PER_H / dt_s
        self.t_s = t1
        return self.power_kw

    def step_one(self, dt_s: float, limit_kw: float) -> float:
        """Scalar convenience for ``n == 1``: the step's mean AC power (kW)."""
        if self.n != 1:
            raise ValueError("step_one() needs a fleet with n == 1")
        return float(self.step(dt_s, limit_kw)[0])

    def missed_kwh(self) -> FloatArray:
        """Battery-side energy missing at departure for EVs already gone (kWh; 0 for
        EVs still plugged in or not yet arrived)."""
        gone = self.sessions.departure_s <= self.t_s
        return np.where(gone, self.remaining_kwh, 0.0)
