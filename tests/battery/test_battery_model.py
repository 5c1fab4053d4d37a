"""Battery reservoir model: energy bookkeeping, limits, OCV, vectorization."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.models.battery import BatteryModel, BatteryParams, ocv_per_cell, step_energy

NO_STANDBY = BatteryParams(standby_kw=0.0)


def test_defaults_match_issue() -> None:
    p = BatteryParams()
    assert p.rated_power_kw == 8.0
    assert p.capacity_kwh == 60.0
    assert 0.93 <= p.round_trip_efficiency <= 0.96
    assert p.charge_efficiency == pytest.approx(math.sqrt(p.round_trip_efficiency))


def test_charge_4kw_half_hour() -> None:
    m = BatteryModel(NO_STANDBY, soc=0.5)
    ac = m.step_one(4.0, 1800.0)
    assert ac == pytest.approx(4.0)
    assert m.energy_kwh[0] == pytest.approx(30.0 + 2.0 * 0.975)


def test_discharge_4kw_half_hour() -> None:
    m = BatteryModel(NO_STANDBY, soc=0.5)
    ac = m.step_one(-4.0, 1800.0)
    assert ac == pytest.approx(-4.0)
    assert m.energy_kwh[0] == pytest.approx(30.0 - 2.0 / 0.975)


def test_standby_drains_battery_when_idle() -> None:
    m = BatteryModel(BatteryParams(standby_kw=0.03), soc=0.5)
    ac = m.step_one(0.0, 86400.0)
    assert ac == pytest.approx(0.0)
    assert m.energy_kwh[0] == pytest.approx(30.0 - 0.72)


def test_power_clipped_to_rating() -> None:
    m = BatteryModel(NO_STANDBY, soc=0.5)
    assert m.step_one(20.0, 60.0) == pytest.approx(8.0)
    assert bool(m.clipped[0])
    assert m.step_one(-20.0, 60.0) == pytest.approx(-8.0)


def test_charge_lands_exactly_on_soc_max() -> None:
    p = NO_STANDBY
    m = BatteryModel(p, soc=0.94)  # 0.6 kWh below the 57 kWh ceiling
    ac = m.step_one(8.0, 3600.0)
    assert m.energy_kwh[0] == pytest.approx(57.0, abs=1e-9)
    assert ac == pytest.approx(0.6 / 0.975)  # average power that just fills it
    assert bool(m.clipped[0])
    assert m.step_one(8.0, 3600.0) == pytest.approx(0.0)
    assert m.energy_kwh[0] == pytest.approx(57.0, abs=1e-9)


def test_discharge_lands_exactly_on_soc_min() -> None:
    m = BatteryModel(NO_STANDBY, soc=0.06)  # 0.6 kWh above the 3 kWh floor
    ac = m.step_one(-8.0, 3600.0)
    assert m.energy_kwh[0] == pytest.approx(3.0, abs=1e-9)
    assert ac == pytest.approx(-0.6 * 0.975)


def test_standby_at_floor_comes_from_grid() -> None:
    m = BatteryModel(BatteryParams(standby_kw=0.03), soc=0.05)
    ac = m.step_one(0.0, 3600.0)
    assert m.energy_kwh[0] == pytest.approx(3.0)
    assert ac == pytest.approx(0.03)


def test_reserve_override() -> None:
    m = BatteryModel(NO_STANDBY, soc=0.5)
    m.step(-8.0, 10 * 3600.0, soc_min=0.4)
    assert m.soc[0] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("soc", "volts"), [(0.10, 2.98), (0.50, 3.27), (0.90, 3.31), (1.00, 3.60), (0.15, 3.075)]
)
def test_ocv_table(soc: float, volts: float) -> None:
    assert float(ocv_per_cell(soc, BatteryParams())) == pytest.approx(volts)


def test_dc_volts_and_current() -> None:
    p = BatteryParams(pack_resistance_ohm=0.0)
    m = BatteryModel(p, soc=0.5)
    assert m.dc_volts[0] == pytest.approx(3.27 * 128)
    m.step(-8.0, 1.0)
    p_dc_w = m.dc_power_kw[0] * 1000
    assert p_dc_w == pytest.approx(-(8.0 / 0.975 + 0.03) * 1000)
    assert m.dc_current_a[0] == pytest.approx(p_dc_w / m.dc_volts[0])


def test_ir_term_raises_voltage_when_charging() -> None:
    m = BatteryModel(BatteryParams(pack_resistance_ohm=0.1), soc=0.5)
    ocv = m.ocv_volts[0]
    m.step(8.0, 1.0)
    v, i = m.dc_volts[0], m.dc_current_a[0]
    assert i > 0
    assert v == pytest.approx(ocv + i * 0.1)


def test_vectorized_equals_scalar() -> None:
    rng = np.random.default_rng(1)
    n = 200
    soc0 = rng.uniform(0.0, 1.0, n)
    sp = rng.uniform(-12.0, 12.0, n)
    fleet = BatteryModel(BatteryParams(), n=n, soc=soc0)
    ac = fleet.step(sp, 900.0)
    for k in range(n):
        one = BatteryModel(BatteryParams(), n=1, soc=soc0[k])
        assert one.step_one(float(sp[k]), 900.0) == pytest.approx(ac[k], abs=1e-12)
        assert one.energy_kwh[0] == pytest.approx(fleet.energy_kwh[k], abs=1e-12)


def test_large_fleet() -> None:
    n = 100_000
    fleet = BatteryModel(n=n, soc=np.linspace(0.0, 1.0, n))
    for sp in (8.0, -8.0, 3.0):
        fleet.step(np.full(n, sp), 3600.0)
    assert fleet.energy_kwh.shape == (n,)
    assert np.all(np.isfinite(fleet.dc_current_a))


def test_bad_params() -> None:
    with pytest.raises(ValueError):
        BatteryParams(soc_min=0.9, soc_max=0.1)
    with pytest.raises(ValueError):
        step_energy([30.0], [1.0], -1.0, BatteryParams())


STEPS = st.lists(
    st.tuples(st.floats(-20.0, 20.0), st.floats(1.0, 20000.0)), min_size=1, max_size=30
)


@settings(max_examples=60, deadline=None)
@given(soc0=st.floats(0.05, 0.95), steps=STEPS)
def test_energy_never_leaves_window(soc0: float, steps: list[tuple[float, float]]) -> None:
    p = BatteryParams()
    e = np.array([soc0 * p.capacity_kwh])
    for sp, dt in steps:
        r = step_energy(e, sp, dt, p)
        assert p.energy_min_kwh - 1e-9 <= r.energy_kwh[0] <= p.energy_max_kwh + 1e-9
        assert abs(float(r.ac_power_kw[0])) <= p.rated_power_kw + p.standby_kw + 1e-9
        e = r.energy_kwh


@settings(max_examples=60, deadline=None)
@given(soc0=st.floats(0.05, 0.95), steps=STEPS)
def test_energy_balance(soc0: float, steps: list[tuple[float, float]]) -> None:
    """Without standby: ΔE = η_c·E_in − E_out/η_d exactly, step by step and in total."""
    p = NO_STANDBY
    e = np.array([soc0 * p.capacity_kwh])
    e_in = e_out = 0.0
    for sp, dt in steps:
        r = step_energy(e, sp, dt, p)
        ac_kwh = float(r.ac_power_kw[0]) * dt / 3600.0
        e_in += max(ac_kwh, 0.0)
        e_out += max(-ac_kwh, 0.0)
        assert np.sign(ac_kwh) in (0.0, np.sign(sp))
        e = r.energy_kwh
    expected = soc0 * p.capacity_kwh + p.charge_efficiency * e_in - e_out / p.discharge_efficiency
    assert float(e[0]) == pytest.approx(expected, abs=1e-7)
