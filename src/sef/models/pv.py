"""Smart PV inverter model, vectorized over a fleet of ``n`` systems with numpy.

Chain per time step (every array has shape ``(n,)``, or ``(T, n)`` for a time series):

1. Weather from an :class:`~sef.models.pv_irradiance.IrradianceSource`: clear sky from
   pvlib (optionally thinned by a seeded :class:`~sef.models.pv_irradiance.Cloudiness`)
   or a measured-irradiance CSV — GHI/DNI/DHI (W/m²), air temperature (°C).
2. Plane of array: :func:`pvlib.irradiance.get_total_irradiance` (Hay-Davies
   transposition) for each system's tilt/azimuth; the direct part is reduced by the
   angle-of-incidence modifier :func:`pvlib.iam.physical`.
3. Cell temperature: :func:`pvlib.temperature.faiman` (1 m/s wind).
4. DC power: :func:`pvlib.pvsystem.pvwatts_dc` with the DC rating ``dc_kwp`` (kWp at
   1000 W/m², 25 °C) and ``gamma_pdc``; times ``1 - losses`` (soiling, wiring, mismatch).
5. AC power: :func:`pvlib.inverter.pvwatts` (the PVWatts efficiency curve, clipping at the
   inverter's AC rating ``ac_kw``): this is the **available** power.
6. Limits (:func:`apply_limits`): active-power / export limit (kW; :func:`pct_to_kw` for a
   % of the rating), then reactive power — a power-factor setpoint (constant PF) or a
   reactive-power request (e.g. from :func:`volt_var_kvar`) — within the apparent-power
   rating ``kva``: ``sqrt(P^2 + Q^2) <= kva``.

Sign conventions: active power ``p_kw`` >= 0 is generation (export to the grid);
reactive power ``q_kvar`` > 0 is injected (over-excited), < 0 absorbed (under-excited).
The model has no site load, so its export limit is its active-power limit.

The stable API for the simulator (``sef simulate``)::

    clouds = ClearSky(Site(), cloudiness=Cloudiness(seed=1))
    fleet = PVFleet(dc_kwp=np.full(100, 5.0), ac_kw=4.6, source=clouds)
    avail = fleet.available_kw(times)                 # (T, n) kW, no limits
    out = fleet.step(t, dt_s=60, limit_kw=lim)          # one step, limits applied
    out.p_kw, out.q_kvar, out.available_kw, fleet.energy_kwh

Sources: pvlib 0.16 (PVWatts v5 DC and inverter models), Kasten & Czeplak (1980) for the
cloud cover to clear-sky index relation; see ``docs/inverter.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import pvlib

from sef.models.pv_irradiance import ClearSky, IrradianceSource, Site, as_times

__all__ = [
    "PVFleet",
    "PVParams",
    "PVStep",
    "apply_limits",
    "day_times",
    "pct_to_kw",
    "volt_var_kvar",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PVParams:
    """Parameters shared by every system of a :class:`PVFleet`.

    Attributes:
        gamma_pdc: temperature coefficient of DC power (1/°C), PVWatts default -0.0037.
        eta_inv_nom: nominal inverter efficiency (fraction), pvlib's 0.96.
        eta_inv_ref: reference inverter efficiency (fraction), pvlib's 0.9637.
        losses: DC system losses (fraction, 0..1): soiling, wiring, mismatch, ...
        albedo: ground reflectance (fraction).
        wind_speed: wind speed for the cell temperature (m/s).
        faiman_u0: Faiman constant heat-transfer coefficient (W/m²/K).
        faiman_u1: Faiman wind heat-transfer coefficient (W/m²/K per m/s).
        n_glass: refractive index of the cover for :func:`pvlib.iam.physical`.
    """

    gamma_pdc: float = -0.0037
    eta_inv_nom: float = 0.96
    eta_inv_ref: float = 0.9637
    losses: float = 0.0
    albedo: float = 0.25
    wind_speed: float = 1.0
    faiman_u0: float = 25.0
    faiman_u1: float = 6.84
    n_glass: float = 1.526

    def __post_init__(self) -> None:
        checks = {
            "0 < eta_inv_nom <= 1": 0 < self.eta_inv_nom <= 1,
            "0 < eta_inv_ref <= 1": 0 < self.eta_inv_ref <= 1,
            "0 <= losses < 1": 0 <= self.losses < 1,
            "0 <= albedo <= 1": 0 <= self.albedo <= 1,
            "wind_speed >= 0": self.wind_speed >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid PV parameters: {', '.join(bad)}")


@dataclass(frozen=True)
class PVStep:
    """Outcome of one step, arrays ``(n,)``.

    Attributes:
        available_kw: AC power the array could deliver without limits (kW).
        p_kw: AC active power delivered (kW, >= 0).
        q_kvar: reactive power (kvar, + = injected).
        curtailed: True where a limit took power away (``p_kw < available_kw``).
    """

    available_kw: FloatArray
    p_kw: FloatArray
    q_kvar: FloatArray
    curtailed: npt.NDArray[np.bool_]


def pct_to_kw(pct: npt.ArrayLike, ac_kw: npt.ArrayLike) -> FloatArray:
    """Active-power limit in kW from a percentage (0..100 %) of the AC rating ``ac_kw`` (kW)."""
    p = np.clip(np.asarray(pct, dtype=np.float64), 0.0, 100.0)
    return np.asarray(p / 100.0 * np.asarray(ac_kw, dtype=np.float64), dtype=np.float64)


def volt_var_kvar(
    v_pu: npt.ArrayLike,
    v_points_pu: npt.ArrayLike,
    q_points_pct: npt.ArrayLike,
    kva: npt.ArrayLike,
) -> FloatArray:
    """Reactive power (kvar) of a volt-var curve at voltage ``v_pu`` (per unit).

    The curve is piecewise linear through ``(v_points_pu, q_points_pct)`` (Q in % of the
    kVA rating ``kva``, + = inject), flat beyond its ends (IEEE 1547-2018 §5.3.3).
    """
    q_pct = np.interp(
        np.asarray(v_pu, dtype=np.float64),
        np.asarray(v_points_pu, dtype=np.float64),
        np.asarray(q_points_pct, dtype=np.float64),
    )
    return np.asarray(q_pct / 100.0 * np.asarray(kva, dtype=np.float64), dtype=np.float64)


def apply_limits(
    available_kw: npt.ArrayLike,
    kva: npt.ArrayLike,
    limit_kw: npt.ArrayLike | None = None,
    pf: npt.ArrayLike | None = None,
    pf_inject: npt.ArrayLike = False,
    q_kvar: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Active and reactive power after the limits (pure, vectorized).

    Parameters:
        available_kw: available AC power (kW, >= 0).
        kva: apparent-power rating (kVA, > 0).
        limit_kw: active-power (export) limit (kW); ``None`` or NaN = none.
        pf: power-factor setpoint magnitude (0 < pf <= 1); ``None`` or NaN = unity.
            Constant-PF mode: ``Q = P tan(acos pf)``; when ``P/pf`` exceeds ``kva`` the
            active power is reduced to ``kva * pf`` so that the power factor holds.
        pf_inject: True = over-excited (inject vars, Q > 0), False = absorb (Q < 0).
        q_kvar: a reactive-power request (kvar, + = inject) that replaces ``pf`` where
            given (not NaN), e.g. from :func:`volt_var_kvar`; clipped to ``±kva`` and
            given priority: ``P <= sqrt(kva^2 - Q^2)``.

    Returns:
        ``(p_kw, q_kvar)``, arrays of the broadcast shape.
    """
    avail = np.maximum(np.nan_to_num(np.asarray(available_kw, dtype=np.float64)), 0.0)
    s = np.asarray(kva, dtype=np.float64)
    p = np.minimum(avail, s)
    if limit_kw is not None:
        lim = np.asarray(limit_kw, dtype=np.float64)
        p = np.where(np.isnan(lim), p, np.minimum(p, np.maximum(lim, 0.0)))
    p, s = np.broadcast_arrays(p, s)
    q = np.zeros_like(p)
    if pf is not None:
        pf_a = np.broadcast_to(np.asarray(pf, dtype=np.float64), p.shape)
        pf_c = np.clip(np.nan_to_num(pf_a, nan=1.0), 1e-3, 1.0)
        p = np.minimum(p, s * pf_c)
        sign = np.where(np.broadcast_to(np.asarray(pf_inject, dtype=bool), p.shape), 1.0, -1.0)
        q = sign * p * np.tan(np.arccos(pf_c))
    if q_kvar is not None:
        qr = np.broadcast_to(np.asarray(q_kvar, dtype=np.float64), p.shape)
        given = ~np.isnan(qr)
        q_req = np.clip(np.nan_to_num(qr), -s, s)
        p = np.where(given, np.minimum(p, np.sqrt(np.maximum(s * s - q_req * q_req, 0.0))), p)
        q = np.where(given, q_req, q)
    return np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)


