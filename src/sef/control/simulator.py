"""Fleet simulator: the real device models and a control app in one process, no network.

Per step ``k`` (``dt_s``): the app observes the last step's measurements (metered net
load, battery energy and power, heater power, stored heat and DR mode — what the EMS
gets from telemetry), gets its forecast, and decides; the heater commands are applied as
CTA-2045 events (``shed``/``load_up``/``end_shed`` of :class:`WaterHeaterModel`), the
batteries run at their integer rates (:class:`BatteryModel`, clipping at SOC limits),
the heaters step with their draws; the metered net load is base + batteries + heaters.
With PV and EVs (issue 17, :mod:`sef.control._sim_der`): the inverters deliver their
available power under the app's limits (:class:`sef.models.pv.PVFleet`), the chargers
charge under the app's limits (:class:`sef.models.ev.EVFleet`; no command = the EV's
rating), and the net load is base − PV + EVs + batteries + heaters.
Everything is vectorized over the fleet; only fleet aggregates and percentiles are kept
per step, so 10 000 heaters cost no memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sef.control._sim_der import DER_SERIES, DERSim
from sef.control.controllers.base import WH_LOAD_UP, WH_NORMAL, WH_SHED, ControlApp, Observation
from sef.control.forecast import make_forecaster
from sef.control.scenario import Scenario
from sef.models.battery import BatteryModel
from sef.models.waterheater import WaterHeaterModel
from sef.models.waterheater_dr import DRMode

__all__ = ["SERIES", "SimResult", "simulate"]

FloatArray = npt.NDArray[np.float64]

#: Per-step series recorded (kW, fraction, °C, counts).
SERIES = (
    "base_kw",
    "target_kw",
    "net_kw",
    "battery_kw",
    "wh_kw",
    "net_goal_kw",
    "wh_plan_kw",
    "wh_est_kw",
    "soc_mean",
    "soc_min",
    "soc_max",
    "soc_p10",
    "soc_p90",
    "top_c_mean",
    "top_c_min",
    "top_c_max",
    "top_c_p10",
    "top_c_p90",
    "n_shed",
    "n_load_up",
    "events",
)


@dataclass
class SimResult:
    """Outcome of one run.

    Attributes:
        controller: app name.
        scenario: scenario name.
        dt_s: step (s).
        series: per-step arrays named as in :data:`SERIES`.
        comfort_violations: heater-steps with the top node or a draw's outlet below the
            comfort limit.
        soc_violations: battery-steps outside the SOC window.
        clipped_steps: battery-steps whose rate the model had to clip.
        throughput_kwh: battery AC energy charged + discharged (kWh).
        wall_s: run time (s); ``decide_s``: of which in the control app (s).
        extra: fleet stored energy at the start and end (``battery_kwh_start``/``_end``:
            battery energy, ``wh_kwh_start``/``_end``: heat above inlet, kWh) and app
            diagnostics (e.g. LP solve time, ideal LP RMSE).
        ev_sessions: per EV session (issue 17; empty without EVs): ``departure_s``,
            ``need_kwh`` (AC, at step 0 or arrival), ``delivered_kwh`` (AC, in the run),
            ``missed_kwh`` (battery side, at departure; NaN if after the run),
            ``finish_margin_h`` (departure − the time the need was met, h) and
            ``end_laxity_h`` (for EVs still plugged at the end: time in hand, h).
    """

    controller: str
    scenario: str
    dt_s: float
    series: dict[str, FloatArray]
    comfort_violations: int = 0
    soc_violations: int = 0
    clipped_steps: int = 0
    throughput_kwh: float = 0.0
    wall_s: float = 0.0
    decide_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    ev_sessions: dict[str, FloatArray] = field(default_factory=dict)


def _apply_wh(model: WaterHeaterModel, cmd: npt.NDArray[np.int64], duration_s: float) -> int:
    """Send the step's heater commands as CTA-2045 events; returns how many were sent."""
    sent = np.flatnonzero(cmd >= 0)  # WH_KEEP < 0: the few heaters commanded this step
    if not sent.size:
        return 0
    code = cmd[sent]
    shed = sent[code == WH_SHED]
    if shed.size:
        model.shed(shed, duration_s)
    lu = sent[code == WH_LOAD_UP]
    if lu.size:
        model.load_up(lu, duration_s)
    end = sent[code == WH_NORMAL]
    if end.size:
        model.end_shed(end)
    return int(sent.size)


#: Fleets larger than this get their p10/p90 from an evenly strided sample of about this
#: many devices (a full partition per step costs ~10 ms per million); mean/min/max exact.
PERCENTILE_SAMPLE = 100_000


