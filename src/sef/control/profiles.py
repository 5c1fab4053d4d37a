"""Time series of a scenario: base load, its noise, hot-water draws and their forecast.

All series are sampled on the scenario grid: ``steps`` intervals of ``dt_s`` seconds;
a value is the **mean over the interval** (kW, L/min), so energies are exact sums.

* Base load: the BDEW H0 standard household profile (demandlib, 15-min means, scaled to
  an annual energy) or a CSV ``time_s,kw`` of interval means; held constant inside each
  source interval. The realised load is ``profile · (1 + ε_day) · (1 + n(t))`` with a
  day-level scale error ``ε_day`` and AR(1) noise ``n`` (correlation time ``tau``).
* Draws: the DOE UEF medium pattern (or CSV schedules) per heater, whole pattern shifted
  by a per-heater random time (normal, wraps around the scenario length) and volumes
  scaled by a per-heater factor (uniform). Scenarios keep them sparse
  (:func:`draw_schedule`, a :class:`~sef.models.draws.DrawSchedule` of draw pieces, each
  step's flows made when the step runs); :func:`draw_matrix` is the dense equivalent.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sef.models.draws import (
    DOE_MEDIUM_UEF_DRAWS,
    DrawEvent,
    DrawSchedule,
    load_draw_schedule_csv,
)

__all__ = [
    "ar1_noise",
    "bdew_h0_kw",
    "draw_matrix",
    "draw_schedule",
    "expected_draw_flow",
    "load_series_csv",
    "resample_mean",
]

FloatArray = npt.NDArray[np.float64]


def load_series_csv(path: str | Path, column: str = "kw") -> tuple[FloatArray, FloatArray]:
    """Read ``time_s`` and ``column`` from a CSV (``#`` comment lines allowed).

    Returns:
        ``(time_s, values)``: start of each source interval (s) and its mean value.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    rows = list(csv.DictReader(lines))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    try:
        t = np.array([float(r["time_s"]) for r in rows])
        v = np.array([float(r[column]) for r in rows])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: need numeric columns time_s and {column}: {exc}") from exc
    if np.any(np.diff(t) <= 0) or not np.all(np.isfinite(v)):
        raise ValueError(f"{path}: time_s must increase and values be finite")
    return t, v


def resample_mean(
    time_s: FloatArray, values: FloatArray, dt_s: float, steps: int, period_s: float | None = None
) -> FloatArray:
    """Interval means of a step-held series on the grid ``k·dt_s``, ``k < steps``.

    Each source value holds from its ``time_s`` to the next one (the last one for the
    median source interval length). With ``period_s`` the source repeats with that
    period (a one-day profile over several days).
    """
    src_dt = float(np.median(np.diff(time_s))) if len(time_s) > 1 else dt_s
    end = float(time_s[-1] + src_dt)
    period = period_s if period_s is not None else end
    # integrate the step function exactly on a fine grid of breakpoints
    edges = np.arange(steps + 1) * dt_s
    cum_src = np.concatenate([[0.0], np.cumsum(values * np.diff(np.append(time_s, end)))])
    knots = np.append(time_s, end)

    def integral(x: FloatArray) -> FloatArray:
        cycles = np.floor(x / period)
        r = x - cycles * period
        r = np.minimum(r, end)
        idx = np.clip(np.searchsorted(knots, r, side="right") - 1, 0, len(values) - 1)
        part = cum_src[idx] + values[idx] * (r - knots[idx])
        return np.asarray(cycles * cum_src[-1] + part, dtype=np.float64)

    return np.asarray(np.diff(integral(edges.astype(np.float64))) / dt_s, dtype=np.float64)


def bdew_h0_kw(date: str, annual_kwh: float) -> tuple[FloatArray, FloatArray]:
    """One day of the BDEW H0 household profile (needs the optional ``demandlib``).

    Returns:
        ``(time_s, kw)``: 96 quarter-hour means (kW) for a household of ``annual_kwh``.
    """
    try:
        from demandlib import bdew  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "base_load source 'bdew_h0' needs demandlib (pip install demandlib 'pandas<3'); "
            "or use a CSV"
        ) from exc
    year = int(date[:4])
    profile = bdew.ElecSlp(year).get_scaled_profiles({"h0": float(annual_kwh)})["h0"]
    day = np.asarray(profile.loc[date[:10]].to_numpy(), dtype=np.float64) * 4.0
    if day.size != 96:
        raise ValueError(f"BDEW H0 profile for {date} has {day.size} quarter hours, expected 96")
    return np.arange(96, dtype=np.float64) * 900.0, day


