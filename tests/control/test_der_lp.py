"""Issue 17: the LP's PV curtailment and EV deadlines, and the real-time EV / PV layer.

Inputs are fed by hand and the outputs checked interval by interval (LP) or step by step
(dispatch): curtailment only where the export limit would otherwise be crossed and
nothing else can take the power; every EV group's energy by its deadline (and a reported
shortfall when it cannot be); must-run floors and least-laxity-first allocation per EV;
PV limits that hold the fleet's output at the ceiling.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from control_support import battery_lp
from sef.control.controllers._der_dispatch import EVDispatcher, ev_groups, pv_limits
from sef.control.controllers._lp import LPPlan
from sef.control.controllers._lp_der import DERInput, EVGroup
from sef.control.controllers.base import EVArrivals, Observation


def plan(base: list[float], limit: float, e0: float, der: DERInput, **kw: Any) -> LPPlan:
    """One-hour grid, a lossless 30 kW / 100 kWh battery fleet, no heaters; ``base`` is
    the base load net of the PV forecast."""
    return battery_lp(base, limit, e0, **{"objective": "cap", "der": der, **kw})


def net_of(p: LPPlan, base: list[float]) -> np.ndarray:
    assert p.der is not None
    return np.array(base) + p.battery_kw + p.wh_kw + p.der.pv_curtail_kw + p.der.ev_kw


LOAD = [20.0, 20.0, 20.0, 20.0, 20.0]
PV = [0.0, 60.0, 80.0, 60.0, 0.0]
BASE = [a - b for a, b in zip(LOAD, PV, strict=True)]  # 20, -40, -60, -40, 20


def test_no_curtailment_while_the_batteries_can_take_the_surplus() -> None:
    # export limit 30 kW: 10 + 30 + 10 kWh below it; the batteries hold 100 kWh of room
    der = DERInput(pv_kw=np.array(PV), export_limit_kw=30.0)
    p = plan(BASE, 100.0, 0.0, der)
    assert p.der is not None
    np.testing.assert_allclose(p.der.pv_curtail_kw, 0.0, atol=1e-6)
    assert np.all(net_of(p, BASE) >= -30.0 - 1e-6)
    np.testing.assert_allclose(p.der.export_excess_kw, 0.0, atol=1e-6)


def test_curtailment_is_the_last_resort_and_exactly_the_excess() -> None:
    # battery full (and held full): only curtailment can hold the limit, where it binds
    der = DERInput(pv_kw=np.array(PV), export_limit_kw=30.0)
    p = plan(BASE, 100.0, 100.0, der, b_e_min=100.0)
    assert p.der is not None
    net = net_of(p, BASE)
    curt = p.der.pv_curtail_kw
    np.testing.assert_allclose(curt, [0.0, 10.0, 30.0, 10.0, 0.0], atol=1e-6)
    for j in range(len(BASE)):  # interval by interval: curtailed => at the limit
        if curt[j] > 1e-6:
            assert net[j] == pytest.approx(-30.0, abs=1e-6)
    # 20 kWh of room: the batteries take what they can first (throughput is cheaper)
    p = plan(BASE, 100.0, 80.0, der, b_e_min=80.0)
    assert p.der is not None
    assert float(np.sum(p.der.pv_curtail_kw)) == pytest.approx(50.0 - 20.0, abs=1e-4)
    assert p.battery_kwh[-1] == pytest.approx(100.0, abs=1e-4)


def test_no_curtailment_for_an_import_cap_or_without_an_export_limit() -> None:
    der = DERInput(pv_kw=np.array(PV), export_limit_kw=None)
    p = plan(BASE, 10.0, 100.0, der, b_e_max=100.0)  # cap below the base: irrelevant to PV
    assert p.der is not None
    np.testing.assert_allclose(p.der.pv_curtail_kw, 0.0, atol=1e-6)


def test_ev_energy_by_its_deadline_even_against_the_cap() -> None:
    # 40 kWh due by the end of interval 2 at 30 kW max; the cap (30 kW) binds in 0-2
    grp = EVGroup(energy_kwh=40.0, max_kwh=40.0, p_max_kw=np.full(5, 30.0), deadline=2)
    base = [10.0, 25.0, 25.0, 0.0, 0.0]
    p = plan(base, 30.0, 0.0, DERInput(ev_groups=[grp]), b_e_max=0.0, b_p_max=0.0)
    assert p.der is not None
    assert float(p.der.ev_group_kw[0, :3].sum()) == pytest.approx(40.0, abs=1e-6)
    assert p.der.ev_shortfall_kwh[0] == pytest.approx(0.0, abs=1e-6)
    # 30 kWh of room under the cap: the other 10 kWh go above it, spread evenly (the
    # least squared excess), never after the deadline
    net = net_of(p, base)
    np.testing.assert_allclose(net[:3], 30.0 + 10.0 / 3.0, atol=0.6)  # 0.5-kW segments
    np.testing.assert_allclose(p.der.ev_group_kw[0, 3:], 0.0, atol=1e-6)


def test_ev_prefers_room_under_the_cap_and_reports_an_impossible_deadline() -> None:
    grp = EVGroup(energy_kwh=30.0, max_kwh=30.0, p_max_kw=np.full(5, 20.0), deadline=4)
    base = [25.0, 25.0, 5.0, 5.0, 25.0]
    p = plan(base, 30.0, 0.0, DERInput(ev_groups=[grp]), b_e_max=0.0, b_p_max=0.0)
    assert p.der is not None
    assert np.all(net_of(p, base) <= 30.0 + 1e-6)  # charged in the valley
    # 50 kWh due in 2 h at 20 kW: 10 kWh short, reported (not silently dropped)
    grp = EVGroup(energy_kwh=50.0, max_kwh=50.0, p_max_kw=np.full(5, 20.0), deadline=1)
    p = plan(base, 30.0, 0.0, DERInput(ev_groups=[grp]), b_e_max=0.0, b_p_max=0.0)
    assert p.der is not None
    assert p.der.ev_shortfall_kwh[0] == pytest.approx(10.0, abs=1e-6)
    assert float(p.der.ev_group_kw[0, :2].sum()) == pytest.approx(40.0, abs=1e-6)


def ev_obs(t_s: float, need: list[float], dep: list[float], rate: list[float]) -> Observation:
    z = np.zeros(0)
    return Observation(
        step=int(t_s // 60),
        t_s=t_s,
        dt_s=60.0,
        net_kw=0.0,
        battery_energy_kwh=z,
        battery_power_kw=z,
        wh_power_kw=z,
        wh_energy_kwh=z,
        wh_mode=np.zeros(0, dtype=np.int64),
        ev_power_kw=np.zeros(len(need)),
        ev_need_kwh=np.array(need, dtype=float),
        ev_departure_s=np.array(dep, dtype=float),
        ev_max_kw=np.array(rate, dtype=float),
    )


def test_ev_groups_by_cohort_with_owed_energy_beyond_the_horizon() -> None:
    # two EVs leave at 01:00 (one cohort), one at 30 h (beyond a 24-h horizon), one gone
    obs = ev_obs(0.0, [5.0, 6.0, 60.0, 0.0], [3600.0, 3600.0, 30 * 3600.0, np.nan], [7.2] * 4)
    arr = EVArrivals(np.array([7200.0]), np.array([5 * 3600.0]), np.array([10.0]), np.array([11.0]))
    groups = ev_groups(obs, arr, 900.0, 96)
    by_deadline = {g.deadline: g for g in groups}
    assert sorted(by_deadline) == [3, 19, 95]
    assert by_deadline[3].energy_kwh == pytest.approx(11.0)
    np.testing.assert_allclose(by_deadline[3].p_max_kw[:4], 14.4)
    assert by_deadline[3].p_max_kw[4:].sum() == 0.0
    # beyond the horizon: owes only what 7.2 kW could not deliver in the last 6 h
    assert by_deadline[95].energy_kwh == pytest.approx(60.0 - 7.2 * 6.0)
    assert by_deadline[95].max_kwh == pytest.approx(60.0)
    late = by_deadline[19]  # the arrival at 02:00: plugged from interval 8
    assert late.p_max_kw[:8].sum() == 0.0 and late.p_max_kw[8] == pytest.approx(11.0)


def test_must_run_floor_and_least_laxity_first() -> None:
    d = EVDispatcher(reserve_s=1800.0)
    # EV0: 7.2 kWh, 85 min left at 7.2 kW -> laxity 25 min < the 30-min reserve: must
    # run at its rating; EV1: 3.6 kWh in 5 h (laxity 4.5 h); EV2: 2 kWh in 3 h at 11 kW
    obs = ev_obs(0.0, [7.2, 3.6, 2.0], [85 * 60.0, 5 * 3600.0, 3 * 3600.0], [7.2, 7.2, 11.0])
    must = d.must_kw(obs)
    np.testing.assert_allclose(must, [7.2, 0.0, 0.0])
    limits = d.allocate(obs, 0.0)  # the fleet asked for nothing: the floor still runs
    np.testing.assert_allclose(limits, must)
    limits = d.allocate(obs, 7.2 + 3.0)
    # the extra goes to the least laxity first: EV2, not EV1
    np.testing.assert_allclose(limits, [7.2, 0.0, 3.0])
    limits = d.allocate(obs, 100.0)  # everyone full, never beyond rating or need
    np.testing.assert_allclose(limits, [7.2, 7.2, 11.0])
    # one step from departure with 1 kWh left: what remains in one minute, capped at 11 kW
    obs = ev_obs(0.0, [1.0], [60.0], [11.0])
    np.testing.assert_allclose(d.must_kw(obs), [11.0])


def test_pv_limits_hold_the_ceiling() -> None:
    rng = np.random.default_rng(3)
    ac = rng.uniform(3.0, 8.0, 50)
    avail = ac * rng.uniform(0.4, 1.0, 50)
    total = float(avail.sum())
    assert pv_limits(avail, ac, float(ac.sum()) + 1.0) is None
    assert pv_limits(avail, ac, total + 0.11 * float(ac.sum())) is None  # far above: none
    for ceiling in (0.0, 0.3 * total, total - 1.0, total + 10.0):
        lim = pv_limits(avail, ac, ceiling)
        assert lim is not None and np.all(lim <= ac + 1e-9) and np.all(lim >= 0)
        assert float(np.minimum(avail, lim).sum()) <= ceiling + 1e-6
        if ceiling < total:  # below the estimate: exactly the ceiling is delivered
            assert float(np.minimum(avail, lim).sum()) == pytest.approx(ceiling)
        # a surge of every system by 20 % is still held at the ceiling
        assert float(np.minimum(np.minimum(avail * 1.2, ac), lim).sum()) <= ceiling + 1e-6