def _pct(x: FloatArray) -> tuple[float, float, float, float, float]:
    """Mean, min, max, p10 and p90 of ``x`` (``nan`` for an empty fleet)."""
    if x.size == 0:
        return (np.nan,) * 5
    stride = -(-x.size // PERCENTILE_SAMPLE)
    p10, p90 = np.percentile(x[::stride], [10, 90])
    return float(x.mean()), float(x.min()), float(x.max()), float(p10), float(p90)


def simulate(
    scenario: Scenario,
    app: ControlApp,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Run ``app`` on ``scenario`` with the real models; ``progress(done, total)`` per step."""
    sc = scenario
    t0 = time.perf_counter()
    app.reset(sc)
    bats = BatteryModel(
        sc.battery_params,
        n=max(sc.n_batteries, 1),
        soc=(sc.battery_soc0 if sc.n_batteries else 0.5),
    )
    n_b = sc.n_batteries
    whs = WaterHeaterModel(sc.wh_params, n=max(sc.n_heaters, 1), dr=sc.wh_dr)
    n_w = sc.n_heaters
    forecaster = make_forecaster(sc, app.perfect_foresight)
    der = DERSim(sc)
    rec = {name: np.zeros(sc.steps) for name in SERIES + (DER_SERIES if der.on else ())}
    bp = sc.battery_params
    comfort = soc_bad = clipped = 0
    throughput = decide_s = 0.0
    b_power = np.zeros(n_b)
    w_power = np.zeros(n_w)
    draw_now = np.zeros(n_w)  # this step's per-heater draw flow (L/min), made per step
    net_prev = float(sc.base_kw[0])
    b_kwh0 = float(bats.energy_kwh[:n_b].sum())
    w_kwh0 = float(whs.stored_energy_kwh[:n_w].sum())
    for k in range(sc.steps):
        obs = Observation(
            step=k,
            t_s=k * sc.dt_s,
            dt_s=sc.dt_s,
            net_kw=net_prev,
            battery_energy_kwh=bats.energy_kwh[:n_b].copy(),
            battery_power_kw=b_power,
            wh_power_kw=w_power,
            wh_energy_kwh=whs.stored_energy_kwh[:n_w],
            wh_mode=whs.mode[:n_w].copy(),
            **der.observe(k),
        )
        forecaster.update(obs)
        td = time.perf_counter()
        fc = forecaster.forecast(k, app.forecast_steps(k))
        dec = app.decide(obs, fc)
        decide_s += time.perf_counter() - td
        events = _apply_wh(whs, dec.wh_command, dec.wh_duration_s) if n_w else 0
        if n_b:
            b_power = bats.step(dec.battery_kw.astype(np.float64), sc.dt_s)
            clipped += int(bats.clipped.sum())
            throughput += float(np.abs(b_power).sum()) * sc.dt_s / 3600.0
            soc = bats.soc
            soc_bad += int(np.sum((soc < bp.soc_min - 1e-6) | (soc > bp.soc_max + 1e-6)))
        if n_w:
            sc.draws_lpm.row(k, out=draw_now)
            w_power = whs.step(sc.dt_s, draw_now)
            # (steps × heaters never stored: one row now; contiguous for the passes below)
            top = np.ascontiguousarray(whs.temperatures_c[:n_w, 0])
            cold = top < sc.comfort_min_c
            drew = np.flatnonzero(draw_now != 0)  # the few heaters drawing this step
            cold[drew] |= whs.outlet_c[drew] < sc.comfort_min_c  # nan (no draw): False
            comfort += int(np.count_nonzero(cold))
        b_sum, w_sum = float(b_power.sum()), float(w_power.sum())
        net_prev = float(sc.base_kw[k] + b_sum + w_sum)
        if der.on:
            net_prev += der.step(k, dec, rec)
        rec["base_kw"][k] = sc.base_kw[k]
        rec["target_kw"][k] = sc.target_kw[k]
        rec["net_kw"][k] = net_prev
        rec["battery_kw"][k] = b_sum
        rec["wh_kw"][k] = w_sum
        rec["net_goal_kw"][k] = dec.info.get("net_goal_kw", np.nan)
        rec["wh_plan_kw"][k] = dec.info.get("wh_plan_kw", np.nan)
        rec["wh_est_kw"][k] = dec.info.get("wh_est_kw", np.nan)
        (
            rec["soc_mean"][k],
            rec["soc_min"][k],
            rec["soc_max"][k],
            rec["soc_p10"][k],
            rec["soc_p90"][k],
        ) = _pct(bats.soc[:n_b])
        (
            rec["top_c_mean"][k],
            rec["top_c_min"][k],
            rec["top_c_max"][k],
            rec["top_c_p10"][k],
            rec["top_c_p90"][k],
        ) = _pct(top if n_w else whs.temperatures_c[:0, 0])
        modes = np.bincount(whs.mode[:n_w], minlength=len(DRMode))
        rec["n_shed"][k] = modes[int(DRMode.SHED)]
        rec["n_load_up"][k] = modes[int(DRMode.LOAD_UP)]
        rec["events"][k] = events
        if progress is not None:
            progress(k + 1, sc.steps)
    extra: dict[str, float] = {
        "battery_kwh_start": b_kwh0,
        "battery_kwh_end": float(bats.energy_kwh[:n_b].sum()),
        "wh_kwh_start": w_kwh0,
        "wh_kwh_end": float(whs.stored_energy_kwh[:n_w].sum()),
    }
    if hasattr(app, "solve_s"):
        extra["lp_solve_s"] = float(app.solve_s)
        extra["lp_solves"] = float(len(getattr(app, "plans", [])))
    first = getattr(app, "first_plan", None)
    if first is not None:
        extra["lp_ideal_rmse_kw"] = float(first.rmse_kw)
    return SimResult(
        controller=app.name,
        scenario=sc.name,
        dt_s=sc.dt_s,
        series=rec,
        comfort_violations=comfort,
        soc_violations=soc_bad,
        clipped_steps=clipped,
        throughput_kwh=throughput,
        wall_s=time.perf_counter() - t0,
        decide_s=decide_s,
        extra=extra | der.extra(app),
        ev_sessions=der.sessions(),
    )