def ar1_noise(
    rng: np.random.Generator, steps: int, dt_s: float, std: float, tau_s: float
) -> FloatArray:
    """Stationary AR(1) noise with standard deviation ``std`` and correlation time ``tau_s``."""
    if std <= 0 or steps == 0:
        return np.zeros(steps)
    a = float(np.exp(-dt_s / max(tau_s, 1e-9)))
    innov = rng.normal(0.0, std * np.sqrt(1.0 - a * a), steps)
    out = np.empty(steps)
    x = rng.normal(0.0, std)
    for k in range(steps):  # 1440 steps/day: cheap; scipy.signal.lfilter would also do
        x = a * x + innov[k]
        out[k] = x
    return out


Pieces = list[tuple[FloatArray, FloatArray, npt.NDArray[np.intp], FloatArray]]


def _events_arrays(
    patterns: Sequence[Sequence[DrawEvent]], assign: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.intp], FloatArray, FloatArray, FloatArray]:
    """Every heater's pattern events, heater-major: ``(heater, start_s, volume_l, flow)``
    (new arrays: the caller may change them in place)."""
    parts = []
    for p, pattern in enumerate(patterns):
        ev = np.array([(e.start_s, e.volume_l, e.flow_l_per_min) for e in pattern]).reshape(-1, 3)
        hs = np.flatnonzero(assign == p)
        parts.append((np.repeat(hs, len(ev)), *(np.tile(ev[:, c], hs.size) for c in range(3))))
    if len(parts) == 1:
        heater, start, vol, flow = parts[0]
        return heater.astype(np.intp, copy=False), start, vol, flow
    heater, start, vol, flow = (np.concatenate([x[i] for x in parts]) for i in range(4))
    del parts
    order = np.argsort(heater, kind="stable")  # heater-major, as a loop over heaters
    return heater[order].astype(np.intp, copy=False), start[order], vol[order], flow[order]


def _draw_pieces(
    n: int,
    dt_s: float,
    steps: int,
    rng: np.random.Generator,
    shift_std_s: float,
    scale_range: tuple[float, float],
    csv_paths: Sequence[str | Path],
) -> Pieces:
    """The heaters' draws as ``(start_s, end_s, heater, flow)`` groups: in-horizon parts,
    then the parts that wrap past the end (restarting at 0). Computed in place: a million
    heaters' 11 M draws hold ~350 MB at a time, not several copies."""
    patterns: list[Sequence[DrawEvent]] = (
        [load_draw_schedule_csv(p) for p in csv_paths] if csv_paths else [DOE_MEDIUM_UEF_DRAWS]
    )
    assign = np.arange(n) % len(patterns)
    shifts = rng.normal(0.0, shift_std_s, n) if shift_std_s > 0 else np.zeros(n)
    scales = rng.uniform(scale_range[0], scale_range[1], n)
    heater, start, vol, flow = _events_arrays(patterns, assign)
    total_s = steps * dt_s
    start += shifts[heater]
    np.mod(start, total_s, out=start)
    end = vol  # the duration 60·vol·scale/flow, then start + duration
    end *= 60.0
    end *= scales[heater]
    end /= flow
    end += start
    # split events that wrap past the end into two pieces
    wrap = end > total_s
    pieces: Pieces = []
    if wrap.any():
        tail = end[wrap]
        tail -= total_s
        pieces.append((np.zeros(tail.size), tail, heater[wrap], flow[wrap]))
    np.minimum(end, total_s, out=end)
    return [(start, end, heater, flow), *pieces]


