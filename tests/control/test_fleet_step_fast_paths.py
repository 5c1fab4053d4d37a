"""The fleet-scale fast paths of the water-heater step give the general formulas' numbers
bit for bit (issue 14: the 1 M-device run steps 909 k tanks per minute).

Each fast path (column-wise work on few-node tanks, whole-row gathers, DR settings
computed only for heaters not in NORMAL) is compared with the general computation it
replaces, on random fleets with every DR mode, overrides and extreme draw volumes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from sef.models import _waterheater_thermal as thermal
from sef.models.waterheater import WaterHeaterModel, WaterHeaterParams
from sef.models.waterheater_dr import CURTAILMENT_MODES, DemandResponse, DRMode, DRSettings

FloatArray = npt.NDArray[np.float64]


def _tanks(n: int, nodes: int, seed: int) -> tuple[thermal.TankGeometry, FloatArray]:
    """Geometry of ``n`` tanks (L, m, W/K) and stratified temperatures (°C, top hottest)."""
    rng = np.random.default_rng(seed)
    geom = thermal.tank_geometry(
        rng.uniform(100.0, 300.0, n), np.full(n, 1.2), rng.uniform(1.5, 3.0, n), nodes
    )
    temps = np.sort(rng.uniform(10.0, 65.0, (n, nodes)), axis=1)[:, ::-1].copy()
    return geom, temps


@pytest.mark.parametrize("nodes", [1, 2, 3, 4])
def test_plug_flow_and_losses_column_wise_equal_the_row_wise_formulas(
    nodes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 4000
    geom, temps = _tanks(n, nodes, seed=nodes)
    rng = np.random.default_rng(10 + nodes)
    frac = rng.choice([0.0, 1e-3, 0.05, 0.3, 0.9999, 1.0, 1.5, 3.0], n) * rng.uniform(0.5, 1, n)
    frac[:8] = [0.0, 1.0, 2.0, 0.5, 1e-300, 5e-324, 1.0 - 1e-16, 1e9]
    inlet = rng.uniform(5.0, 15.0, n)
    ambient = rng.uniform(10.0, 25.0, n)
    fast = thermal.plug_flow_draw(temps, frac, inlet, geom)
    q_fast, loss_fast = thermal.passive_heat_j(temps, ambient, geom, 60.0)
    monkeypatch.setattr(thermal, "_FEW_NODES", 0)  # the general (n, N) code path
    general = thermal.plug_flow_draw(temps, frac, inlet, geom)
    q_general, loss_general = thermal.passive_heat_j(temps, ambient, geom, 60.0)
    for a, b in ((fast[0], general[0]), (fast[1], general[1])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(q_fast, q_general)
    np.testing.assert_array_equal(loss_fast, loss_general)
    # and both are the plug flow: a node stays between the coldest and the hottest of
    # its tank and the inlet (up to round-off; the 1e9-tank draw is left out of this)
    sane = frac <= 3.0
    high = np.maximum(temps.max(axis=1), inlet)[:, None]
    low = np.minimum(temps.min(axis=1), inlet)[:, None]
    assert np.all(fast[0][sane] <= high[sane] + 1e-9)
    assert np.all(fast[0][sane] >= low[sane] - 1e-9)


@pytest.mark.parametrize("nodes", [1, 2, 5])
def test_whole_row_gather_and_scatter_equal_fancy_indexing(nodes: int) -> None:
    _, temps = _tanks(500, nodes, seed=3)
    rows = np.sort(np.random.default_rng(4).choice(500, 120, replace=False))
    np.testing.assert_array_equal(thermal.take_rows(temps, rows), temps[rows])
    values = temps[rows] + 1.5
    expected = temps.copy()
    expected[rows] = values
    got = temps.copy()
    thermal.put_rows(got, rows, values)
    np.testing.assert_array_equal(got, expected)


def _thermostat_reference(
    dr: DemandResponse, setpoint: FloatArray, deadband: FloatArray, max_sp: FloatArray
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Every mode's formula over the whole fleet, then select (the general computation)."""
    s = dr.settings
    curtailed = np.isin(dr.mode, CURTAILMENT_MODES)
    mode = np.where(curtailed & dr.override, int(DRMode.NORMAL), dr.mode)
    floor = np.minimum(s.comfort_floor_c, setpoint)
    shed_sp = np.maximum(setpoint - s.shed_setback_k, floor)
    cpp_sp = np.maximum(setpoint - s.critical_peak_setback_k, floor)
    lu_sp = np.minimum(setpoint + s.load_up_offset_k + dr.advanced_offset_k, max_sp)
    sp = np.select(
        [mode == DRMode.SHED, mode == DRMode.CRITICAL_PEAK, mode == DRMode.LOAD_UP],
        [shed_sp, cpp_sp, lu_sp],
        setpoint,
    )
    db = np.where(mode == DRMode.LOAD_UP, np.minimum(s.load_up_deadband_k, deadband), deadband)
    return sp, db, mode == DRMode.GRID_EMERGENCY


def test_dr_thermostat_by_mode_equals_every_formula_selected() -> None:
    n = 3000
    rng = np.random.default_rng(5)
    dr = DemandResponse(n, DRSettings(load_up_offset_k=2.0))
    dr.mode[:] = rng.integers(0, len(DRMode), n)
    dr.override[:] = rng.random(n) < 0.2
    dr.advanced_offset_k[:] = np.where(rng.random(n) < 0.3, rng.uniform(0.0, 5.0, n), 0.0)
    setpoint = rng.uniform(40.0, 60.0, n)  # some below the comfort floor's reach
    deadband = rng.uniform(0.5, 6.0, n)
    max_sp = rng.uniform(55.0, 70.0, n)
    got = dr.thermostat(setpoint, deadband, max_sp)
    want = _thermostat_reference(dr, setpoint, deadband, max_sp)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        dr.effective_mode(), np.where(np.isin(dr.mode, CURTAILMENT_MODES) & dr.override, 0, dr.mode)
    )
    # the inputs are not changed in place
    assert np.all(setpoint >= 40.0) and np.all(deadband >= 0.5)


@pytest.mark.parametrize("nodes", [2, 3, 6])
def test_stored_energy_equals_the_row_sum_of_node_heat(nodes: int) -> None:
    rng = np.random.default_rng(6)
    m = WaterHeaterModel(
        WaterHeaterParams(nodes=nodes, initial_c=rng.uniform(40.0, 60.0, 200)), n=200
    )
    for _ in range(5):
        m.step(60.0, np.where(rng.random(200) < 0.3, rng.uniform(1.0, 12.0, 200), 0.0))
    heat = (m.temperatures_c - m.inlet_c[:, None]) * m.geometry.capacity_j_per_k
    np.testing.assert_array_equal(m.stored_energy_kwh, heat.sum(axis=1) / 3.6e6)


def test_step_rejects_negative_and_non_finite_draws() -> None:
    m = WaterHeaterModel(WaterHeaterParams(nodes=2), n=3)
    for bad in ([0.0, -1.0, 0.0], [0.0, np.nan, 0.0], [np.inf, 0.0, 0.0]):
        with pytest.raises(ValueError, match="draw_l_per_min"):
            m.step(60.0, np.array(bad))
    m.step(60.0, np.array([0.0, 3.0, 0.0]))  # a valid draw is accepted
    assert np.isnan(m.outlet_c[0]) and np.isfinite(m.outlet_c[1])
