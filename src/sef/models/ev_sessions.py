"""A seeded generator of home-charging EV sessions for :class:`sef.models.ev.EVFleet`.

Distributions (typical weekday home charging; the numbers are round values from the
sources below as summarised from memory, not fitted here — change the
:class:`HomeChargingProfile` fields for another population):

* **arrival** (plug-in) time: normal around 18:00 local, sd 1.5 h, clipped to 14:00-23:30.
  Home plug-in times peak in the early evening in the large trials: the INL *EV Project*
  residential Level 2 data (2011-2013) and the UK *My Electric Avenue* trial (Quirós-Tortós,
  Ochoa & Lees, "A statistical analysis of EV charging behavior in the UK", IEEE PES
  ISGT-LA 2015), both with the plug-in peak between 17:00 and 20:00.
* **departure** (unplug) time: next morning, normal around 07:30, sd 1 h, clipped to
  05:00-10:00 (the same studies: unplugging concentrated 06:00-09:00).
* **energy need**: daily driving distance lognormal with median 40 km (US NHTS 2017:
  about 30 miles of driving per vehicle per day) times a consumption of 0.18-0.20 kWh/km
  (EPA ratings of current EVs, about 30 kWh/100 mi), clipped to 2-50 kWh and to what
  the battery can take.
* **battery** 40-100 kWh (uniform over common sizes: 40, 60, 75, 100 kWh);
  **max charge rate** of the on-board charger 7.2 kW (two thirds) or 11 kW (one third);
  a 32 A / 240 V Level 2 home charger gives 7.7 kW.
* **charger efficiency** (AC to battery) 0.90 ± 0.02 (Level 2 measurements are mostly
  0.85-0.93).
* **arrival state of charge**: what is left after driving, from ``soc_full`` (0.8, the
  usual daily charge limit) minus the need, at least 0.1.

All times are seconds from ``day0_s`` (midnight of the first day, on the fleet's time
axis); sessions of ``days`` > 1 start on successive evenings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sef.models.ev import EVSessions

__all__ = ["HomeChargingProfile", "home_sessions"]

_H = 3600.0


@dataclass(frozen=True)
class HomeChargingProfile:
    """Parameters of :func:`home_sessions` (hours are local clock hours, 0-24).

    Attributes:
        arrival_h, arrival_sd_h, arrival_range_h: arrival mean, sd and clip range (h).
        departure_h, departure_sd_h, departure_range_h: next-morning departure (h).
        distance_median_km, distance_sigma: lognormal daily distance (km, log-sd).
        consumption_kwh_per_km: (low, high) uniform consumption (kWh/km).
        need_range_kwh: clip range of the energy need (kWh).
        battery_sizes_kwh: battery sizes drawn uniformly (kWh).
        rates_kw, rate_weights: on-board charger limits (kW) and their probabilities.
        efficiency, efficiency_sd: AC-to-battery efficiency mean and sd (fraction).
        soc_full: state of charge the driver charges to (fraction).
    """

    arrival_h: float = 18.0
    arrival_sd_h: float = 1.5
    arrival_range_h: tuple[float, float] = (14.0, 23.5)
    departure_h: float = 7.5
    departure_sd_h: float = 1.0
    departure_range_h: tuple[float, float] = (5.0, 10.0)
    distance_median_km: float = 40.0
    distance_sigma: float = 0.6
    consumption_kwh_per_km: tuple[float, float] = (0.18, 0.20)
    need_range_kwh: tuple[float, float] = (2.0, 50.0)
    battery_sizes_kwh: tuple[float, ...] = (40.0, 60.0, 75.0, 100.0)
    rates_kw: tuple[float, ...] = (7.2, 11.0)
    rate_weights: tuple[float, ...] = (2 / 3, 1 / 3)
    efficiency: float = 0.90
    efficiency_sd: float = 0.02
    soc_full: float = 0.8


def home_sessions(
    n: int,
    *,
    seed: int = 0,
    day0_s: float = 0.0,
    days: int = 1,
    profile: HomeChargingProfile | None = None,
) -> EVSessions:
    """``n`` home-charging sessions per day for ``days`` days (``n * days`` sessions,
    EV ``i`` of day ``d`` at index ``d * n + i``), reproducible from ``seed``.

    Times are Unix-like seconds: ``day0_s`` is midnight of the first day (s).
    """
    if n < 1 or days < 1:
        raise ValueError(f"n and days must be >= 1, got n={n}, days={days}")
    p = profile or HomeChargingProfile()
    rng = np.random.default_rng(seed)
    m = n * days
    day = np.repeat(np.arange(days, dtype=np.float64), n)
    arr_h = np.clip(rng.normal(p.arrival_h, p.arrival_sd_h, m), *p.arrival_range_h)
    dep_h = np.clip(rng.normal(p.departure_h, p.departure_sd_h, m), *p.departure_range_h)
    arrival = day0_s + day * 24 * _H + arr_h * _H
    departure = day0_s + (day + 1) * 24 * _H + dep_h * _H
    km = p.distance_median_km * np.exp(rng.normal(0.0, p.distance_sigma, m))
    need = km * rng.uniform(*p.consumption_kwh_per_km, m)
    battery = rng.choice(np.asarray(p.battery_sizes_kwh), m)
    need = np.clip(need, *p.need_range_kwh)
    need = np.minimum(need, (p.soc_full - 0.1) * battery)
    soc0 = np.maximum(p.soc_full - need / battery, 0.1)
    weights = np.asarray(p.rate_weights) / np.sum(p.rate_weights)
    rate = rng.choice(np.asarray(p.rates_kw), m, p=weights)
    eff = np.clip(rng.normal(p.efficiency, p.efficiency_sd, m), 0.8, 0.98)
    return EVSessions.build(
        arrival,
        departure,
        need,
        battery_kwh=battery,
        max_rate_kw=rate,
        efficiency=eff,
        soc0=soc0,
    )
