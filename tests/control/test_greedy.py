"""Greedy battery-only dispatch, cycle by cycle: observations in, asserted decisions out."""

from __future__ import annotations

import numpy as np

from control_support import obs, small_scenario
from sef.control.controllers import WH_KEEP, Forecast, make_controller
from sef.control.controllers.base import ControlApp
from sef.control.controllers.greedy import GreedyController

E_HALF = 6.75  # kWh, a 13.5 kWh battery at SOC 0.5


def fc(level: float) -> Forecast:
    return Forecast(np.full(1, level), np.zeros(1), np.zeros(1))


def test_greedy_is_a_registered_control_app() -> None:
    app = make_controller("greedy")
    assert isinstance(app, ControlApp) and isinstance(app, GreedyController)
    assert app.name == "greedy" and not app.perfect_foresight and app.forecast_steps(0) == 1


def test_greedy_tracks_with_batteries_only() -> None:
    app = make_controller("greedy")
    app.reset(small_scenario(n_b=2, n_w=2))
    heaters = [4.5, 4.5]  # both elements on: the greedy app never sends them anything
    # (net of the last step, batteries' last power) -> integer rates, cycle by cycle
    cycles = [
        (110.0, [0.0, 0.0], [-5, -5]),  # 10 kW over the target: discharge 10
        (101.0, [-5.0, -5.0], [-5, -5]),  # uncontrolled 111: wants -11, limit -10
        (95.0, [-5.0, -5.0], [-3, -2]),  # uncontrolled 105: -5, largest remainder
        (97.0, [-3.0, -2.0], [-1, -1]),  # uncontrolled 102: -2
        (93.0, [-1.0, -1.0], [3, 2]),  # uncontrolled 95: +5, charge
    ]
    for k, (net, last, expected) in enumerate(cycles):
        d = app.decide(obs(k, net, [E_HALF, E_HALF], last, heaters, [7.0, 7.0]), fc(100.0))
        assert d.battery_kw.tolist() == expected, f"cycle {k}"
        assert d.wh_command.tolist() == [WH_KEEP, WH_KEEP], f"cycle {k}"
        assert d.battery_duration_s == 60 and d.info["net_goal_kw"] == 100.0


def test_greedy_respects_soc_limits() -> None:
    sc = small_scenario(n_b=2)
    bp = sc.battery_params
    margin = sc.control.battery_soc_margin * bp.capacity_kwh
    empty = bp.energy_min_kwh + margin  # at the planning floor: cannot discharge
    full = bp.energy_max_kwh - margin  # at the planning ceiling: cannot charge
    app = make_controller("greedy")
    app.reset(sc)
    d = app.decide(obs(0, 110.0, [empty, E_HALF], [0.0, 0.0]), fc(100.0))
    assert d.battery_kw.tolist() == [0, -5]  # only the second can discharge
    d = app.decide(obs(1, 80.0, [full, E_HALF], [0.0, 0.0]), fc(100.0))
    assert d.battery_kw.tolist() == [0, 5]  # only the second can charge


def test_greedy_holds_a_cap_and_recharges_below_it() -> None:
    sc = small_scenario(n_b=2)
    sc.objective = "cap"
    app = make_controller("greedy")
    app.reset(sc)
    # above the 100 kW cap: discharge to the cap; below it: recharge up to the cap
    d = app.decide(obs(0, 104.0, [E_HALF, E_HALF], [0.0, 0.0]), fc(100.0))
    assert d.battery_kw.tolist() == [-2, -2]
    d = app.decide(obs(1, 100.0, [E_HALF, E_HALF], [-2.0, -2.0]), fc(100.0))
    assert d.battery_kw.tolist() == [-2, -2]  # uncontrolled still 104
    d = app.decide(obs(2, 92.0, [E_HALF, E_HALF], [-2.0, -2.0]), fc(100.0))
    assert d.battery_kw.tolist() == [2, 2]  # uncontrolled 96: 4 kW of headroom
