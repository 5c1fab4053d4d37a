"""Issue 14 item 7: the draws are stored sparsely and made per step, with the values of the
dense ``(steps, n)`` matrix, and the simulator keeps no steps × devices array."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_support import SCENARIO_DIR, small_raw, small_scenario
from sef.control.controllers import make_controller
from sef.control.profiles import draw_matrix, draw_schedule
from sef.control.scenario import scenario_from_dict
from sef.control.simulator import simulate
from sef.models.draws import DrawSchedule


def _dense_backed(dense: np.ndarray, dt_s: float) -> DrawSchedule:
    """A schedule holding the dense matrix cell by cell (one piece per non-zero step)."""
    k, i = np.nonzero(dense)
    return DrawSchedule(
        dense.shape[1], dt_s, dense.shape[0], i, k * dt_s, (k + 1) * dt_s, dense[k, i]
    )


def _csvs(tmp_path: Path) -> list[str | Path]:
    a = tmp_path / "a.csv"
    a.write_text("start,volume_gal,flow_gpm\n00:00,15,1.7\n00:05,2,1.0\n23:58,3,1.0\n")
    b = tmp_path / "b.csv"  # three draws inside one 5-min step, one wrapping past the end
    b.write_text("start_s,volume_l,flow_l_per_min\n100,10,5\n130,10,5\n190,2,4\n86350,30,6\n")
    return [a, b]


@pytest.mark.parametrize("dt_s,steps", [(60.0, 1440), (300.0, 288), (60.0, 100)])
@pytest.mark.parametrize("case", ["doe", "doe_shift_scale", "csv_shift", "csv_scale"])
def test_sparse_rows_equal_dense_matrix(tmp_path: Path, dt_s: float, steps: int, case: str) -> None:
    cases: dict[str, dict[str, Any]] = {
        "doe": {},
        "doe_shift_scale": {"shift_std_s": 3600.0, "scale_range": (0.7, 1.3)},
        "csv_shift": {"shift_std_s": 600.0, "csv_paths": _csvs(tmp_path)},
        "csv_scale": {"csv_paths": _csvs(tmp_path), "scale_range": (0.5, 2.0)},
    }
    kw = cases[case]
    dense = draw_matrix(41, dt_s, steps, np.random.default_rng(2), **kw)
    sparse = draw_schedule(41, dt_s, steps, np.random.default_rng(2), **kw)
    assert sparse.shape == dense.shape
    assert dense.any()
    buf = np.full(41, -1.0)
    for k in range(steps):  # bit for bit, through a reused buffer as the simulator does
        np.testing.assert_array_equal(sparse.row(k, out=buf), dense[k])
    np.testing.assert_array_equal(sparse.to_dense(), dense)
    np.testing.assert_array_equal(sparse.sum(axis=1), dense.sum(axis=1))
    np.testing.assert_array_equal(sparse.sum(axis=0), dense.sum(axis=0))
    np.testing.assert_array_equal(sparse[5, 3:9], dense[5, 3:9])
    for k in range(0, steps, 7):  # the first heaters of a step (the scenario's sample)
        np.testing.assert_array_equal(sparse[k, :10], dense[k, :10])
        np.testing.assert_array_equal(sparse[k, 0:100], dense[k, :100])
        np.testing.assert_array_equal(sparse[k, :-3], dense[k, :-3])


def test_three_draws_in_one_step_add_up_in_the_dense_order(tmp_path: Path) -> None:
    csv = _csvs(tmp_path)[1]
    dense = draw_matrix(1, 300.0, 288, np.random.default_rng(0), csv_paths=[csv])
    sparse = draw_schedule(1, 300.0, 288, np.random.default_rng(0), csv_paths=[csv])
    # step 0: 100-220 s, 130-250 s, 190-220 s and the wrapped end of the 86350-s draw
    assert np.count_nonzero(sparse.step_pieces(0)[0] == 0) == 4
    assert sparse.row(0)[0] == dense[0, 0]
    litres = sparse.sum(axis=0) * 300.0 / 60.0
    assert litres[0] == pytest.approx(10 + 10 + 2 + 30)


def test_storage_grows_with_draws_not_steps_times_heaters() -> None:
    n, steps = 10_000, 1440
    tracemalloc.start()
    try:
        sched = draw_schedule(
            n, 60.0, steps, np.random.default_rng(1), shift_std_s=3600, scale_range=(0.7, 1.3)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 12 DOE draws per heater-day, plus at most one wrapped piece per draw
    assert 12 * n <= sched.pieces <= 24 * n
    assert sched.nbytes <= 28 * sched.pieces + 16 * (steps + 1)
    per_heater_day = sched.nbytes / n
    assert per_heater_day < 400  # the dense matrix: 11 520 B per heater-day
    assert peak < 0.2 * 8 * steps * n  # building it never holds a dense matrix either


def test_row_bounds() -> None:
    sched = draw_schedule(3, 60.0, 10, np.random.default_rng(0))
    with pytest.raises(IndexError):
        sched.row(10)
    with pytest.raises(IndexError):
        sched.row(-1)
    with pytest.raises(ValueError):
        DrawSchedule(2, 60.0, 10, np.array([2]), np.zeros(1), np.ones(1), np.ones(1))


@pytest.mark.parametrize("controller", ["baseline", "mpc"])
def test_simulation_series_unchanged_against_dense_draws(controller: str) -> None:
    sc = small_scenario(n_b=3, n_w=25, hours=4.0, kind="smooth", window_h=2.0)
    dense = np.asarray(sc.draws_lpm)
    assert dense.shape == (sc.steps, 25) and dense.any()
    sc_dense = replace(sc, draws_lpm=_dense_backed(dense, sc.dt_s))
    a = simulate(sc, make_controller(controller))
    b = simulate(sc_dense, make_controller(controller))
    assert a.series.keys() == b.series.keys()
    for name in a.series:
        np.testing.assert_array_equal(a.series[name], b.series[name], err_msg=name)
    assert (a.comfort_violations, a.soc_violations, a.clipped_steps) == (
        b.comfort_violations,
        b.soc_violations,
        b.clipped_steps,
    )
    assert a.throughput_kwh == b.throughput_kwh
    # the heaters really drew: the fleet used the draws of the schedule
    assert a.series["wh_kw"].sum() > 0


def _peak_bytes(hours: float) -> int:
    raw = small_raw(n_b=200, n_w=2000, hours=hours)
    tracemalloc.start()
    try:
        sc = scenario_from_dict(raw, SCENARIO_DIR)
        simulate(sc, make_controller("baseline"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def test_simulator_memory_does_not_grow_with_steps_times_devices() -> None:
    _peak_bytes(0.5)  # imports and caches of a first run
    short, long = _peak_bytes(1.0), _peak_bytes(4.0)
    # 180 more steps × 2 200 devices would be 3.2 MB per float64 array kept per step
    assert long - short < 0.25 * 180 * 2200 * 8, (short, long)


def test_no_heaters() -> None:
    sched = draw_schedule(0, 60.0, 30, np.random.default_rng(0))
    assert sched.shape == (30, 0) and sched.pieces == 0
    assert sched.row(29).shape == (0,)
    np.testing.assert_array_equal(sched.sum(axis=1), np.zeros(30))


@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 5, 12])
def test_row_sum_is_numpys_sum_bit_for_bit(nodes: int) -> None:
    from sef.models._waterheater_thermal import row_sum

    rng = np.random.default_rng(nodes)
    a = rng.normal(size=(2000, nodes)) * 10 ** rng.uniform(-8, 8, size=(2000, nodes))
    np.testing.assert_array_equal(row_sum(a), a.sum(axis=1))
    assert row_sum(np.zeros((3, 0))).shape == (3,)
