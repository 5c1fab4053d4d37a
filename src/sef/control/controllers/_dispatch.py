"""Shared real-time layer: water-heater event dispatch and battery rate allocation.

Water heaters (CTA-2045 semantics): a heater cannot be set to a power; it can be sent
Shed (setpoint setback: a running element stops, an idle one stays off), Load Up (heat
now to the top of the band) or End Shed (normal thermostat: a tank below the normal
band heats — the rebound). :class:`WaterHeaterDispatcher` realises an aggregate power
plan (kW) with such discrete events, choosing heaters by priority:

* less power needed: shed running heaters, most stored heat first;
* more power needed: end the shed of the coldest shed heaters (they rebound), then load
  up the coldest idle heaters that a Load Up starts;
* comfort guard, always: a shed heater whose stored heat falls below the guard level
  (``comfort_min_c`` + 2 K, mixed) is returned to normal, and no heater below it is shed;
* a heater keeps a command at least ``min_dwell_s`` (no chatter);
* at scale (issue 14): the step's goal is the plan clipped to the last measured fleet
  power ± ``max_step_kw`` (:func:`~sef.control.controllers._heaters.ramp_bound_kw`), at
  most :attr:`WaterHeaterDispatcher.max_switch_events` tanks are switched per step (large
  changes are staggered over minutes), and a Shed never runs out on its own: it is
  renewed, or ended on purpose (within the bound, coldest first; or when its tank is
  above the normal band, no rebound).

Its estimate of the fleet power for the step
(:class:`~sef.control.controllers._heaters.HeaterPowerEstimator`: persistence, the
commands just sent and their rebound, tanks reaching their setpoint, a learnt fleet
bias) lets the batteries fill the remainder at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sef.control.allocation import FleetAllocator, battery_limits_kw
from sef.control.controllers._heaters import HeaterPowerEstimator, ramp_bound_kw
from sef.control.controllers.base import WH_KEEP, WH_LOAD_UP, WH_NORMAL, WH_SHED, Observation
from sef.control.scenario import WATER_KWH_PER_L_K, Scenario
from sef.models.waterheater_dr import DRMode

__all__ = ["BatteryDispatcher", "FleetInfo", "WaterHeaterDispatcher"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FleetInfo:
    """Per-device constants a controller derives from the scenario (kWh, kW, s).

    Attributes:
        dt_s: step (s).
        b_e_min, b_e_max: planning energy window per battery (kWh, with SOC margin).
        b_rated_kw, b_eta_c, b_eta_d, b_standby_kw: battery rating and efficiencies.
        w_cap_kwh_per_k: heat capacity per heater (kWh/K).
        w_element_kw: element power per heater (kW).
        w_e_max: heat above inlet of a tank mixed at the setpoint (kWh).
        w_e_guard: comfort guard level per heater (kWh).
        w_e_normal_on: below this a normal thermostat heats (kWh, mixed estimate).
        w_e_loadup_on: below this a Load Up starts heating (kWh).
        w_e_lp_min: LP lower bound per heater (kWh).
        w_loss_kw: standby loss per heater at mid band (kW).
        w_draw_kw_per_lpm: heat per L/min of draw (kW per L/min).
    """

    dt_s: float
    b_e_min: float
    b_e_max: float
    b_rated_kw: float
    b_eta_c: float
    b_eta_d: float
    b_standby_kw: float
    w_cap_kwh_per_k: FloatArray
    w_element_kw: FloatArray
    w_e_max: FloatArray
    w_e_guard: FloatArray
    w_e_normal_on: FloatArray
    w_e_loadup_on: FloatArray
    w_e_lp_min: FloatArray
    w_loss_kw: FloatArray
    w_draw_kw_per_lpm: float

    @classmethod
    def from_scenario(cls, sc: Scenario) -> FleetInfo:
        """Derive the constants (planning margins from ``sc.control``)."""
        bp, wp, n = sc.battery_params, sc.wh_params, sc.n_heaters
        margin = sc.control.battery_soc_margin * bp.capacity_kwh

        def arr(name: str) -> FloatArray:
            return np.broadcast_to(np.asarray(getattr(wp, name), dtype=np.float64), (n,)).copy()

        cap = WATER_KWH_PER_L_K * arr("volume_l")
        sp, db, inlet = arr("setpoint_c"), arr("deadband_k"), arr("inlet_c")
        lu_db = np.minimum(sc.wh_dr.load_up_deadband_k, db)
        return cls(
            dt_s=sc.dt_s,
            b_e_min=bp.energy_min_kwh + margin,
            b_e_max=bp.energy_max_kwh - margin,
            b_rated_kw=bp.rated_power_kw,
            b_eta_c=bp.charge_efficiency,
            b_eta_d=bp.discharge_efficiency,
            b_standby_kw=bp.standby_kw,
            w_cap_kwh_per_k=cap,
            w_element_kw=arr("element_kw"),
            w_e_max=cap * (sp - inlet),
            w_e_guard=cap * (sc.comfort_min_c + 2.0 - inlet),
            w_e_normal_on=cap * (sp - db - inlet),
            w_e_loadup_on=cap * (sp - lu_db - inlet),
            w_e_lp_min=cap * (sc.control.wh_lp_min_mean_c - inlet),
            w_loss_kw=arr("ua_w_per_k") / 1000.0 * (sp - 0.5 * db - arr("ambient_c")),
            w_draw_kw_per_lpm=sc.wh_draw_kw_per_lpm(),
        )


def _first_by(key: FloatArray, idx: npt.NDArray[np.intp], k: int) -> npt.NDArray[np.intp]:
    """The ``k`` entries of ``idx`` with the smallest ``key`` (ties by index), in order;
    a partition first, so a large fleet is not sorted every step."""
    return _smallest(key[idx], idx, k)


def _smallest(vals: FloatArray, idx: npt.NDArray[np.intp], k: int) -> npt.NDArray[np.intp]:
    """:func:`_first_by` given the keys of ``idx`` (``vals = key[idx]``)."""
    if k <= 0 or idx.size == 0:
        return idx[:0]
    if idx.size > k:
        part = np.argpartition(vals, k - 1)[:k]
        idx, vals = idx[part], vals[part]
    return idx[np.lexsort((idx, vals))]


class WaterHeaterDispatcher:
    """Discrete Shed / Load Up / End Shed events toward an aggregate power (see module).

    Parameters:
        info: fleet constants.
        event_s: duration of each Shed / Load Up event (s).
        min_dwell_s: shortest time between two commands to one heater (s).
        max_step_kw: bound on the commanded change of fleet heater power per step (kW);
            default :func:`~sef.control.controllers._heaters.ramp_bound_kw`.
    """

    def __init__(
        self,
        info: FleetInfo,
        event_s: int,
        min_dwell_s: float = 300.0,
        max_step_kw: float | None = None,
    ) -> None:
        self.info = info
        self.event_s = int(event_s)
        self.min_dwell_s = min_dwell_s
        n = info.w_element_kw.shape[0]
        self.last_cmd_s = np.full(n, -np.inf)
        self.events = 0
        self.max_step_kw = (
            ramp_bound_kw(info.w_element_kw, info.dt_s) if max_step_kw is None else max_step_kw
        )
        self.estimator = HeaterPowerEstimator(info)
        #: mean element power (kW; 1 for an empty fleet), a constant of the fleet
        self.elem_kw = float(np.mean(info.w_element_kw)) if n else 1.0

    @property
    def max_switch_events(self) -> int:
        """Power-changing events per step (≥ 2): twice the ramp bound in elements, so the
        dispatcher can both move by ``max_step_kw`` and counter as much natural change."""
        return max(2, int(2.0 * self.max_step_kw / self.elem_kw + 1e-9))

    def _send(self, cmd: IntArray, idx: npt.NDArray[np.intp], code: int, t_s: float) -> None:
        cmd[idx] = code
        self.last_cmd_s[idx] = t_s
        self.events += int(idx.size)

    def guard(
        self, obs: Observation, cmd: IntArray, shed: npt.NDArray[np.intp] | None = None
    ) -> None:
        """Comfort guard: End Shed for shed heaters below the guard level (``shed``: the
        shed heaters, ascending, if known)."""
        if shed is None:
            shed = np.flatnonzero(obs.wh_mode == int(DRMode.SHED))
        low = shed[obs.wh_energy_kwh[shed] < self.info.w_e_guard[shed]]
        self._send(cmd, low, WH_NORMAL, obs.t_s)

    def _due(self, obs: Observation, cmd: IntArray) -> npt.NDArray[np.bool_]:
        """Shed heaters (no command yet) whose event runs out within two steps."""
        shed = (obs.wh_mode == int(DRMode.SHED)) & (cmd == WH_KEEP)
        due = shed & (obs.t_s - self.last_cmd_s >= self.event_s - 2 * obs.dt_s)
        return np.asarray(due, dtype=np.bool_)

    def renew(self, obs: Observation, cmd: IntArray) -> None:
        """Renew Shed events about to run out."""
        self._send(cmd, np.nonzero(self._due(obs, cmd))[0], WH_SHED, obs.t_s)

    def _ending(self, obs: Observation, cmd: IntArray) -> npt.NDArray[np.bool_]:
        shed = (obs.wh_mode == int(DRMode.SHED)) & (cmd == WH_KEEP)
        ending = shed & (obs.t_s + obs.dt_s - self.last_cmd_s >= self.event_s)
        return np.asarray(ending, dtype=np.bool_)

    def estimate_kw(self, obs: Observation, cmd: IntArray) -> FloatArray:
        """Expected power per heater over the step after ``cmd`` (kW; sheds running out
        in the step rebound; a tank reaching its setpoint stops)."""
        return self.estimator.per_heater(obs, cmd, self._ending(obs, cmd))

    def dispatch(self, obs: Observation, plan_kw: float | None) -> tuple[IntArray, float]:
        """Commands toward fleet power ``plan_kw`` (kW; ``None``: comfort guard only).

        The goal of the step is the plan clipped to the last measured fleet power ±
        ``max_step_kw``, and at most :attr:`max_switch_events` heaters are switched (the
        comfort guard's End Sheds are always sent and counted in the estimate). Sheds
        about to run out never expire on their own: they are renewed, or ended on
        purpose when more power is wanted (coldest first, within the bound) or when the
        tank is above the normal band (no rebound).

        Returns:
            ``(wh_command, estimated fleet power over the step in kW)``.
        """
        i = self.info
        self.estimator.learn(obs)
        cmd = np.full(obs.wh_mode.shape[0], WH_KEEP, dtype=np.int64)
        # only shed heaters get guard, renewal or end: work on them by index (a fleet's
        # masks cost more than the few heaters that change)
        shed = np.flatnonzero(obs.wh_mode == int(DRMode.SHED))
        self.guard(obs, cmd, shed)
        if plan_kw is None or cmd.size == 0:
            return cmd, self.estimator.fleet_kw(self.estimate_kw(obs, cmd))
        e = obs.wh_energy_kwh
        e_s, since_s = e[shed], obs.t_s - self.last_cmd_s[shed]
        due_s = (cmd[shed] == WH_KEEP) & (since_s >= self.event_s - 2 * obs.dt_s)
        # a due shed of a tank above the normal band ends without a rebound: end it
        self._send(cmd, shed[due_s & (e_s >= i.w_e_normal_on[shed])], WH_NORMAL, obs.t_s)
        due_s &= cmd[shed] == WH_KEEP
        due = shed[due_s]
        cmd[due] = WH_SHED  # provisional renewal (no power change); may become End Shed
        # the estimate: commanded heaters and sheds running out in the step (rebound)
        cmd_s = cmd[shed]
        ending_s = (cmd_s == WH_KEEP) & (obs.t_s + obs.dt_s - self.last_cmd_s[shed] >= self.event_s)
        acts = (cmd_s >= 0) | ending_s
        codes = np.where(ending_s[acts], WH_NORMAL, cmd_s[acts])
        p, running = self.estimator.after_commands(obs, shed[acts], codes)
        p_last = float(obs.wh_power_kw.sum())
        goal = float(np.clip(plan_kw, p_last - self.max_step_kw, p_last + self.max_step_kw))
        gap = goal - (float(p.sum()) + self.estimator.bias_kw)
        elem = self.elem_kw
        budget = self.max_switch_events
        est = self.estimator
        if gap < -0.5 * elem:
            # running, not shed, free (no command within the dwell), above the guard
            cand = running[obs.wh_mode[running] != int(DRMode.SHED)]
            cand = cand[obs.t_s - self.last_cmd_s[cand] >= self.min_dwell_s]
            cand = cand[e[cand] >= i.w_e_guard[cand]]
            cand = _smallest(-e[cand], cand, budget)
            take = int(np.searchsorted(np.cumsum(p[cand]), -gap - 0.5 * elem) + 1)
            self._send(cmd, cand[:take], WH_SHED, obs.t_s)
            est.update(p, obs, cand[:take], WH_SHED)
        elif gap > 0.5 * elem:
            m = min(budget, int(np.floor(gap / elem + 0.5)))
            free_s = ((cmd_s == WH_KEEP) & (since_s >= self.min_dwell_s)) | due_s
            cand = shed[free_s & (e_s < i.w_e_normal_on[shed])]
            cand = _smallest(e[cand], cand, m)
            self._send(cmd, cand, WH_NORMAL, obs.t_s)
            est.update(p, obs, cand, WH_NORMAL)
            m -= cand.size
            if m > 0:
                # free (never a command within the dwell), normal, idle, below the band
                lu = np.flatnonzero(e < i.w_e_loadup_on)
                lu = lu[obs.wh_mode[lu] == int(DRMode.NORMAL)]
                lu = lu[p[lu] == 0]
                lu = lu[obs.t_s - self.last_cmd_s[lu] >= self.min_dwell_s]
                lu = _smallest(e[lu], lu, m)
                self._send(cmd, lu, WH_LOAD_UP, obs.t_s)
                est.update(p, obs, lu, WH_LOAD_UP)
        self._send(cmd, due[cmd[due] == WH_SHED], WH_SHED, obs.t_s)
        return cmd, est.fleet_kw(p)

    def shed_all(self, obs: Observation) -> IntArray:
        """Shed every normal/Load-Up heater above the guard (baseline); keeps the guard."""
        cmd = np.full(obs.wh_mode.shape[0], WH_KEEP, dtype=np.int64)
        self.guard(obs, cmd)
        self.renew(obs, cmd)
        free = (cmd == WH_KEEP) & (obs.t_s - self.last_cmd_s >= self.min_dwell_s)
        ok = free & (obs.wh_mode != int(DRMode.SHED)) & (obs.wh_energy_kwh >= self.info.w_e_guard)
        self._send(cmd, np.nonzero(ok)[0], WH_SHED, obs.t_s)
        return cmd

    def end_all(self, obs: Observation) -> IntArray:
        """End Shed for every shed heater (baseline)."""
        cmd = np.full(obs.wh_mode.shape[0], WH_KEEP, dtype=np.int64)
        self.guard(obs, cmd)
        free = (cmd == WH_KEEP) & (obs.t_s - self.last_cmd_s >= self.min_dwell_s)
        ok = free & (obs.wh_mode == int(DRMode.SHED))
        self._send(cmd, np.nonzero(ok)[0], WH_NORMAL, obs.t_s)
        return cmd


class BatteryDispatcher:
    """Fleet power (kW) → integer per-battery rates within each battery's SOC window."""

    def __init__(self, info: FleetInfo) -> None:
        self.info = info
        self.allocator = FleetAllocator()

    def limits(self, energy_kwh: FloatArray) -> tuple[IntArray, IntArray]:
        """Integer (lo, hi) rates per battery for one step (kW)."""
        i = self.info
        return battery_limits_kw(
            energy_kwh, i.b_e_min, i.b_e_max, i.b_rated_kw, i.dt_s, i.b_eta_c, i.b_eta_d
        )

    def allocate(self, fleet_kw: float, energy_kwh: FloatArray) -> IntArray:
        """Integer rates summing to the fleet power (carry as in :class:`FleetAllocator`);
        weights = room in the requested direction (SOCs converge)."""
        lo, hi = self.limits(energy_kwh)
        i = self.info
        room = (i.b_e_max - energy_kwh) if fleet_kw >= 0 else (energy_kwh - i.b_e_min)
        return self.allocator.allocate(fleet_kw, lo, hi, np.maximum(room, 0.0))
