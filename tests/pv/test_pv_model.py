"""PV fleet model: physics against a straight pvlib ModelChain, limits, clouds, CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pvlib.modelchain import ModelChain
from pvlib.pvsystem import PVSystem

from sef.models.pv import PVFleet, PVParams, apply_limits, day_times, pct_to_kw, volt_var_kvar
from sef.models.pv_irradiance import ClearSky, Cloudiness, CsvIrradiance, Site, clear_sky_index

SITE = Site(40.0, -105.0, 1600.0)  # Boulder-ish


def _modelchain_kw(
    times: pd.DatetimeIndex, tilt: float, azimuth: float, ac_kw: float
) -> np.ndarray:
    """AC power (kW) of a 5 kWp system by a plain pvlib ModelChain (independent of our code)."""
    loc = SITE.location()
    system = PVSystem(
        surface_tilt=tilt,
        surface_azimuth=azimuth,
        module_parameters={"pdc0": 5000.0, "gamma_pdc": -0.0037},
        inverter_parameters={"pdc0": ac_kw * 1000.0 / 0.96, "eta_inv_nom": 0.96},
        temperature_model_parameters={"u0": 25.0, "u1": 6.84},
    )
    mc = ModelChain(
        system,
        loc,
        aoi_model="physical",
        spectral_model="no_loss",
        temperature_model="faiman",
        losses_model="no_loss",
        transposition_model="haydavies",
    )
    weather = loc.get_clearsky(times)
    weather["temp_air"] = 20.0
    weather["wind_speed"] = 1.0
    mc.run_model(weather)
    return np.asarray(mc.results.ac.clip(lower=0.0).to_numpy() / 1000.0, dtype=np.float64)


def test_clear_sky_noon_matches_modelchain() -> None:
    # Solar noon at -105° is ~19:00 UTC; 5 kWp south-facing, 30° tilt, big inverter (no clip).
    times = pd.DatetimeIndex(["2026-06-21T19:00Z"])
    fleet = PVFleet(dc_kwp=5.0, ac_kw=10.0, tilt_deg=30.0, azimuth_deg=180.0, source=ClearSky(SITE))
    ours = fleet.available_kw(times)[0, 0]
    ref = _modelchain_kw(times, 30.0, 180.0, 10.0)[0]
    assert ref == pytest.approx(ours, abs=2e-3)
    assert 3.8 < ours < 4.8  # sanity: a clear June noon gives ~80-95 % of kWp AC


def test_day_curve_vectorized_matches_modelchain_per_orientation() -> None:
    times = pd.date_range("2026-03-20T12:00Z", "2026-03-21T02:00Z", freq="20min")
    tilts, azis = np.array([30.0, 10.0, 45.0]), np.array([180.0, 90.0, 250.0])
    fleet = PVFleet(
        dc_kwp=5.0, ac_kw=4.6, tilt_deg=tilts, azimuth_deg=azis, n=3, source=ClearSky(SITE)
    )
    ours = fleet.available_kw(times)
    assert ours.shape == (len(times), 3)
    for i in range(3):
        ref = _modelchain_kw(times, tilts[i], azis[i], 4.6)
        np.testing.assert_allclose(ours[:, i], ref, atol=2e-3)
    assert ours.max() <= 4.6 + 1e-9  # clipped at the AC rating


def test_losses_and_night() -> None:
    night = pd.DatetimeIndex(["2026-06-21T07:00Z"])  # 01:00 local
    fleet = PVFleet(dc_kwp=[5.0, 5.0], ac_kw=10.0, source=ClearSky(SITE))
    assert np.all(fleet.available_kw(night) == 0.0)
    noon = pd.DatetimeIndex(["2026-06-21T19:00Z"])
    lossy = PVFleet(dc_kwp=5.0, ac_kw=10.0, source=ClearSky(SITE), params=PVParams(losses=0.14))
    assert lossy.dc_kw(noon)[0, 0] == pytest.approx(0.86 * fleet.dc_kw(noon)[0, 0])


def test_limits_honoured_in_step() -> None:
    noon = pd.Timestamp("2026-06-21T19:00Z")
    fleet = PVFleet(dc_kwp=np.full(4, 6.0), ac_kw=5.0, kva=5.0, source=ClearSky(SITE))
    lim = np.array([np.nan, 2.0, 0.0, 100.0])
    out = fleet.step(noon, 60.0, limit_kw=lim)
    assert np.all(out.available_kw > 4.5)
    np.testing.assert_allclose(out.p_kw, [out.available_kw[0], 2.0, 0.0, out.available_kw[3]])
    assert list(out.curtailed) == [False, True, True, False]
    np.testing.assert_allclose(fleet.energy_kwh, out.p_kw / 60.0)
    # % of rating
    out = fleet.step(noon, 60.0, limit_kw=pct_to_kw(30.0, fleet.ac_kw))
    np.testing.assert_allclose(out.p_kw, 1.5)


def test_power_factor_within_kva() -> None:
    p, q = apply_limits([5.0, 2.0], kva=5.0, pf=0.9, pf_inject=[False, True])
    # constant PF: P reduced to kva*pf where needed; Q = P tan(acos pf), sign by excitation
    np.testing.assert_allclose(p, [4.5, 2.0])
    np.testing.assert_allclose(q, [-4.5 * np.tan(np.arccos(0.9)), 2.0 * np.tan(np.arccos(0.9))])
    assert np.all(np.hypot(p, q) <= 5.0 + 1e-9)
    # reactive request has priority over P
    p, q = apply_limits(5.0, kva=5.0, q_kvar=3.0)
    assert (float(p), float(q)) == pytest.approx((4.0, 3.0))


def test_volt_var_curve() -> None:
    v = np.array([0.90, 0.95, 1.0, 1.05, 1.10])
    q = volt_var_kvar(v, [0.92, 0.98, 1.02, 1.08], [44.0, 0.0, 0.0, -44.0], kva=5.0)
    np.testing.assert_allclose(q, [2.2, 5.0 * 0.44 * (0.03 / 0.06), 0.0, -5.0 * 0.44 * 0.5, -2.2])


@settings(max_examples=200, deadline=None)
@given(
    avail=st.floats(-1.0, 20.0),
    kva=st.floats(0.5, 15.0),
    lim=st.one_of(st.none(), st.floats(-5.0, 30.0), st.just(float("nan"))),
    pf=st.one_of(st.none(), st.floats(0.0, 1.0)),
    inject=st.booleans(),
    q=st.one_of(st.none(), st.floats(-20.0, 20.0)),
)
def test_apply_limits_invariants(
    avail: float, kva: float, lim: float | None, pf: float | None, inject: bool, q: float | None
) -> None:
    p_out, q_out = apply_limits(avail, kva, lim, pf, inject, q)
    p, qq = float(p_out), float(q_out)
    assert 0.0 <= p <= max(avail, 0.0) + 1e-9
    if lim is not None and lim == lim:
        assert p <= max(lim, 0.0) + 1e-9
    assert p * p + qq * qq <= kva * kva * (1 + 1e-9) + 1e-9


def test_cloudiness_seeded_and_batch_invariant() -> None:
    times = pd.date_range("2026-06-21T15:00Z", periods=120, freq="1min")
    a = Cloudiness(seed=7).cover(times, 5)
    b = Cloudiness(seed=7)
    parts = np.vstack([b.cover(times[:50], 5), b.cover(times[50:], 5)])
    np.testing.assert_array_equal(a, parts)
    assert not np.array_equal(a, Cloudiness(seed=8).cover(times, 5))
    assert np.all((a >= 0) & (a <= 1))
    k = clear_sky_index(a)
    assert np.all((k >= 0.25) & (k <= 1.0))
    with pytest.raises(ValueError, match="backwards"):
        b.cover(times[:1], 5)


def test_cloudy_day_below_clear_sky() -> None:
    times = day_times("2026-06-21", 300.0)
    clear = PVFleet(dc_kwp=np.full(20, 5.0), source=ClearSky(SITE)).available_kw(times)
    cloud = ClearSky(SITE, cloudiness=Cloudiness(mean_cover=0.5, seed=3))
    cloudy = PVFleet(dc_kwp=np.full(20, 5.0), source=cloud).available_kw(times)
    assert cloudy.sum() < 0.95 * clear.sum()
    assert cloudy.sum() > 0.3 * clear.sum()
    assert np.std(cloudy[150:160], axis=1).max() > 0  # systems see different clouds


def test_csv_irradiance_reproduces_clear_sky(tmp_path: Path) -> None:
    times = pd.date_range("2026-06-21T12:00Z", "2026-06-22T02:00Z", freq="10min")
    cs = SITE.location().get_clearsky(times)
    path = tmp_path / "irr.csv"
    lines = ["time,ghi,dni,dhi,temp_air"]
    lines += [f"{t.isoformat()},{r.ghi},{r.dni},{r.dhi},20" for t, r in cs.iterrows()]
    path.write_text("\n".join(lines) + "\n")
    a = PVFleet(dc_kwp=5.0, source=CsvIrradiance(path), site=SITE).available_kw(times)
    b = PVFleet(dc_kwp=5.0, source=ClearSky(SITE)).available_kw(times)
    np.testing.assert_allclose(a, b, atol=1e-9)
    # GHI only: Erbs decomposition, still close on a clear day
    path.write_text("\n".join(line.rsplit(",", 3)[0] for line in lines) + "\n")
    c = PVFleet(dc_kwp=5.0, source=CsvIrradiance(path), site=SITE).available_kw(times)
    assert abs(c.sum() - b.sum()) < 0.15 * b.sum()


@pytest.mark.parametrize(
    "text",
    ["", "when,ghi\n1,2\n", "time,ghi\nnot-a-time,3\n", "time,ghi\n2026-06-21T12:00Z,-5\n"],
)
def test_csv_bad_input_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.csv"):
        CsvIrradiance(path)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        PVFleet(dc_kwp=-1.0)
    with pytest.raises(ValueError, match="kva"):
        PVFleet(dc_kwp=5.0, ac_kw=5.0, kva=4.0)
    with pytest.raises(ValueError):
        PVParams(losses=1.5)
