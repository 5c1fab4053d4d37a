"""The aggregate LP's objectives (track / cap / floor) and end-of-horizon energy rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from control_support import battery_lp
from sef.control.controllers._lp import LPPlan


def battery_only(base: list[float], limit: float, e0: float, **kw: Any) -> LPPlan:
    """One-hour grid, a lossless 30 kW / 100 kWh battery fleet, no heaters."""
    return battery_lp(base, limit, e0, **kw)


def net(plan: LPPlan, base: list[float]) -> np.ndarray:
    return np.array(base) + plan.battery_kw + plan.wh_kw


BASE = [60.0, 120.0, 125.0, 60.0, 60.0]


def test_cap_leaves_nothing_above_the_cap_when_the_fleet_can() -> None:
    # 45 kWh above a 100 kW cap, the fleet holds 50 kWh: none above the cap, and the
    # energy is returned below the cap (day end) — a track objective would also fill
    # the valleys up to 100 kW, a cap leaves them alone
    plan = battery_only(BASE, 100.0, 50.0, objective="cap", day_ends=[(4, 50.0, 0.0)])
    n = net(plan, BASE)
    assert n.max() <= 100.0 + 1e-6
    assert plan.battery_kwh[-1] >= 50.0 - 1e-6
    track = battery_only(BASE, 100.0, 50.0, objective="track", day_ends=[(4, 50.0, 0.0)])
    valleys = [0, 3, 4]
    np.testing.assert_allclose(net(track, BASE)[valleys], 90.0, atol=0.3)  # 30 kW up
    assert n[valleys].mean() <= 75.0 + 1e-6  # the cap only puts back the 45 kWh


def test_cap_excess_is_minimal_and_spread_when_infeasible() -> None:
    # 45 kWh above the cap, only 25 kWh stored: 20 kWh must go above it; the least
    # squared excess (lowest peak) is 10 kW in each of the two peak hours
    plan = battery_only(BASE, 100.0, 25.0, objective="cap", b_e_max=25.0)
    n = net(plan, BASE)
    np.testing.assert_allclose(n[1:3], 110.0, atol=0.3)
    assert np.all(n[[0, 3, 4]] <= 100.0 + 1e-6)


def test_floor_is_the_mirror_of_cap() -> None:
    base = [140.0, 80.0, 75.0, 140.0, 140.0]  # 45 kWh below a 100 kW floor
    plan = battery_only(base, 100.0, 50.0, objective="floor", day_ends=[(4, 50.0, 0.0)])
    n = net(plan, base)
    assert n.min() >= 100.0 - 1e-6
    assert plan.battery_kwh[-1] >= 50.0 - 1e-6
    # infeasible: room for 25 kWh only -> 10 kW below the floor in each valley hour
    plan = battery_only(base, 100.0, 75.0, objective="floor", b_e_min=75.0)
    np.testing.assert_allclose(net(plan, base)[1:3], 90.0, atol=0.3)


def test_end_energy_return_versus_free() -> None:
    # tracking a 100 kW target over a 120 kW base: with "return" the battery cannot
    # spend its energy (ends where it started), with "free" it empties to track
    base = [120.0] * 4
    ret = battery_only(base, 100.0, 40.0, objective="track", day_ends=[(3, 40.0, 0.0)])
    free = battery_only(base, 100.0, 40.0, objective="track")
    assert ret.battery_kwh[-1] >= 40.0 - 1e-6
    np.testing.assert_allclose(ret.deviation_kw, 20.0, atol=0.3)
    assert free.battery_kwh[-1] < 1.0
    np.testing.assert_allclose(free.deviation_kw, 10.0, atol=0.3)


def test_unknown_objective_is_rejected() -> None:
    with pytest.raises(ValueError, match="objective"):
        battery_only(BASE, 100.0, 50.0, objective="peak")


def test_exact_return_leaves_no_surplus() -> None:
    # base 20 kW under the target: charging would track it; "≥ start" lets the battery
    # end fuller, the exact rule holds it at its start energy (a surplus is scored too)
    base = [80.0] * 4
    at_least = battery_only(base, 100.0, 40.0, day_ends=[(3, 40.0, 0.0)])
    exact = battery_only(base, 100.0, 40.0, day_ends=[(3, 40.0, 0.0)], day_end_exact=True)
    assert at_least.battery_kwh[-1] > 60.0
    assert abs(exact.battery_kwh[-1] - 40.0) < 1e-6
    np.testing.assert_allclose(exact.deviation_kw, -20.0, atol=0.3)


@pytest.mark.parametrize(
    ("state", "why"),
    [
        ({"w_e0": 30.0}, "a tank measured fuller than the model's full"),
        (
            {"draw_kw": np.array([0.0, 40.0, 0.0, 0.0, 0.0]), "w_ramp_kw": 1.0},
            "a draw the ramp cannot follow",
        ),
        (
            {"b_e0": 0.0, "b_standby_kw": 50.0, "b_p_max": 1.0},
            "an empty battery losing standby power",
        ),
    ],
)
def test_a_state_outside_the_hard_limits_still_gets_a_plan(
    state: dict[str, Any], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Live telemetry can put the fleet where the LP's hard limits cannot (the 720x demo
    crashed on it): the LP is solved again relaxed, and that is logged."""
    heaters: dict[str, Any] = {
        "w_p_max": 10.0,
        "w_e0": 10.0,
        "w_e_min": 2.0,
        "w_e_max": 20.0,
        "w_loss_kw": 0.5,
    }
    with caplog.at_level("WARNING", logger="sef.control.lp"):
        plan = battery_only(BASE, 90.0, 50.0, **(heaters | state))
    assert "LP infeasible" in caplog.text, why
    assert np.all(np.isfinite(plan.battery_kw)) and np.all(np.isfinite(plan.wh_kw))
    assert np.all(plan.wh_kw >= -1e-9)


def test_a_feasible_state_is_not_relaxed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="sef.control.lp"):
        battery_only(BASE, 90.0, 50.0)
    assert "LP infeasible" not in caplog.text
