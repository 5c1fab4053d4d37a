"""The EV session model: energy conservation, pro-rated plug-in, target, taper, laxity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.models.ev import EVFleet, EVSessions
from sef.models.ev_sessions import home_sessions


def _one(**kw: float) -> EVFleet:
    args = {"arrival_s": 0.0, "departure_s": 8 * 3600.0, "need_kwh": 20.0}
    args.update(kw)
    return EVFleet(
        EVSessions.build(
            args.pop("arrival_s"),
            args.pop("departure_s"),
            args.pop("need_kwh"),
            **args,
        ),
        taper_soc=1.0,
    )


def test_charge_7kw_for_30_min_meters_3_5_kwh() -> None:
    ev = _one(max_rate_kw=11.0, efficiency=0.9)
    for _ in range(180):
        assert ev.step_one(10.0, 7.0) == pytest.approx(7.0)
    assert ev.delivered_kwh[0] == pytest.approx(3.5)
    assert ev.energy_kwh[0] - 0.3 * 60 == pytest.approx(3.5 * 0.9)


def test_rate_is_min_of_limit_and_ev_rating() -> None:
    ev = _one(max_rate_kw=7.2)
    assert ev.step_one(60.0, 22.0) == pytest.approx(7.2)
    assert ev.step_one(60.0, 3.0) == pytest.approx(3.0)
    assert ev.step_one(60.0, -5.0) == 0.0
    assert ev.step_one(60.0, float("nan")) == 0.0


def test_stops_exactly_at_target_without_overshoot() -> None:
    ev = _one(need_kwh=1.0, max_rate_kw=7.2, efficiency=0.8)
    powers = [ev.step_one(300.0, 7.2) for _ in range(10)]
    assert ev.remaining_kwh[0] == pytest.approx(0.0, abs=1e-9)
    assert ev.delivered_kwh[0] == pytest.approx(1.0 / 0.8)
    assert powers[-1] == 0.0
    assert sum(p * 300 / 3600 for p in powers) == pytest.approx(1.0 / 0.8)


def test_arrival_and_departure_inside_a_step_are_pro_rated() -> None:
    ev = _one(arrival_s=1800.0, departure_s=5400.0, need_kwh=50.0, battery_kwh=100.0)
    assert not ev.plugged()[0]
    p = ev.step_one(3600.0, 7.2)  # plugged for half the hour
    assert p == pytest.approx(3.6)
    p = ev.step_one(3600.0, 7.2)  # leaves after half the hour
    assert p == pytest.approx(3.6)
    assert ev.delivered_kwh[0] == pytest.approx(7.2)
    assert ev.step_one(3600.0, 7.2) == 0.0  # gone
    assert ev.missed_kwh()[0] == pytest.approx(50.0 - 7.2 * 0.9)


def test_taper_slows_charging_near_full() -> None:
    s = EVSessions.build(0.0, 1e6, 100.0, battery_kwh=10.0, max_rate_kw=10.0, soc0=0.9)
    ev = EVFleet(s, taper_soc=0.8)
    assert ev.acceptance_kw()[0] == pytest.approx(5.0)  # (1-0.9)/(1-0.8)
    ev.step(1.0, 22.0)
    assert ev.power_kw[0] == pytest.approx(5.0)


def test_laxity_and_deadline() -> None:
    # 7.2 kWh AC at 7.2 kW = 1 h of charging in a 3 h window: 2 h of laxity
    ev = _one(departure_s=3 * 3600.0, need_kwh=7.2 * 0.9, max_rate_kw=7.2, efficiency=0.9)
    assert ev.laxity_s()[0] == pytest.approx(7200.0)
    assert ev.required_kw()[0] == pytest.approx(2.4)
    assert ev.meets_departure(0.0, 7200.0)[0]  # pause 2 h, then full rate: just in time
    assert not ev.meets_departure(0.0, 7300.0)[0]
    assert ev.meets_departure(2.4, float("inf"))[0]
    assert not ev.meets_departure(2.0, float("inf"))[0]
    for _ in range(8):  # 2 h paused: laxity used up
        ev.step(900.0, 0.0)
    assert ev.laxity_s()[0] == pytest.approx(0.0, abs=1e-6)
    ev.step(60.0, 0.0)
    assert ev.laxity_s()[0] < 0
    assert not ev.meets_departure(7.2, float("inf"))[0]


def test_not_yet_arrived_laxity_counts_from_arrival() -> None:
    ev = _one(arrival_s=3600.0, departure_s=7200.0, need_kwh=0.9 * 3.6, efficiency=0.9)
    assert ev.laxity_s()[0] == pytest.approx(3600.0 - 1800.0)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    dt=st.sampled_from([60.0, 300.0, 900.0, 3600.0]),
    limit=st.floats(-5.0, 30.0),
)
def test_energy_conservation_over_a_day(seed: int, dt: float, limit: float) -> None:
    s = home_sessions(40, seed=seed)
    ev = EVFleet(s, taper_soc=0.8)
    e0 = ev.energy_kwh.copy()
    drawn = np.zeros(ev.n)
    steps = int(2 * 24 * 3600 / dt)
    for _ in range(steps):
        drawn += ev.step(dt, limit) * dt / 3600
    assert np.allclose(drawn, ev.delivered_kwh)
    assert np.allclose(ev.energy_kwh - e0, ev.delivered_kwh * s.efficiency)
    assert np.all(ev.energy_kwh <= ev.target_kwh + 1e-9)
    assert np.all(ev.energy_kwh <= s.battery_kwh + 1e-9)
    assert np.all(ev.power_kw <= np.maximum(limit, 0) + 1e-9)


def test_generator_is_seeded_and_plausible() -> None:
    a, b = home_sessions(500, seed=7), home_sessions(500, seed=7)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, home_sessions(500, seed=8).arrival_s)
    assert 17.0 < np.median(a.arrival_s) / 3600 < 19.0
    assert 6.5 < np.median(a.departure_s - 24 * 3600) / 3600 < 8.5
    assert 5.0 < np.median(a.need_kwh) < 12.0
    assert np.all(a.departure_s > a.arrival_s)
    # a full-rate night meets every need
    ev = EVFleet(a)
    assert np.all(ev.laxity_s() > 0)
    two = home_sessions(10, days=2, seed=1)
    assert two.n == 20 and np.all(two.arrival_s[10:] > 24 * 3600)


def test_bad_sessions_are_refused() -> None:
    with pytest.raises(ValueError, match="departure_s > arrival_s"):
        EVSessions.build(10.0, 5.0, 1.0)
    with pytest.raises(ValueError, match="efficiency"):
        EVSessions.build(0.0, 5.0, 1.0, efficiency=1.5)
    with pytest.raises(ValueError, match="finite"):
        EVSessions.build(0.0, float("nan"), 1.0)
    with pytest.raises(ValueError, match="dt_s"):
        _one().step(-1.0, 1.0)
