"""Model-predictive control: re-plan every control interval with the aggregate LP.

Every ``interval_min`` (15 min) the MPC solves :func:`sef.control.controllers._lp.solve_plan`
over a receding horizon of ``horizon_h`` (24 h) from the measured fleet energies and the
forecast (``ProfileForecaster``: standard profile + measured residual; expected draws).
The scenario's objective (``track`` / ``cap`` / ``floor``) is the LP's. With
``end_energy = "return"`` the horizon's day ends carry the day-end constraint (battery
energy back to its initial total, heater heat back to at least its initial total — a
daily energy-neutral schedule), also at the horizon end; with ``"free"`` none.

Between re-plans, every step (1 min), the real-time layer
(:mod:`sef.control.controllers._dispatch`) realises the plan of the current interval:
the water heaters are sent discrete Shed / Load Up / End Shed events toward the planned
heater power, and the batteries make the step's net load — ``target + planned
deviation`` for ``track``; for ``cap`` / ``floor`` the planned battery power, kept inside
``limit ∓ margin`` (a learnt one-step error margin, :meth:`MPCController.margin_kw`) —
given the forecast base load of the step and the estimated heater power.

With PV and EVs (issue 17) the LP also plans PV curtailment (a last resort, only against
the export limit) and the EVs' charging by departure cohort (:mod:`._lp_der`); each step
:mod:`._der_dispatch` realises it per EV (must-run floor, least laxity first) and
:meth:`MPCController._der_step` keeps the net inside the cap (EVs down to their floor when
the batteries cannot) and above the export limit (batteries, then EVs, then curtailment).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sef.control.controllers._der_dispatch import EVDispatcher, ev_groups, pv_limits
from sef.control.controllers._dispatch import BatteryDispatcher, FleetInfo, WaterHeaterDispatcher
from sef.control.controllers._lp import LPInput, LPPlan, solve_plan
from sef.control.controllers._lp_der import DERInput
from sef.control.controllers.base import Decision, Forecast, Observation
from sef.control.scenario import Scenario

__all__ = ["MPCController"]

FloatArray = npt.NDArray[np.float64]
#: weight of one step in the EWMA of the squared one-step error (~ 1 h at 1-min steps)
_ERR_GAIN = 1.0 / 60.0
#: margin inside a cap / floor in RMS one-step errors (≈ 1 % of steps cross it if normal)
_MARGIN_SIGMAS = 2.3
#: forecast reserve for a cap / floor plan (fraction of the base load; ~1.7 day-level σ
#: of the suite's 3 % scale error)
_LIMIT_RESERVE = 0.05
#: a planned deviation within this (kW, plus the margin) of the limit = the limit binds
_BINDING_KW = 0.5


def _geometric_breakpoints(fleet_kw: float) -> tuple[float, ...]:
    """Deviation segment ends (kW): widths ``δ_0 · 1.15^s`` from ``δ_0`` = 1/4000 of the
    fleet power (≥ 0.05 kW) until the fleet power is covered (~46 segments)."""
    d0 = max(0.05, fleet_kw / 4000.0)
    ends, b, w = [], 0.0, d0
    while b < max(fleet_kw, 60 * d0):
        b += w
        ends.append(b)
        w *= 1.15
    return tuple(ends)


def _coarse(x: FloatArray, m: int, j: int) -> FloatArray:
    return np.asarray(x[: m * j].reshape(j, m).mean(axis=1), dtype=np.float64)


class MPCController:
    """Receding-horizon LP controller (see module docstring)."""

    name = "mpc"
    perfect_foresight = False

    def __init__(self) -> None:
        self.plans: list[tuple[int, LPPlan]] = []
        self.solve_s = 0.0
        self.solve_max_s = 0.0

    def reset(self, scenario: Scenario) -> None:
        """Start a new run of ``scenario``: forget the forecast state and the last plan."""
        self.sc = scenario
        self.info = FleetInfo.from_scenario(scenario)
        self.wh = WaterHeaterDispatcher(self.info, scenario.control.wh_shed_duration_s)
        self.bat = BatteryDispatcher(self.info)
        self.m = scenario.interval_steps
        self.plan: LPPlan | None = None
        self.plan_step = 0
        self.plans = []
        n_b = scenario.n_batteries
        self.b_ref = float(np.sum(scenario.battery_soc0) * scenario.battery_params.capacity_kwh)
        self.b_ref = float(np.clip(self.b_ref, n_b * self.info.b_e_min, n_b * self.info.b_e_max))
        self.w_ref: float | None = None
        self.last_goal_kw: float | None = None
        w_el = self.info.w_element_kw
        self.elem_kw = float(np.mean(w_el)) if w_el.size else 0.0
        # prior: 1 % of the mean limit, until the first steps are measured
        self.err_var = (0.005 * float(np.mean(np.abs(scenario.target_kw)))) ** 2
        room = self.info.w_e_max - self.info.w_e_normal_on
        self.room_rate = (
            float(np.mean(self.info.w_element_kw)) / max(float(np.mean(room)), 1e-6)
            if room.size
            else 0.0
        )
        self.der_on = (
            scenario.pv is not None
            or scenario.ev is not None
            or scenario.export_limit_kw is not None
        )
        if self.der_on:  # EV and PV steps: a wider prior margin until errors are learnt
            self.err_var = max(
                self.err_var, (0.03 * float(np.mean(np.abs(scenario.target_kw)))) ** 2
            )
        self.evd = EVDispatcher()
        self.pv_ac_kw = scenario.pv.ac_kw if scenario.pv is not None else np.zeros(0)
        self.ev_short_kwh = 0.0  # largest planned EV shortfall of any plan (kWh)

    def horizon_intervals(self, step: int) -> int:
        """LP intervals of the plan made at ``step``."""
        return max(1, round(self.sc.control.horizon_h * 3600.0 / (self.sc.dt_s * self.m)))

    def forecast_steps(self, step: int) -> int:
        """Forecast length the app needs at ``step`` (simulation steps)."""
        return self.horizon_intervals(step) * self.m

    @property
    def objective(self) -> str:
        """The scenario's objective: ``track`` | ``cap`` | ``floor``."""
        return str(getattr(self.sc, "objective", "track"))

    @property
    def end_energy(self) -> str:
        """The scenario's end-of-horizon energy rule: ``return`` | ``free``."""
        return str(getattr(self.sc, "end_energy", "return"))

    def _day_ends(self, step: int, n_int: int) -> list[tuple[int, float, float]]:
        if self.end_energy == "free":
            return []
        ends = []
        w_ref = self.w_ref if self.w_ref is not None else 0.0
        for j in range(n_int):
            if (step + (j + 1) * self.m) % self.sc.steps == 0:
                ends.append((j, self.b_ref, w_ref))
        ends.append((n_int - 1, self.b_ref, w_ref))
        return ends

    def _learn_error(self, obs: Observation) -> None:
        """Track the RMS of the last step's net − goal (what one step's forecast misses)."""
        if self.last_goal_kw is not None:
            err = obs.net_kw - self.last_goal_kw
            self.err_var = (1.0 - _ERR_GAIN) * self.err_var + _ERR_GAIN * err * err

    def margin_kw(self) -> float:
        """Safety margin kept inside a cap / floor (kW): ``_MARGIN_SIGMAS`` × the learned
        one-step RMS error, at least one heater element (a tank switching on between two
        decisions is the one step error no forecast removes, perfect or not); 0 for
        ``track``. Below a cap the load is free, so planning to ``cap − margin`` only
        costs stored energy, and it keeps the per-step noise (base load, heater
        switching, 1-kW rates) from crossing the limit."""
        if self.objective == "track":
            return 0.0
        sign = 1.0 if self.objective == "cap" else -1.0
        # with EVs and PV (issue 17) at least three elements: the EVs make the batteries'
        # work at the cap, and they wait at no cost (two left der_feeder 1-3 min over it)
        elems = 3.0 if self.der_on else 1.0
        return sign * max(_MARGIN_SIGMAS * float(np.sqrt(self.err_var)), elems * self.elem_kw)

    def _reserve_factor(self, fc: Forecast) -> float:
        """Base-load factor the LP plans with: for ``cap`` (``floor``) an imperfect
        forecast is raised (lowered) by ``_LIMIT_RESERVE``, so the energy kept for the
        limit covers a day a few per cent above the forecast (storing it costs only
        throughput below a cap; running short costs excess); 1 otherwise."""
        if self.objective == "track" or fc.perfect:
            return 1.0
        return 1.0 + (_LIMIT_RESERVE if self.objective == "cap" else -_LIMIT_RESERVE)

    def _battery_goal(self, plan: LPPlan, limit_kw: float, unc_kw: float) -> tuple[float, float]:
        """Battery fleet power (kW) and the net goal (kW) for the step.

        ``track``: net = target + planned deviation (the batteries absorb every forecast
        error). ``cap``: where the plan is below the cap, the planned battery power, but
        never a net above ``cap − margin`` (discharge more when the step's load is higher
        than planned); where the plan holds the net at the limit (or, infeasible, above
        it by a planned excess), exactly the power that keeps it there (less when the
        load is lower: no energy spent below the cap). ``floor``: the mirror image.
        """
        level = limit_kw - self.margin_kw()
        if self.objective == "track":
            goal = limit_kw + float(plan.deviation_kw[0])
            return goal - unc_kw, goal
        dev = float(plan.deviation_kw[0])
        b_plan = float(plan.battery_kw[0])
        sign = 1.0 if self.objective == "cap" else -1.0
        if sign * dev > -_BINDING_KW:  # at the limit, or planned beyond it (infeasible)
            goal = level + (max(dev, 0.0) if sign > 0 else min(dev, 0.0))
            fleet = goal - unc_kw
        else:
            room = level - unc_kw  # battery power that puts the net at the level
            fleet = min(b_plan, room) if sign > 0 else max(b_plan, room)
        if sign * fleet > 0:
            # recharging under a cap (discharging over a floor) is never urgent: it stops
            # a second margin short of the level, so its extra load does not carry the
            # noise over the limit
            fleet = sign * max(0.0, min(sign * fleet, sign * (level - self.margin_kw() - unc_kw)))
        return fleet, fleet + unc_kw

    def replan(self, obs: Observation, fc: Forecast) -> LPPlan:
        """Solve the LP from the observed state and the forecast."""
        i, m, n_int = self.info, self.m, self.horizon_intervals(obs.step)
        n_b = obs.battery_energy_kwh.shape[0]
        if self.w_ref is None:
            self.w_ref = float(obs.wh_energy_kwh.sum())
        b_p = n_b * i.b_rated_kw
        w_p = float(i.w_element_kw.sum())
        bps = _geometric_breakpoints(b_p + w_p)
        base = _coarse(fc.base_kw, m, n_int) * self._reserve_factor(fc)
        der = None
        if self.der_on:
            pv = None if fc.pv_kw is None else _coarse(fc.pv_kw, m, n_int)
            if pv is not None:
                base = base - pv
            groups = ev_groups(obs, fc.ev_arrivals, m * self.sc.dt_s, n_int)
            der = DERInput(pv_kw=pv, export_limit_kw=self.sc.export_limit_kw, ev_groups=groups)
        inp = LPInput(
            h=m * self.sc.dt_s / 3600.0,
            base_kw=base,
            target_kw=_coarse(fc.target_kw, m, n_int) - self.margin_kw(),
            draw_kw=_coarse(fc.draw_lpm, m, n_int) * i.w_draw_kw_per_lpm,
            b_p_max=b_p,
            b_e0=float(obs.battery_energy_kwh.sum()),
            b_e_min=n_b * i.b_e_min,
            b_e_max=n_b * i.b_e_max,
            b_eta_c=i.b_eta_c,
            b_eta_d=i.b_eta_d,
            b_standby_kw=n_b * i.b_standby_kw,
            w_p_max=w_p,
            w_e0=float(obs.wh_energy_kwh.sum()),
            w_e_min=float(i.w_e_lp_min.sum()),
            w_e_max=float(i.w_e_max.sum()),
            w_loss_kw=float(i.w_loss_kw.sum()),
            w_room_rate_per_h=self.room_rate,
            day_ends=self._day_ends(obs.step, n_int),
            breakpoints_kw=bps,
            objective=self.objective,
            w_ramp_kw=self.wh.max_step_kw * m,
            day_end_exact=True,
            der=der,
        )
        plan = solve_plan(inp)
        if plan.der is not None:
            self.ev_short_kwh = max(self.ev_short_kwh, float(plan.der.ev_shortfall_kwh.sum()))
        return plan

    def decide(self, obs: Observation, forecast: Forecast) -> Decision:
        """Re-plan at interval starts; dispatch the current interval's plan every step."""
        if self.plan is None or obs.step - self.plan_step >= self.m:
            import time

            t0 = time.perf_counter()
            self.plan = self.replan(obs, forecast)
            took = time.perf_counter() - t0
            self.solve_s += took
            self.solve_max_s = max(self.solve_max_s, took)
            self.plan_step = obs.step
            self.plans.append((obs.step, self.plan))
        plan = self.plan
        wh_plan = float(plan.wh_kw[0])
        self._learn_error(obs)
        if self.der_on and self.sc.export_limit_kw is not None:
            wh_plan += self._export_heat_kw(obs, forecast, plan, wh_plan)
        wh_cmd, wh_est = self.wh.dispatch(obs, wh_plan)
        uncontrolled = float(forecast.base_kw[0]) + wh_est
        if self.der_on:
            return self._der_step(obs, forecast, plan, wh_cmd, wh_plan, wh_est)
        fleet_kw, net_goal = self._battery_goal(plan, float(forecast.target_kw[0]), uncontrolled)
        self.last_goal_kw = net_goal
        rates = self.bat.allocate(fleet_kw, obs.battery_energy_kwh)
        return Decision(
            battery_kw=rates,
            wh_command=wh_cmd,
            battery_duration_s=round(obs.dt_s),
            wh_duration_s=self.wh.event_s,
            info={
                "net_goal_kw": net_goal,
                "wh_plan_kw": wh_plan,
                "wh_est_kw": wh_est,
                "battery_plan_kw": float(plan.battery_kw[0]),
            },
        )

    def export_margin_kw(self) -> float:
        """Margin kept above the export limit (kW): two heater elements + 1 % of the limit
        (at least 1 kW). The PV part of a step's error needs none — the inverters'
        limits are a ceiling on their output — so this covers the base load and the
        heaters switching within the step."""
        assert self.sc.export_limit_kw is not None
        return max(2.0 * self.elem_kw + 0.01 * self.sc.export_limit_kw, 1.0)

    def _export_heat_kw(
        self, obs: Observation, fc: Forecast, plan: LPPlan, wh_plan: float
    ) -> float:
        """Heater power to add to the plan (kW) where the forecast net, with the batteries
        charging at their limit and the EVs at their plan, would fall below the export
        limit: the tanks take the surplus before any PV is curtailed."""
        assert plan.der is not None and self.sc.export_limit_kw is not None
        pv = float(fc.pv_kw[0]) if fc.pv_kw is not None else 0.0
        b_hi = float(self.bat.limits(obs.battery_energy_kwh)[1].sum())
        low = float(fc.base_kw[0]) - pv + wh_plan + float(plan.der.ev_kw[0]) + b_hi
        return max(0.0, -self.sc.export_limit_kw + self.export_margin_kw() - low)

    def _der_step(
        self,
        obs: Observation,
        fc: Forecast,
        plan: LPPlan,
        wh_cmd: npt.NDArray[np.int64],
        wh_plan: float,
        wh_est: float,
    ) -> Decision:
        """One step with PV and EVs: the battery goal with the planned EV power and the
        forecast PV, then the cap (EVs down to their must-run floor when the batteries
        are at their limit) and the export limit (batteries up, then EVs, then PV
        curtailed — only the part nothing else can take)."""
        assert plan.der is not None
        ev_lo = float(self.evd.must_kw(obs).sum()) if obs.ev_need_kwh.size else 0.0
        ev_hi = float(self.evd.max_kw(obs).sum()) if obs.ev_need_kwh.size else 0.0
        ev = float(np.clip(plan.der.ev_kw[0], ev_lo, max(ev_lo, ev_hi)))
        pv = float(fc.pv_kw[0]) if fc.pv_kw is not None else 0.0
        rest = float(fc.base_kw[0]) + wh_est - pv  # uncontrolled without the EVs
        limit = float(fc.target_kw[0])
        fleet, _ = self._battery_goal(plan, limit, rest + ev)
        lo_r, hi_r = self.bat.limits(obs.battery_energy_kwh)
        b_lo, b_hi = float(lo_r.sum()), float(hi_r.sum())
        fleet = float(np.clip(fleet, b_lo, b_hi))
        if self.objective == "cap":  # EVs give way to the cap down to their floor
            margin = self.margin_kw()
            if fleet <= b_lo + self.elem_kw:  # batteries spent: they cannot take an error
                margin *= 2.0
            over = rest + ev + fleet - (limit - margin)
            if over > 0:
                ev -= min(over, ev - ev_lo)
        pv_ceiling = float("inf")
        if self.sc.export_limit_kw is not None:
            low = -self.sc.export_limit_kw + self.export_margin_kw()
            under = low - (rest + ev + fleet)
            if under > 0:
                add = min(under, b_hi - fleet)
                fleet, under = fleet + max(add, 0.0), under - max(add, 0.0)
            if under > 0:
                ev += max(min(under, ev_hi - ev), 0.0)
            # the PV output that puts the net at the level: a ceiling, not an amount
            pv_ceiling = (rest + pv) + ev + fleet - low
        curtail = float(np.clip(pv - pv_ceiling, 0.0, pv))
        net_goal = rest + curtail + ev + fleet
        self.last_goal_kw = net_goal
        rates = self.bat.allocate(fleet, obs.battery_energy_kwh)
        ev_kw = self.evd.allocate(obs, ev) if obs.ev_need_kwh.size else None
        avail = obs.pv_available_kw
        if avail.size and fc.pv_kw is not None and float(avail.sum()) > 0:
            avail = avail * (pv / float(avail.sum()))  # this step's forecast, per system
        pv_lim = pv_limits(avail, self.pv_ac_kw, pv_ceiling) if avail.size else None
        return Decision(
            battery_kw=rates,
            wh_command=wh_cmd,
            battery_duration_s=round(obs.dt_s),
            wh_duration_s=self.wh.event_s,
            info={
                "net_goal_kw": net_goal,
                "wh_plan_kw": wh_plan,
                "wh_est_kw": wh_est,
                "battery_plan_kw": float(plan.battery_kw[0]),
                "ev_plan_kw": float(plan.der.ev_kw[0]),
                "pv_curtail_plan_kw": float(plan.der.pv_curtail_kw[0]),
            },
            ev_kw=ev_kw,
            pv_limit_kw=pv_lim,
        )
