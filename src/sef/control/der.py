"""PV systems and EVs in a control scenario (issue 17): TOML sections → realised fleets.

The device physics are the models' (:mod:`sef.models.pv` with pvlib, :mod:`sef.models.ev`
and its session generator :mod:`sef.models.ev_sessions`); this module only reads the
scenario's ``[pv]`` and ``[evs]`` sections and realises them on the scenario's grid::

    [pv]
    count = 100
    dc_kwp = [3.0, 8.0]          # uniform per system (kWp at STC)
    dc_ac_ratio = 1.2            # inverter AC rating = kWp / ratio (kW); or ac_kw = 4.6
    tilt_deg = [15.0, 40.0]      # uniform per system (degrees)
    azimuth_deg = [120.0, 240.0] # uniform per system (degrees, 180 = south)
    date = "2023-06-21"          # the scenario's day (local midnight = step 0)
    utc_offset_h = 2.0           # local time − UTC (h)
    latitude = 48.1
    longitude = 11.6
    altitude_m = 520.0
    cloud_seed = 7               # a seeded cloud process (sef.models.pv_irradiance.Cloudiness)
    mean_cover = 0.3             # its median cloud cover (fraction); omit cloud_seed: clear sky
    cloud_sigma = 1.5
    cloud_tau_min = 15.0
    cloud_correlation = 0.7
    # irradiance_csv = "ghi.csv" # measured irradiance instead (time,ghi[,dni,dhi,temp_air])

    [evs]
    count = 50
    seed = 5                     # session draws (default: the scenario seed + 17)
    before_start = "deferred"    # the evening before: "deferred" (nothing charged before
                                 # step 0: an off-peak timer) or "uncontrolled" (charged at
                                 # the EVs' ratings from their arrival)
    # any sef.models.ev_sessions.HomeChargingProfile field, e.g. arrival_h = 18.0

Realised: ``PVScenario.available_kw`` (steps × systems, kW AC before any limit, interval
starts + half a step), the clear-sky fleet power (the forecasters' shape) and the
expected fleet power (clear sky × the mean clear-sky index of the cloud process: what a
forecaster knows without the realisation). EVs: one home-charging session per EV per
evening, the day before and the day itself (``home_sessions(days=2)`` from one day before
step 0), so the cars plugged in at midnight are there from the start, owing what the
evening before left them: all of it with ``before_start = "deferred"`` (the default: an
off-peak timer held them to midnight), or what is left after charging at their ratings
from arrival (``"uncontrolled"``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sef.models.ev import EVFleet, EVSessions
from sef.models.ev_sessions import HomeChargingProfile, home_sessions
from sef.models.pv import PVFleet
from sef.models.pv_irradiance import ClearSky, Cloudiness, CsvIrradiance, Site, clear_sky_index

__all__ = ["EVScenario", "PVScenario", "ev_from_raw", "pv_from_raw"]

FloatArray = npt.NDArray[np.float64]
DAY_S = 86400.0

_PV_KEYS = {
    "count",
    "dc_kwp",
    "dc_ac_ratio",
    "ac_kw",
    "tilt_deg",
    "azimuth_deg",
    "date",
    "utc_offset_h",
    "latitude",
    "longitude",
    "altitude_m",
    "cloud_seed",
    "mean_cover",
    "cloud_sigma",
    "cloud_tau_min",
    "cloud_correlation",
    "irradiance_csv",
    "temp_air_c",
}


@dataclass(frozen=True)
class PVScenario:
    """A realised PV fleet.

    Attributes:
        dc_kwp: DC rating per system (kWp), ``(n,)``.
        ac_kw: inverter AC rating per system (kW), ``(n,)``.
        available_kw: realised available AC power (kW), ``(steps, n)``.
        clear_kw: clear-sky fleet power (kW), ``(steps,)``.
        expected_kw: expected fleet power (kW): clear sky × the cloud process's mean
            clear-sky index (measured irradiance: the realised fleet power smoothed over
            an hour, the "day-ahead" view), ``(steps,)``.
        mean_index: the mean clear-sky index used for ``expected_kw`` (1 = clear).
    """

    dc_kwp: FloatArray
    ac_kw: FloatArray
    available_kw: FloatArray
    clear_kw: FloatArray
    expected_kw: FloatArray
    mean_index: float

    @property
    def n(self) -> int:
        """Number of PV systems."""
        return int(self.dc_kwp.shape[0])


@dataclass(frozen=True)
class EVScenario:
    """Realised EV sessions (``2 × count``: the evening before and the day's evening).

    Attributes:
        sessions: :class:`~sef.models.ev.EVSessions` on the scenario's time axis (s from
            step 0; the day before's arrivals are negative).
        count: EVs (chargers).
    """

    sessions: EVSessions
    count: int
    before_start: str = "deferred"

    @property
    def n(self) -> int:
        """Number of sessions (one charger column each)."""
        return self.sessions.n

    def fleet_at_start(self, dt_s: float) -> EVFleet:
        """An :class:`EVFleet` at step 0: the sessions of the evening before charged
        uncontrolled (every charger at the EV's rating, ``dt_s`` steps) up to 0, or
        nothing charged (``before_start = "deferred"``)."""
        t0 = min(0.0, float(np.floor(self.sessions.arrival_s.min() / dt_s) * dt_s))
        fleet = EVFleet(self.sessions, t0_s=t0)
        limit = self.sessions.max_rate_kw if self.before_start == "uncontrolled" else 0.0
        while fleet.t_s < -1e-9:
            fleet.step(min(dt_s, -fleet.t_s), limit)
        fleet.t_s = 0.0
        fleet.power_kw = np.zeros(fleet.n)
        return fleet

    def uncontrolled_kw(self, dt_s: float, steps: int) -> FloatArray:
        """Fleet EV load (kW) per step if every charger ran at the EV's rating."""
        fleet = self.fleet_at_start(dt_s)
        out = np.zeros(steps)
        for k in range(steps):
            out[k] = float(fleet.step(dt_s, self.sessions.max_rate_kw).sum())
        return out


def _uniform(rng: np.random.Generator, value: Any, n: int, default: float) -> FloatArray:
    if value is None:
        return np.full(n, default)
    if isinstance(value, int | float):
        return np.full(n, float(value))
    lo, hi = (float(v) for v in value)
    if hi < lo:
        raise ValueError(f"range {value!r}: upper bound below lower bound")
    return rng.uniform(lo, hi, n)


def _mean_clear_index(mean_cover: float, sigma: float) -> float:
    """E[k] of the Kasten-Czeplak index of a logistic-normal cover (quadrature)."""
    q = (np.arange(4001) + 0.5) / 4001.0
    from scipy.stats import norm

    mu = np.log(mean_cover / (1.0 - mean_cover))
    cover = 1.0 / (1.0 + np.exp(-(mu + sigma * norm.ppf(q))))
    return float(np.mean(clear_sky_index(cover)))


def pv_from_raw(
    raw: dict[str, Any], base_dir: Path, dt_s: float, steps: int, seed: int
) -> PVScenario | None:
    """Realise ``[pv]`` (``None`` without systems); ``ValueError`` names a bad key."""
    n = int(raw.get("count", 0))
    if n <= 0:
        return None
    unknown = set(raw) - _PV_KEYS
    if unknown:
        raise ValueError(f"[pv]: unknown keys {sorted(unknown)} (known: {sorted(_PV_KEYS)})")
    rng = np.random.default_rng(seed + 16)
    kwp = _uniform(rng, raw.get("dc_kwp"), n, 5.0)
    if "ac_kw" in raw:
        ac = _uniform(rng, raw["ac_kw"], n, 4.0)
    else:
        ac = kwp / float(raw.get("dc_ac_ratio", 1.2))
    tilt = _uniform(rng, raw.get("tilt_deg"), n, 30.0)
    azi = _uniform(rng, raw.get("azimuth_deg"), n, 180.0)
    site = Site(
        float(raw.get("latitude", 48.1)),
        float(raw.get("longitude", 11.6)),
        float(raw.get("altitude_m", 520.0)),
    )
    temp = float(raw.get("temp_air_c", 20.0))
    start = pd.Timestamp(str(raw.get("date", "2023-06-21")), tz="UTC")
    start -= pd.Timedelta(hours=float(raw.get("utc_offset_h", 0.0)))
    times = start + pd.to_timedelta((np.arange(steps) + 0.5) * dt_s, unit="s")
    clear_fleet = PVFleet(
        kwp, ac, tilt_deg=tilt, azimuth_deg=azi, source=ClearSky(site, temp_air_c=temp)
    )
    clear = clear_fleet.available_kw(times)
    clear_kw = np.asarray(clear.sum(axis=1), dtype=np.float64)
    if "irradiance_csv" in raw:
        src = CsvIrradiance(base_dir / str(raw["irradiance_csv"]), temp_air_c=temp)
        avail = PVFleet(kwp, ac, tilt_deg=tilt, azimuth_deg=azi, source=src, site=site)
        available = avail.available_kw(times)
        width = max(1, round(3600.0 / dt_s))
        total = available.sum(axis=1)
        expected = np.convolve(total, np.ones(width) / width, mode="same")
        mean_k = float(total.sum() / max(clear_kw.sum(), 1e-9))
    elif "cloud_seed" in raw:
        cover, sigma = float(raw.get("mean_cover", 0.3)), float(raw.get("cloud_sigma", 1.5))
        clouds = Cloudiness(
            mean_cover=cover,
            sigma=sigma,
            tau_s=60.0 * float(raw.get("cloud_tau_min", 15.0)),
            correlation=float(raw.get("cloud_correlation", 0.7)),
            seed=int(raw["cloud_seed"]),
        )
        fleet = PVFleet(
            kwp,
            ac,
            tilt_deg=tilt,
            azimuth_deg=azi,
            source=ClearSky(site, cloudiness=clouds, temp_air_c=temp),
        )
        available = fleet.available_kw(times)
        mean_k = _mean_clear_index(cover, sigma)
        expected = clear_kw * mean_k
    else:
        available, mean_k, expected = clear, 1.0, clear_kw.copy()
    return PVScenario(
        dc_kwp=kwp,
        ac_kw=np.asarray(ac, dtype=np.float64),
        available_kw=np.ascontiguousarray(available, dtype=np.float64),
        clear_kw=clear_kw,
        expected_kw=np.asarray(expected, dtype=np.float64),
        mean_index=mean_k,
    )


def ev_from_raw(raw: dict[str, Any], seed: int) -> EVScenario | None:
    """Realise ``[evs]`` (``None`` without EVs); ``ValueError`` names a bad key."""
    n = int(raw.get("count", 0))
    if n <= 0:
        return None
    known = {f.name for f in fields(HomeChargingProfile)}
    before = str(raw.get("before_start", "deferred"))
    if before not in ("deferred", "uncontrolled"):
        raise ValueError(f"[evs] before_start must be 'deferred' or 'uncontrolled', got {before!r}")
    prof_raw = {k: v for k, v in raw.items() if k not in ("count", "seed", "before_start")}
    unknown = set(prof_raw) - known
    if unknown:
        raise ValueError(
            f"[evs]: unknown keys {sorted(unknown)} (known: count, seed, {sorted(known)})"
        )
    prof_kw: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in prof_raw.items()
    }
    profile = HomeChargingProfile(**prof_kw)
    sessions = home_sessions(
        n, seed=int(raw.get("seed", seed + 17)), day0_s=-DAY_S, days=2, profile=profile
    )
    return EVScenario(sessions=sessions, count=n, before_start=before)
