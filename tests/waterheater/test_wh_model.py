"""Water-heater tank model: DOE/OCHRE acceptance, energy balance, numerics, vectorization."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sef.models._waterheater_thermal import mix_inversions, node_fractions
from sef.models.draws import doe_medium_draw_profile
from sef.models.waterheater import WaterHeaterModel, WaterHeaterParams

# OCHRE 0.9.2 "fixedvol" daily electric energy, kWh (reference notes §1.2, rerun by
# bench/ochre_compare.py)
OCHRE_KWH = {1: 10.95, 2: 11.70, 12: 10.43}
LOCK = slice(960, 1200)  # 16:00-20:00 in minutes
AFTER = slice(1200, 1440)


def doe_params(nodes: int) -> WaterHeaterParams:
    return WaterHeaterParams(
        volume_l=189.3,
        ua_w_per_k=2.17,
        element_kw=4.5,
        setpoint_c=51.67,
        deadband_k=5.56,
        inlet_c=7.0,
        ambient_c=20.0,
        height_m=1.22,
        nodes=nodes,
    )


def run_day(nodes: int, lockout: bool = False) -> tuple[WaterHeaterModel, np.ndarray]:
    m = WaterHeaterModel(doe_params(nodes))
    draws = doe_medium_draw_profile(60.0)
    p = np.zeros(1440)
    for i in range(1440):
        if lockout and i == LOCK.start:
            m.grid_emergency(None, 4 * 3600)
        p[i] = m.step(60.0, draws[i])[0]
    return m, p


@pytest.mark.parametrize("nodes", [1, 2, 12])
def test_doe_medium_day_matches_ochre(nodes: int) -> None:
    m, p = run_day(nodes)
    e = float(m.electric_kwh[0])
    assert 10.4 <= e <= 11.7
    assert abs(e - OCHRE_KWH[nodes]) < 0.1
    assert m.drawn_l[0] == pytest.approx(208.2, abs=0.05)
    assert p.sum() / 60 == pytest.approx(e, rel=1e-12)
    balance = m.delivered_kwh[0] + m.loss_kwh[0] + m.stored_energy_change_kwh[0]
    assert abs(e - balance) / e < 0.005
    assert abs(m.balance_error_kwh[0]) < 1e-9
    assert p.max() == pytest.approx(4.5)


@pytest.mark.parametrize("nodes", [2, 12])
def test_lockout_moves_energy_into_rebound(nodes: int) -> None:
    base_m, base = run_day(nodes)
    lock_m, lock = run_day(nodes, lockout=True)
    assert np.all(lock[LOCK] == 0.0)
    assert base[LOCK].sum() > 0
    excess = (lock[AFTER].sum() - base[AFTER].sum()) / 60
    shifted = base[LOCK].sum() / 60
    assert 0.7 * shifted <= excess <= 1.3 * shifted
    # the rebound starts right at 20:00 at full element power
    assert lock[1200] == pytest.approx(4.5)
    assert lock_m.electric_kwh[0] == pytest.approx(base_m.electric_kwh[0], rel=0.06)
    assert abs(lock_m.balance_error_kwh[0]) < 1e-9


@pytest.mark.parametrize("nodes", [2, 12])
def test_upper_element_priority(nodes: int) -> None:
    rng = np.random.default_rng(3)
    m = WaterHeaterModel(WaterHeaterParams(nodes=nodes, initial_c=rng.uniform(10, 50, 200)))
    for _ in range(300):
        p = m.step(60.0, rng.choice([0.0, 0.0, 6.0, 12.0], 200))
        assert not np.any(m.upper_on & m.lower_on)
        assert np.all(p <= m.element_kw + 1e-12)
    # a cold tank runs the upper element first
    cold = WaterHeaterModel(WaterHeaterParams(nodes=nodes, initial_c=15.0))
    cold.step(60.0)
    assert cold.upper_on[0] and not cold.lower_on[0]


@pytest.mark.parametrize("nodes", [2, 12])
def test_vectorized_equals_elementwise(nodes: int) -> None:
    rng = np.random.default_rng(7)
    n = 1000
    kw: dict[str, Any] = dict(
        volume_l=rng.uniform(140, 200, n),
        ua_w_per_k=rng.uniform(1.1, 2.2, n),
        element_kw=rng.choice([3.8, 4.5, 5.5], n),
        setpoint_c=rng.uniform(46, 58, n),
        deadband_k=rng.uniform(2, 8, n),
        inlet_c=rng.uniform(5, 18, n),
        ambient_c=rng.uniform(10, 25, n),
        height_m=rng.uniform(1.0, 1.5, n),
        initial_c=rng.uniform(20, 55, n),
    )
    steps = 600
    draws = rng.choice([0.0, 0.0, 0.0, 0.0, 3.8, 6.4, 15.0], (steps, n))
    vec = WaterHeaterModel(WaterHeaterParams(nodes=nodes, **kw))
    sample = rng.choice(n, 8, replace=False)
    singles = [
        WaterHeaterModel(WaterHeaterParams(nodes=nodes, **{k: v[i] for k, v in kw.items()}))
        for i in sample
    ]
    shed_mask = np.zeros(n, dtype=bool)
    shed_mask[sample[:4]] = True
    p_vec = np.zeros((steps, n))
    p_one = np.zeros((steps, sample.size))
    for s in range(steps):
        if s == 100:
            vec.shed(shed_mask, 3600)
            for j in range(4):
                singles[j].shed(None, 3600)
        p_vec[s] = vec.step(60.0, draws[s])
        for j, i in enumerate(sample):
            p_one[s, j] = singles[j].step(60.0, draws[s, i])[0]
    np.testing.assert_allclose(p_vec[:, sample], p_one, rtol=0, atol=1e-12)
    t_one = np.vstack([sm.temperatures_c for sm in singles])
    np.testing.assert_allclose(vec.temperatures_c[sample], t_one, rtol=1e-12, atol=1e-9)
    assert np.abs(vec.balance_error_kwh).max() < 1e-9


def test_heavy_draw_does_not_overshoot() -> None:
    m = WaterHeaterModel(WaterHeaterParams(nodes=12, inlet_c=10.0, initial_c=50.0, ambient_c=50.0))
    m.step(60.0, 100.0)  # 100 L in one minute: more than half of the tank
    assert m.temperatures_c.min() >= 10.0 - 1e-9
    assert m.temperatures_c.max() <= 50.0 + 4.5e3 * 60 / (4183 * 170 / 12) + 1e-9
    # a draw of more than the tank volume leaves only inlet water (elements off: lockout)
    m2 = WaterHeaterModel(WaterHeaterParams(nodes=12, inlet_c=10.0, initial_c=50.0, ua_w_per_k=0))
    m2.grid_emergency()
    m2.step(60.0, 400.0)
    np.testing.assert_allclose(m2.temperatures_c, 10.0)
    assert m2.delivered_kwh[0] == pytest.approx(4183 * 170 * 40 / 3.6e6)


def test_substeps_equal_short_steps() -> None:
    a = WaterHeaterModel(WaterHeaterParams(nodes=12, initial_c=30.0))
    b = WaterHeaterModel(WaterHeaterParams(nodes=12, initial_c=30.0))
    a.step(300.0, 2.0)
    for _ in range(5):
        b.step(60.0, 2.0)
    np.testing.assert_allclose(a.temperatures_c, b.temperatures_c, rtol=1e-12)
    assert a.electric_kwh[0] == pytest.approx(b.electric_kwh[0])


def brute_isotonic(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators for a non-increasing, weighted fit."""
    blocks: list[list[float]] = []  # [value, weight, count]
    for x, wx in zip(t, w, strict=True):
        blocks.append([x, wx, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([[b[0]] * int(b[2]) for b in blocks])


@pytest.mark.parametrize("nodes", [2, 3, 12])
def test_mixing_is_weighted_isotonic(nodes: int) -> None:
    rng = np.random.default_rng(nodes)
    f = node_fractions(nodes)
    t = rng.uniform(10, 60, (500, nodes))
    out = mix_inversions(t.copy(), f, tol_k=0.0)
    for row_in, row_out in zip(t, out, strict=True):
        np.testing.assert_allclose(row_out, brute_isotonic(row_in, f), atol=1e-9)
    np.testing.assert_allclose(out @ f, t @ f, rtol=1e-12)


def test_commodity_storage_and_linear_view() -> None:
    m = WaterHeaterModel(WaterHeaterParams(volume_l=170.0, setpoint_c=51.67, inlet_c=10.0))
    # full tank at setpoint: present == total, nothing to take
    assert m.present_energy_storage_wh[0] == pytest.approx(m.total_energy_storage_wh[0])
    assert m.total_energy_storage_wh[0] == pytest.approx(4183 * 170 * (51.67 - 43.33) / 3600)
    assert m.energy_take_wh[0] == pytest.approx(0.0, abs=1e-9)
    assert m.stored_energy_kwh[0] == pytest.approx(4183 * 170 * 41.67 / 3.6e6)
    lv = m.linear_view()
    assert lv.e_max_kwh[0] == pytest.approx(m.stored_energy_kwh[0])
    assert lv.e_min_kwh[0] < lv.e_max_kwh[0]
    assert lv.p_max_kw[0] == 4.5
    assert lv.loss_kw[0] == pytest.approx(1.33e-3 * (51.67 - 19.7))
    m.step(3600.0, 6.0)
    assert m.energy_take_wh[0] > 0


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        WaterHeaterModel(WaterHeaterParams(volume_l=-1.0))
    with pytest.raises(ValueError):
        WaterHeaterModel(WaterHeaterParams(nodes=0))
    m = WaterHeaterModel(WaterHeaterParams(), n=3)
    assert m.n == 3
    with pytest.raises(ValueError):
        m.step(60.0, -1.0)
    with pytest.raises(ValueError):
        m.step(0.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=st.sampled_from([1, 2, 5, 12]),
    inlet=st.floats(2.0, 25.0),
    ambient=st.floats(0.0, 35.0),
    setpoint=st.floats(40.0, 65.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_temperatures_stay_bounded(
    nodes: int, inlet: float, ambient: float, setpoint: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = 16
    m = WaterHeaterModel(
        WaterHeaterParams(
            nodes=nodes,
            inlet_c=inlet,
            ambient_c=ambient,
            setpoint_c=setpoint,
            initial_c=rng.uniform(inlet, max(inlet, setpoint), n),
        )
    )
    lo = min(inlet, ambient) - 1e-9
    hi = m.max_temperature_c() + 1e-9
    hi = np.maximum(hi, ambient + 1e-9)
    commands = [m.shed, m.load_up, m.critical_peak, m.grid_emergency]
    for _ in range(120):
        r = rng.random()
        mask = rng.random(n) < 0.3
        if r < 0.1:
            commands[rng.integers(0, 4)](mask, float(rng.integers(60, 7200)))
        elif r < 0.13:
            m.end_shed(mask)
        elif r < 0.16:
            m.customer_override(mask, bool(rng.random() < 0.5))
        m.step(float(rng.choice([30.0, 60.0, 120.0])), rng.choice([0.0, 2.0, 6.4, 30.0], n))
        assert np.all(m.temperatures_c >= lo)
        assert np.all(m.temperatures_c <= hi[:, None])
    assert np.abs(m.balance_error_kwh).max() < 1e-8