def draw_matrix(
    n: int,
    dt_s: float,
    steps: int,
    rng: np.random.Generator,
    *,
    shift_std_s: float = 0.0,
    scale_range: tuple[float, float] = (1.0, 1.0),
    csv_paths: Sequence[str | Path] = (),
) -> FloatArray:
    """Per-heater draw flow, L/min (interval means), dense, shape ``(steps, n)``.

    Heater ``i`` uses the DOE medium pattern (or ``csv_paths[i % len]``), shifted by a
    normal random time of standard deviation ``shift_std_s`` (s, wrapping around the
    scenario length) with volumes scaled by a uniform factor in ``scale_range`` (the
    flow rate is kept, so durations scale). Volumes are preserved exactly.

    8 bytes per heater-step (11.5 kB per heater-day at 1 min): the reference for small
    fleets; scenarios use :func:`draw_schedule` (same values, sparse).
    """
    pieces = _draw_pieces(n, dt_s, steps, rng, shift_std_s, scale_range, csv_paths)
    out = np.zeros((steps, n))
    for s0, s1, h, f in pieces:
        first = np.floor(s0 / dt_s).astype(np.intp)
        span = int(np.max(np.ceil(s1 / dt_s) - first)) if s0.size else 0
        for j in range(max(span, 0)):
            b = first + j
            lo = b * dt_s
            ov = np.clip(np.minimum(lo + dt_s, s1) - np.maximum(lo, s0), 0.0, None)
            ok = (ov > 0) & (b < steps)
            np.add.at(out, (b[ok], h[ok]), ov[ok] / dt_s * f[ok])
    return out


def draw_schedule(
    n: int,
    dt_s: float,
    steps: int,
    rng: np.random.Generator,
    *,
    shift_std_s: float = 0.0,
    scale_range: tuple[float, float] = (1.0, 1.0),
    csv_paths: Sequence[str | Path] = (),
) -> DrawSchedule:
    """The draws of :func:`draw_matrix` (same arguments, same random numbers drawn from
    ``rng``, same per-step values) stored sparsely as a :class:`DrawSchedule`: ~340 bytes
    per heater-day for the DOE pattern instead of 11.5 kB."""
    pieces = _draw_pieces(n, dt_s, steps, rng, shift_std_s, scale_range, csv_paths)
    if len(pieces) == 1:
        start, end, heater, flow = pieces.pop()
    else:
        start, end, heater, flow = (np.concatenate([p[i] for p in pieces]) for i in range(4))
        del pieces
    return DrawSchedule(n, dt_s, steps, heater, start, end, flow)


def expected_draw_flow(
    n: int,
    dt_s: float,
    steps: int,
    *,
    shift_std_s: float = 0.0,
    scale_range: tuple[float, float] = (1.0, 1.0),
    csv_paths: Sequence[str | Path] = (),
) -> FloatArray:
    """Expected fleet draw flow, L/min, shape ``(steps,)``: the forecast of the draws.

    The nominal pattern(s) times ``n`` times the mean volume scale, smoothed by the
    distribution of the random shifts (a circular Gaussian kernel): what a forecaster
    that knows the usage pattern but not each household's timing expects.
    """
    rng = np.random.default_rng(0)
    nominal = draw_matrix(len(csv_paths) or 1, dt_s, steps, rng, csv_paths=csv_paths)
    per_heater = nominal.mean(axis=1) * 0.5 * (scale_range[0] + scale_range[1])
    if shift_std_s > 0:
        lag = (np.arange(steps) - steps // 2) * dt_s
        kernel = np.exp(-0.5 * (lag / shift_std_s) ** 2)
        kernel /= kernel.sum()
        spec = np.fft.rfft(per_heater) * np.fft.rfft(np.fft.ifftshift(kernel))
        per_heater = np.fft.irfft(spec, n=steps)
    return np.asarray(np.clip(per_heater, 0.0, None) * n, dtype=np.float64)
