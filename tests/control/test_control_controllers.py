"""Cycle-by-cycle controller tests: fixed inputs -> asserted outputs per interval."""

from __future__ import annotations

import numpy as np

from control_support import obs, small_scenario
from sef.control.controllers import WH_KEEP, WH_NORMAL, WH_SHED, Forecast, make_controller
from sef.control.controllers._dispatch import FleetInfo, WaterHeaterDispatcher
from sef.control.controllers._lp import LPInput, solve_plan
from sef.control.controllers.base import ControlApp
from sef.control.controllers.mpc import MPCController

E_HALF = 6.75  # kWh, a 13.5 kWh battery at SOC 0.5


def fc(target: float, base: float, n: int = 1) -> Forecast:
    return Forecast(np.full(n, target), np.full(n, base), np.zeros(n))


def test_apps_implement_the_protocol() -> None:
    for name in ("mpc", "baseline", "optimal"):
        assert isinstance(make_controller(name), ControlApp)


def test_baseline_cycles_batteries() -> None:
    app = make_controller("baseline")
    app.reset(small_scenario(n_b=2))
    # (net, last battery powers) -> expected integer rates, cycle by cycle
    cycles = [
        (110.0, [0.0, 0.0], [-5, -5]),  # 10 kW over target: discharge 10
        (101.0, [-5.0, -5.0], [-5, -5]),  # wants -11, fleet limit -10 (carry dropped)
        (95.0, [-5.0, -5.0], [-3, -2]),  # 5 under: -10 + 5 = -5, largest remainder
        (97.0, [-3.0, -2.0], [-1, -1]),  # -5 + 3 = -2
        (93.0, [-1.0, -1.0], [3, 2]),  # -2 + 7 = +5: charge
    ]
    for k, (net, last, expected) in enumerate(cycles):
        d = app.decide(obs(k, net, [E_HALF, E_HALF], last), fc(100.0, 0.0))
        assert d.battery_kw.tolist() == expected, f"cycle {k}"
        assert d.battery_duration_s == 60


def test_baseline_sheds_heaters_only_when_batteries_saturate() -> None:
    app = make_controller("baseline")
    app.reset(small_scenario(n_b=1, n_w=3))
    e = [7.0, 7.0, 5.0]  # the third is below the comfort guard (~6.16 kWh)
    # 3 kW over target: the battery covers it, no heater message
    d = app.decide(obs(0, 103.0, [E_HALF], [0.0], [4.5, 0, 0], e), fc(100.0, 0.0))
    assert d.battery_kw.tolist() == [-3] and d.wh_command.tolist() == [WH_KEEP] * 3
    # 12 kW over with the battery at -5: saturated -> shed every heater above the guard
    d = app.decide(obs(1, 112.0, [E_HALF], [-5.0], [4.5, 0, 0], e), fc(100.0, 0.0))
    assert d.battery_kw.tolist() == [-5]
    assert d.wh_command.tolist() == [WH_SHED, WH_SHED, WH_KEEP]
    # 10 min later 6 kW under target, battery idle: end the sheds (rebound allowed)
    d = app.decide(obs(11, 94.0, [E_HALF], [0.0], [0, 0, 0], e, [1, 1, 0]), fc(100.0, 0.0))
    assert d.battery_kw.tolist() == [5]
    assert d.wh_command.tolist() == [WH_NORMAL, WH_NORMAL, WH_KEEP]


def test_dispatcher_priority_guard_and_dwell() -> None:
    sc = small_scenario(n_b=0, n_w=4)
    wh = WaterHeaterDispatcher(FleetInfo.from_scenario(sc), event_s=3600)
    power, energy = [4.5, 4.5, 4.5, 0.0], [7.0, 6.5, 6.3, 5.0]
    # need 4.5 kW less: shed the running heater with the most stored heat
    cmd, est = wh.dispatch(obs(0, 0, [], [], power, energy), plan_kw=9.0)
    assert cmd.tolist() == [WH_SHED, WH_KEEP, WH_KEEP, WH_KEEP] and est == 9.0
    # next minute: need 9 kW less; heater 0 is in dwell, so shed 1 and 2
    cmd, est = wh.dispatch(obs(1, 0, [], [], [0, 4.5, 4.5, 0], energy, [1, 0, 0, 0]), 0.0)
    assert cmd.tolist() == [WH_KEEP, WH_SHED, WH_SHED, WH_KEEP] and est == 0.0
    # heater 1 has fallen below the comfort guard: End Shed whatever the plan
    low = [7.0, 5.5, 6.3, 5.0]
    cmd, est = wh.dispatch(obs(2, 0, [], [], [0, 0, 0, 0], low, [1, 1, 1, 0]), 0.0)
    assert cmd[1] == WH_NORMAL and est == 4.5  # it rebounds at once