def _array(value: npt.ArrayLike, n: int, name: str, positive: bool = True) -> FloatArray:
    arr = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)))
    if not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
        raise ValueError(f"{name} must be finite{' and > 0' if positive else ''}")
    return arr


class PVFleet:
    """``n`` PV systems, each a DC array (kWp) behind a smart inverter (kW, kVA).

    Attributes:
        params: shared :class:`PVParams`.
        source: the weather (:class:`~sef.models.pv_irradiance.IrradianceSource`).
        site: the fleet's location (all systems on one feeder).
        dc_kwp: DC rating per system (kWp at STC), ``(n,)``.
        ac_kw: inverter AC active-power rating (kW), ``(n,)``.
        kva: inverter apparent-power rating (kVA), ``(n,)``, >= ``ac_kw``.
        tilt_deg: array tilt from horizontal (degrees), ``(n,)``.
        azimuth_deg: array azimuth (degrees, 180 = south), ``(n,)``.
        p_kw, q_kvar, last_available_kw: the last step's values (kW, kvar), ``(n,)``.
        energy_kwh: AC energy delivered since creation (kWh), ``(n,)``.
    """

    def __init__(
        self,
        dc_kwp: npt.ArrayLike,
        ac_kw: npt.ArrayLike | None = None,
        kva: npt.ArrayLike | None = None,
        tilt_deg: npt.ArrayLike = 30.0,
        azimuth_deg: npt.ArrayLike = 180.0,
        source: IrradianceSource | None = None,
        site: Site | None = None,
        params: PVParams | None = None,
        n: int | None = None,
    ) -> None:
        """Create the fleet; scalars broadcast to ``n`` (default: the length of ``dc_kwp``).

        ``ac_kw`` defaults to ``dc_kwp / 1.2`` (a DC/AC ratio of 1.2), ``kva`` to ``ac_kw``;
        ``source`` defaults to clear sky at ``site`` (or the source's own site).
        """
        n = int(np.size(dc_kwp)) if n is None else n
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.params = params or PVParams()
        self.dc_kwp = _array(dc_kwp, n, "dc_kwp")
        self.ac_kw = _array(self.dc_kwp / 1.2 if ac_kw is None else ac_kw, n, "ac_kw")
        self.kva = _array(self.ac_kw if kva is None else kva, n, "kva")
        if np.any(self.kva < self.ac_kw - 1e-9):
            raise ValueError("kva must be >= ac_kw")
        self.tilt_deg = _array(tilt_deg, n, "tilt_deg", positive=False)
        self.azimuth_deg = _array(azimuth_deg, n, "azimuth_deg", positive=False)
        if source is None:
            source = ClearSky(site)
        self.source = source
        src_site = getattr(source, "site", None)
        self.site = site or (src_site if isinstance(src_site, Site) else Site())
        self._location = self.site.location()
        self.p_kw: FloatArray = np.zeros(n)
        self.q_kvar: FloatArray = np.zeros(n)
        self.last_available_kw: FloatArray = np.zeros(n)
        self.energy_kwh: FloatArray = np.zeros(n)

    @property
    def n(self) -> int:
        """Number of systems."""
        return int(self.dc_kwp.shape[0])

    def dc_kw(self, times: object) -> FloatArray:
        """DC power at the maximum power point (kW), ``(T, n)`` for UTC ``times``."""
        idx = as_times(times)
        pp = self.params
        sp = self._location.get_solarposition(idx)
        zen = sp["apparent_zenith"].to_numpy(dtype=np.float64)
        azi = sp["azimuth"].to_numpy(dtype=np.float64)
        w = self.source.weather(idx, self.n, zen)
        z2, a2 = zen[:, None], azi[:, None]
        dni_extra = pvlib.irradiance.get_extra_radiation(idx).to_numpy(dtype=np.float64)
        poa = pvlib.irradiance.get_total_irradiance(
            self.tilt_deg[None, :],
            self.azimuth_deg[None, :],
            z2,
            a2,
            w.dni,
            w.ghi,
            w.dhi,
            dni_extra=dni_extra[:, None],
            albedo=pp.albedo,
            model="haydavies",
        )
        aoi = pvlib.irradiance.aoi(self.tilt_deg[None, :], self.azimuth_deg[None, :], z2, a2)
        iam = pvlib.iam.physical(aoi, n=pp.n_glass)
        direct = np.nan_to_num(np.asarray(poa["poa_direct"], dtype=np.float64))
        diffuse = np.nan_to_num(np.asarray(poa["poa_diffuse"], dtype=np.float64))
        effective = np.maximum(direct * np.nan_to_num(iam) + diffuse, 0.0)
        total = np.maximum(np.nan_to_num(np.asarray(poa["poa_global"], dtype=np.float64)), 0.0)
        t_cell = pvlib.temperature.faiman(
            total, w.temp_air, pp.wind_speed, u0=pp.faiman_u0, u1=pp.faiman_u1
        )
        pdc_w = pvlib.pvsystem.pvwatts_dc(
            effective, t_cell, self.dc_kwp[None, :] * 1000.0, pp.gamma_pdc
        )
        return np.maximum(np.asarray(pdc_w, dtype=np.float64), 0.0) * (1.0 - pp.losses) / 1000.0

    def ac_from_dc_kw(self, dc_kw: npt.ArrayLike) -> FloatArray:
        """AC power (kW) through the PVWatts inverter curve, clipped at ``ac_kw``."""
        pdc0_w = self.ac_kw * 1000.0 / self.params.eta_inv_nom
        ac_w = pvlib.inverter.pvwatts(
            np.asarray(dc_kw, dtype=np.float64) * 1000.0,
            pdc0_w,
            eta_inv_nom=self.params.eta_inv_nom,
            eta_inv_ref=self.params.eta_inv_ref,
        )
        return np.maximum(np.nan_to_num(np.asarray(ac_w, dtype=np.float64)), 0.0) / 1000.0

    def available_kw(self, times: object) -> FloatArray:
        """Available AC power (kW) before any limit, ``(T, n)`` for UTC ``times``.

        With a :class:`~sef.models.pv_irradiance.Cloudiness` source this advances the
        cloud process: query in non-decreasing time.
        """
        return self.ac_from_dc_kw(self.dc_kw(times))

    def step(
        self,
        t: object,
        dt_s: float,
        limit_kw: npt.ArrayLike | None = None,
        pf: npt.ArrayLike | None = None,
        pf_inject: npt.ArrayLike = False,
        q_kvar: npt.ArrayLike | None = None,
        available_kw: npt.ArrayLike | None = None,
    ) -> PVStep:
        """One step: the power at UTC time ``t`` held for ``dt_s`` seconds.

        ``limit_kw`` (kW, NaN = none), ``pf``/``pf_inject`` and ``q_kvar`` (kvar) as in
        :func:`apply_limits`; ``available_kw`` (kW, ``(n,)``) skips the irradiance chain
        (e.g. a row of a precomputed :meth:`available_kw` series). Updates ``p_kw``,
        ``q_kvar``, ``last_available_kw`` and ``energy_kwh``.
        """
        if not (dt_s >= 0 and math.isfinite(dt_s)):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        if available_kw is None:
            avail = self.available_kw(t)[0]
        else:
            avail = np.array(np.broadcast_to(np.asarray(available_kw, dtype=np.float64), (self.n,)))
        p, q = apply_limits(avail, self.kva, limit_kw, pf, pf_inject, q_kvar)
        p = np.minimum(p, self.ac_kw)
        self.last_available_kw, self.p_kw, self.q_kvar = avail, p, q
        self.energy_kwh = self.energy_kwh + p * dt_s / 3600.0
        return PVStep(avail, p, q, p < avail - 1e-9)


def day_times(date: str, dt_s: float = 60.0) -> pd.DatetimeIndex:
    """UTC times covering the day ``date`` (``YYYY-MM-DD``) every ``dt_s`` seconds."""
    start = pd.Timestamp(date, tz="UTC")
    return pd.date_range(start, start + pd.Timedelta(days=1), freq=pd.Timedelta(seconds=dt_s))[:-1]
