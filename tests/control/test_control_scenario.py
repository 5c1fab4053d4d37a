"""Scenario files, profiles and forecasts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from control_support import SCENARIO_DIR, small_raw, small_scenario
from sef.control.forecast import PerfectForecaster, ProfileForecaster
from sef.control.profiles import draw_matrix, load_series_csv, resample_mean
from sef.control.scenario import load_scenario, scenario_from_dict
from sef.models.draws import doe_medium_draw_profile


def test_reference_scenario() -> None:
    sc = load_scenario("reference")
    assert (sc.steps, sc.dt_s, sc.n_batteries, sc.n_heaters) == (1440, 60.0, 20, 50)
    assert sc.draws_lpm.shape == (1440, 50)
    # every heater draws its scaled DOE day (208 L nominal, x 0.7..1.3)
    litres = sc.draws_lpm.sum(axis=0)
    assert np.all((litres > 0.69 * 208.2) & (litres < 1.31 * 208.2))
    assert np.all((sc.battery_soc0 >= 0.3) & (sc.battery_soc0 <= 0.7))
    # the smooth target keeps the expected daily energy
    expected = sc.base_expected_kw + sc.wh_expected_kw()
    assert abs(sc.target_kw.mean() - expected.mean()) < 1e-6
    assert sc.target_kw.max() < expected.max() - 10  # it really flattens


def test_reference_is_deterministic() -> None:
    a, b = load_scenario("reference"), load_scenario("reference")
    np.testing.assert_array_equal(a.base_kw, b.base_kw)
    np.testing.assert_array_equal(a.draws_lpm, b.draws_lpm)


def test_resample_preserves_energy() -> None:
    t, v = load_series_csv(SCENARIO_DIR / "bdew_h0_2023-01-17.csv")
    one_min = resample_mean(t, v, 60.0, 1440)
    assert abs(one_min.mean() - v.mean()) < 1e-12
    assert np.allclose(one_min[:15], v[0])
    two_days = resample_mean(t, v, 300.0, 576, period_s=86400.0)
    np.testing.assert_allclose(two_days[:288], two_days[288:])


def test_draw_matrix_unshifted_equals_doe_profile() -> None:
    m = draw_matrix(3, 60.0, 1440, np.random.default_rng(0))
    for i in range(3):
        np.testing.assert_allclose(m[:, i], doe_medium_draw_profile(60.0), atol=1e-12)


def test_shifted_draws_wrap_and_keep_volume() -> None:
    m = draw_matrix(200, 60.0, 1440, np.random.default_rng(3), shift_std_s=7200.0)
    np.testing.assert_allclose(m.sum(axis=0), doe_medium_draw_profile(60.0).sum(), rtol=1e-9)


def test_bdew_csv_matches_demandlib() -> None:
    pytest.importorskip("demandlib")
    from sef.control.profiles import bdew_h0_kw

    _, v = load_series_csv(SCENARIO_DIR / "bdew_h0_2023-01-17.csv")
    _, v2 = bdew_h0_kw("2023-01-17", 1000.0)
    np.testing.assert_allclose(v, v2, atol=1e-6)
    raw = small_raw()
    raw["base_load"] = {"source": "bdew_h0", "date": "2023-01-17", "homes": 100, "annual_kwh": 1000}
    sc = scenario_from_dict(raw, SCENARIO_DIR)
    np.testing.assert_allclose(sc.base_expected_kw[:15], 100 * v[0], rtol=1e-5)


def test_toml_file_and_errors(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("time_s,kw\n0,50\n3600,70\n")
    toml = tmp_path / "s.toml"
    toml.write_text(
        'dt_s = 300\nduration_h = 2\n[base_load]\ncsv = "t.csv"\n'
        '[target]\nkind = "csv"\ncsv = "t.csv"\n[batteries]\ncount = 1\n'
    )
    sc = load_scenario(toml)
    assert sc.steps == 24 and np.allclose(sc.target_kw[:12], 50) and sc.n_heaters == 0
    toml.write_text('[base_load]\ncsv = "t.csv"\n[batteries.params]\nwatts = 3\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_scenario(toml)
    toml.write_text('[target]\nkind = "flat"\n')
    with pytest.raises(ValueError, match="needs csv"):
        load_scenario(toml)
    with pytest.raises(FileNotFoundError):
        load_scenario("no-such-scenario")


def test_profile_forecaster_learns_the_level() -> None:
    sc = small_scenario(n_b=1, hours=24.0)
    sc.base_kw = sc.base_expected_kw * 1.1  # a 10 % higher day than the standard profile
    f = ProfileForecaster(sc)
    from control_support import obs

    for k in range(1, 241):
        b = float(sc.base_kw[k - 1])
        f.update(obs(k, b, [6.0], [0.0]))
    out = f.forecast(240, 600)
    assert abs(f.scale - 1.1) < 0.01
    np.testing.assert_allclose(out.base_kw[-1], sc.base_kw[839], rtol=0.02)
    perfect = PerfectForecaster(sc).forecast(1430, 20)
    assert perfect.perfect and perfect.base_kw[15] == sc.base_kw[5]  # wraps the day