def test_lp_spreads_an_energy_shortfall_evenly() -> None:
    # 10 kW over target for 4 h, battery holds 20 kWh usable: the L2-like cost spreads
    # the 20 kWh shortfall as 5 kW in each hour (an L1 cost would not care where)
    p = LPInput(
        h=1.0,
        base_kw=np.full(4, 10.0),
        target_kw=np.zeros(4),
        draw_kw=np.zeros(4),
        b_p_max=50.0,
        b_e0=20.0,
        b_e_min=0.0,
        b_e_max=100.0,
        b_eta_c=1.0,
        b_eta_d=1.0,
        b_standby_kw=0.0,
        w_p_max=0.0,
        w_e0=0.0,
        w_e_min=0.0,
        w_e_max=0.0,
        w_loss_kw=0.0,
        seg_kw=0.5,
        segments=40,
        wh_shift_cost=0.0,
        throughput_cost=0.0,
    )
    plan = solve_plan(p)
    np.testing.assert_allclose(plan.deviation_kw, 5.0, atol=0.3)
    np.testing.assert_allclose(plan.battery_kw, -5.0, atol=0.3)


def test_mpc_cycles_follow_the_plan() -> None:
    sc = small_scenario(n_b=2, hours=24.0)
    app = MPCController()
    app.reset(sc)
    n = app.forecast_steps(0)
    assert n == 24 * 60
    # forecast: base 3 kW under the 10 kW target for an hour, then 3 kW over for an hour:
    # the plan charges 3 kW now (to discharge later); the real-time layer makes the net
    # load exact each minute, and a forecast change for the step moves the rates at once
    base = np.full(n, 10.0)
    base[:60], base[60:120] = 7.0, 13.0
    f = Forecast(np.full(n, 10.0), base, np.zeros(n))
    d0 = app.decide(obs(0, 7.0, [E_HALF, E_HALF], [0, 0]), f)
    assert abs(d0.info["battery_plan_kw"] - 3.0) < 0.2
    assert d0.battery_kw.sum() == 3 and abs(d0.info["net_goal_kw"] - 10.0) < 0.2
    base1 = base.copy()
    base1[0] = 5.0  # the step's base forecast drops by 2 kW
    f1 = Forecast(f.target_kw, base1, f.draw_lpm)
    d1 = app.decide(obs(1, 10.0, [E_HALF, E_HALF], [2, 1]), f1)
    assert d1.battery_kw.sum() == 5
    assert len(app.plans) == 1  # re-plans only at the next 15-min interval
    app.decide(obs(15, 10.0, [E_HALF, E_HALF], [2, 3]), f)
    assert len(app.plans) == 2


def test_optimal_uses_perfect_foresight_and_a_shrinking_horizon() -> None:
    app = make_controller("optimal")
    assert app.perfect_foresight and not make_controller("mpc").perfect_foresight
    app.reset(small_scenario(n_b=1, hours=2.0))
    assert app.forecast_steps(0) == 120 and app.forecast_steps(90) == 30


def test_mpc_cap_keeps_a_margin_below_the_cap_and_spends_nothing_under_it() -> None:
    # cap 10 kW; the base is 12 kW in the second hour, 8 kW otherwise
    sc = small_scenario(n_b=2, hours=24.0, kind="flat", value_kw=10.0, objective="cap")
    app = MPCController()
    app.reset(sc)
    n = app.forecast_steps(0)
    base = np.full(n, 8.0)
    base[60:120] = 12.0
    f = Forecast(np.full(n, 10.0), base, np.zeros(n))
    d0 = app.decide(obs(0, 8.0, [E_HALF, E_HALF], [0, 0]), f)
    margin = app.margin_kw()
    assert margin > 0
    assert 8.0 + d0.battery_kw.sum() <= 10.0 - margin + 1e-9  # no charge up to the cap
    # in the peak hour: discharge at least the excess plus the margin
    f60 = Forecast(f.target_kw, np.roll(base, -60), f.draw_lpm)
    d60 = app.decide(obs(60, 9.0, [E_HALF, E_HALF], [0, 0]), f60)
    assert d60.info["net_goal_kw"] <= 10.0 - margin + 1e-9
    assert 12.0 + d60.battery_kw.sum() <= 10.0 - margin + 0.5  # integer rates, carry
