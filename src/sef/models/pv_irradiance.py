"""Irradiance sources for the PV model: clear sky (pvlib) with a seeded cloudiness process,
or a measured-irradiance CSV.

Every source answers :meth:`IrradianceSource.weather` for a vector of UTC times and
``n`` systems with a :class:`Weather` of ``(T, n)`` arrays: global horizontal (GHI),
direct normal (DNI) and diffuse horizontal (DHI) irradiance in W/m² and air temperature
in °C. The plane-of-array transposition is done by :mod:`sef.models.pv`.

Clear sky: :meth:`pvlib.location.Location.get_clearsky` (Ineichen with the Linke
turbidity climatology by default, or Haurwitz / simplified Solis).

Cloudiness: a clear-sky index ``k = GHI / GHI_clear`` per system from a cloud-cover
fraction ``c`` in [0, 1] by Kasten & Czeplak (1980), ``k = 1 - 0.75 c^3.4``; ``c`` is the
logistic of an Ornstein-Uhlenbeck process (time constant ``tau_s``), a shared (feeder-wide)
part mixed with a per-system part (``correlation``), stepped exactly for any time gap and
seeded, so a run is reproducible. The cloudy GHI is split into DNI/DHI with
:func:`pvlib.irradiance.erbs`.

CSV: columns ``time`` (ISO 8601; UTC if naive) and ``ghi`` (W/m²), optional ``dni``,
``dhi`` (W/m²; decomposed with Erbs when absent) and ``temp_air`` (°C); linearly
interpolated in time, zero irradiance outside the file's span.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pvlib

__all__ = [
    "ClearSky",
    "Cloudiness",
    "CsvIrradiance",
    "IrradianceSource",
    "Site",
    "Weather",
    "as_times",
    "clear_sky_index",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Site:
    """Where the fleet is: latitude/longitude (degrees, + = north/east), altitude (m)."""

    latitude: float = 40.0
    longitude: float = -105.0
    altitude_m: float = 1600.0

    def __post_init__(self) -> None:
        if not (-90 <= self.latitude <= 90 and -180 <= self.longitude <= 180):
            raise ValueError(f"invalid site {self.latitude}, {self.longitude}")

    def location(self) -> pvlib.location.Location:
        """The pvlib :class:`~pvlib.location.Location` (UTC)."""
        return pvlib.location.Location(
            self.latitude, self.longitude, tz="UTC", altitude=self.altitude_m
        )


@dataclass(frozen=True)
class Weather:
    """Irradiance and temperature, every array ``(T, n)``.

    Attributes:
        ghi: global horizontal irradiance (W/m²).
        dni: direct normal irradiance (W/m²).
        dhi: diffuse horizontal irradiance (W/m²).
        temp_air: air temperature (°C).
    """

    ghi: FloatArray
    dni: FloatArray
    dhi: FloatArray
    temp_air: FloatArray


def as_times(times: object) -> pd.DatetimeIndex:
    """A tz-aware UTC :class:`pandas.DatetimeIndex` from a datetime, string or sequence."""
    if isinstance(times, pd.DatetimeIndex):
        idx = times
    elif isinstance(times, (list, tuple, np.ndarray, pd.Series)):
        idx = pd.DatetimeIndex(times)
    else:
        idx = pd.DatetimeIndex([times])
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


class IrradianceSource(Protocol):
    """Anything that gives :class:`Weather` for UTC times and ``n`` systems."""

    def weather(self, times: pd.DatetimeIndex, n: int, solar_zenith: FloatArray) -> Weather:
        """Weather at ``times`` for ``n`` systems; ``solar_zenith`` (degrees) is ``(T,)``."""
        ...


def clear_sky_index(cloud_cover: npt.ArrayLike) -> FloatArray:
    """Kasten-Czeplak clear-sky index ``1 - 0.75 c^3.4`` for cloud cover ``c`` (0..1)."""
    c = np.clip(np.asarray(cloud_cover, dtype=np.float64), 0.0, 1.0)
    return np.asarray(1.0 - 0.75 * c**3.4, dtype=np.float64)


class Cloudiness:
    """Seeded cloud-cover process for ``n`` systems (a logistic Ornstein-Uhlenbeck process).

    ``x_i = rho * s + sqrt(1 - rho^2) * e_i`` with ``s`` (shared) and ``e_i`` (per system)
    independent unit OU processes of time constant ``tau_s``; cover ``c_i = 1 / (1 +
    exp(-(mu + sigma * x_i)))``. Queries must come in non-decreasing time; each one
    advances the process exactly (``exp(-dt/tau)`` decay), so the result does not depend
    on how the times are batched.

    Attributes:
        mean_cover: median cloud cover (fraction, 0..1) — sets ``mu``.
        sigma: spread of the logit of the cover (dimensionless); 0 = constant cover.
        tau_s: correlation time (s).
        correlation: ``rho``, 0 = independent systems, 1 = one cloud over the feeder.
    """

    def __init__(
        self,
        mean_cover: float = 0.3,
        sigma: float = 1.5,
        tau_s: float = 900.0,
        correlation: float = 0.7,
        seed: int = 0,
    ) -> None:
        if not (0.0 < mean_cover < 1.0):
            raise ValueError(f"mean_cover must be in (0, 1), got {mean_cover}")
        if sigma < 0 or tau_s <= 0 or not (0.0 <= correlation <= 1.0):
            raise ValueError("need sigma >= 0, tau_s > 0 and 0 <= correlation <= 1")
        self.mean_cover, self.sigma, self.tau_s = mean_cover, sigma, tau_s
        self.correlation = correlation
        self.seed = seed
        self._mu = math.log(mean_cover / (1.0 - mean_cover))
        self._rng = np.random.default_rng(seed)
        self._t: pd.Timestamp | None = None
        self._shared = 0.0
        self._own: FloatArray = np.zeros(0)

    def cover(self, times: pd.DatetimeIndex, n: int) -> FloatArray:
        """Cloud cover (fraction) at ``times``, shape ``(T, n)``."""
        out = np.empty((len(times), n))
        if self._own.shape != (n,):
            self._own = self._rng.standard_normal(n)
            self._shared = float(self._rng.standard_normal())
        rho = self.correlation
        for k, t in enumerate(times):
            if self._t is not None:
                dt = (t - self._t).total_seconds()
                if dt < 0:
                    raise ValueError(f"cloudiness queried backwards in time ({t} < {self._t})")
                a = math.exp(-dt / self.tau_s)
                b = math.sqrt(1.0 - a * a)
                self._shared = a * self._shared + b * float(self._rng.standard_normal())
                self._own = a * self._own + b * self._rng.standard_normal(n)
            self._t = t
            x = rho * self._shared + math.sqrt(1.0 - rho * rho) * self._own
            out[k] = 1.0 / (1.0 + np.exp(-(self._mu + self.sigma * x)))
        return out


class ClearSky:
    """Clear-sky irradiance from pvlib, optionally thinned by a :class:`Cloudiness`.

    Attributes:
        site: the fleet's :class:`Site`.
        model: pvlib clear-sky model, ``"ineichen"``, ``"haurwitz"`` or ``"simplified_solis"``.
        cloudiness: the cloud process (``None`` = clear sky for every system).
        temp_air_c: air temperature (°C), constant.
    """

    def __init__(
        self,
        site: Site | None = None,
        model: str = "ineichen",
        cloudiness: Cloudiness | None = None,
        temp_air_c: float = 20.0,
    ) -> None:
        if model not in ("ineichen", "haurwitz", "simplified_solis"):
            raise ValueError(f"unknown clear-sky model {model!r}")
        self.site = site or Site()
        self.model = model
        self.cloudiness = cloudiness
        self.temp_air_c = temp_air_c
        self._location = self.site.location()

    def clear(self, times: pd.DatetimeIndex) -> pd.DataFrame:
        """Clear-sky ``ghi``/``dni``/``dhi`` (W/m²) at ``times`` (pvlib's frame)."""
        cs = self._location.get_clearsky(times, model=self.model)
        if self.model == "haurwitz":  # GHI only: split with Erbs
            zen = self._location.get_solarposition(times)["apparent_zenith"]
            parts = pvlib.irradiance.erbs(cs["ghi"], zen, times)
            cs = pd.DataFrame({"ghi": cs["ghi"], "dni": parts["dni"], "dhi": parts["dhi"]})
        return cs.fillna(0.0)

    def weather(self, times: pd.DatetimeIndex, n: int, solar_zenith: FloatArray) -> Weather:
        """Clear or cloudy weather for ``n`` systems at ``times``; arrays ``(T, n)``."""
        cs = self.clear(times)
        shape = (len(times), n)
        ghi_c = np.broadcast_to(cs["ghi"].to_numpy(dtype=np.float64)[:, None], shape)
        temp = np.full(shape, self.temp_air_c)
        if self.cloudiness is None:
            dni = np.broadcast_to(cs["dni"].to_numpy(dtype=np.float64)[:, None], shape)
            dhi = np.broadcast_to(cs["dhi"].to_numpy(dtype=np.float64)[:, None], shape)
            return Weather(ghi_c.copy(), dni.copy(), dhi.copy(), temp)
        ghi = ghi_c * clear_sky_index(self.cloudiness.cover(times, n))
        return _decompose(ghi, times, solar_zenith, temp)


def _decompose(
    ghi: FloatArray, times: pd.DatetimeIndex, zenith: FloatArray, temp: FloatArray
) -> Weather:
    """Split GHI ``(T, n)`` into DNI/DHI with Erbs (pvlib)."""
    doy = times.dayofyear.to_numpy(dtype=np.float64)[:, None]
    zen = np.broadcast_to(np.asarray(zenith, dtype=np.float64)[:, None], ghi.shape)
    parts = pvlib.irradiance.erbs(ghi, zen, np.broadcast_to(doy, ghi.shape))
    dni = np.nan_to_num(np.asarray(parts["dni"], dtype=np.float64))
    dhi = np.nan_to_num(np.asarray(parts["dhi"], dtype=np.float64))
    return Weather(np.asarray(ghi, dtype=np.float64), dni, dhi, temp)


class CsvIrradiance:
    """Measured irradiance from a CSV file (see the module docstring for the columns).

    Raises :class:`ValueError` with the file and the reason on a malformed file.
    """

    def __init__(self, path: str | Path, temp_air_c: float = 20.0) -> None:
        self.path = Path(path)
        try:
            with self.path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot read ({exc})") from exc
        if not rows or "time" not in rows[0] or "ghi" not in rows[0]:
            raise ValueError(f"{self.path}: need a header with 'time' and 'ghi' columns")
        try:
            idx = as_times([r["time"] for r in rows])
            cols = {
                name: np.array([float(r[name]) for r in rows])
                for name in ("ghi", "dni", "dhi", "temp_air")
                if name in rows[0] and all(r[name] not in (None, "") for r in rows)
            }
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.path}: bad value ({exc})") from exc
        if not idx.is_monotonic_increasing:
            raise ValueError(f"{self.path}: times must increase")
        for name, col in cols.items():
            if not np.all(np.isfinite(col)) or (name != "temp_air" and np.any(col < 0)):
                raise ValueError(f"{self.path}: column {name!r} has negative or non-finite values")
        self._t = idx.asi8.astype(np.float64) / 1e9
        self._cols = cols
        self.temp_air_c = temp_air_c

    def _interp(self, name: str, times: pd.DatetimeIndex, default: float) -> FloatArray:
        ts = times.asi8.astype(np.float64) / 1e9
        vals = np.interp(ts, self._t, self._cols[name], left=default, right=default)
        return np.asarray(vals, dtype=np.float64)

    def weather(self, times: pd.DatetimeIndex, n: int, solar_zenith: FloatArray) -> Weather:
        """Interpolated measured weather, the same for all ``n`` systems; ``(T, n)``."""
        shape = (len(times), n)

        def col(name: str, default: float) -> FloatArray:
            return np.broadcast_to(self._interp(name, times, default)[:, None], shape).copy()

        ghi = col("ghi", 0.0)
        temp = col("temp_air", self.temp_air_c) if "temp_air" in self._cols else None
        temp = temp if temp is not None else np.full(shape, self.temp_air_c)
        if "dni" in self._cols and "dhi" in self._cols:
            return Weather(ghi, col("dni", 0.0), col("dhi", 0.0), temp)
        return _decompose(ghi, times, solar_zenith, temp)
