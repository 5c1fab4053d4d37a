"""Scenarios: a site or feeder with a base load, a target and a fleet (TOML files).

A scenario file (``tomllib``) describes the inputs; :func:`load_scenario` turns it into a
:class:`Scenario` with every time series realised from the seed. Format (all keys but
the fleet counts have defaults; see ``scenarios/reference.toml`` and ``docs/control.md``)::

    name = "reference"
    dt_s = 60                  # time step, s
    duration_h = 24            # length, h
    seed = 2016

    [base_load]
    source = "csv"             # "csv" (time_s,kw interval means) or "bdew_h0" (demandlib)
    csv = "bdew_h0_2023-01-17.csv"   # relative to the TOML file
    scale = 600.0              # csv: multiplier (here 150 homes x 4 MWh/yr)
    # bdew_h0: date = "2023-01-17", homes = 150, annual_kwh = 4000
    noise_std = 0.05           # AR(1) noise, fraction of the load
    noise_tau_min = 30.0       # its correlation time, min
    scale_error_std = 0.03     # day-level scale error (fraction)

    [target]
    objective = "track"        # "track" | "cap" | "floor": what the series below means
    kind = "smooth"            # how the series is made: "smooth" | "flat" | "cap" | "csv"
    window_h = 6.0             # smooth: centred moving average (circular) of the expected
                               # net load (standard profile + expected heater demand)
    # flat: value_kw = kW, or "mean" = daily mean of the expected net load,
    #       or peak_fraction = 0.85 (that fraction of the expected net load's peak)
    # cap: cap_kw = 95.0  (series = min(expected net load, cap_kw))
    # csv: csv = "target.csv" (time_s,kw interval means, resampled to dt_s)

    [batteries]
    count = 20
    initial_soc = [0.3, 0.7]   # uniform spread (fraction)
    [batteries.params]         # any sef.models.battery.BatteryParams field
    rated_power_kw = 5.0

    [water_heaters]
    count = 50
    draws = "doe_medium"       # or a list of draw-schedule CSV files
    shift_std_min = 60.0       # per-heater random time shift of the pattern, min
    volume_scale = [0.7, 1.3]  # per-heater volume factor (uniform)
    initial_c = [46.1, 51.67]  # uniform initial tank temperature, °C
    comfort_min_c = 43.33      # hot-water comfort limit (outlet and top node), °C
    [water_heaters.params]     # scalar sef.models.waterheater.WaterHeaterParams fields

    [control]
    interval_min = 15          # LP grid and re-planning interval, min
    horizon_h = 24             # MPC horizon, h
    end_energy = "return"      # "return" | "free": end-of-horizon stored-energy rule

    [pv]                       # PV systems (issue 17; keys in sef.control.der)
    count = 100
    [evs]                      # EVs, one home-charging session per evening (sef.control.der)
    count = 50

    # in [target]: export_limit_kw = 150.0  (reverse-flow cap: net ≥ −150 kW; PV is
    # curtailed only to hold it, as a last resort)

Objectives (``Scenario.objective``; ``Scenario.target_kw`` is always the per-step series):

* ``track``: ``target_kw`` is a target; deviations both ways count (score: RMSE, kW);
* ``cap``: ``target_kw`` is a one-sided limit: nothing above it if feasible, minimal
  excess otherwise; any load below it is free (score: energy above the cap, kWh);
* ``floor``: the mirror image, a lower limit (score: energy below the floor, kWh).

End-energy rule (``Scenario.end_energy``): ``return`` (default) — batteries and tanks end
the horizon with their starting stored energy, and the report charges a controller for
any energy it took from storage (``sef.control.report``); ``free`` — the end energy is
the controller's choice and is not charged (still reported).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from sef.control import profiles
from sef.models.battery import BatteryParams
from sef.models.draws import DrawSchedule
from sef.models.waterheater import WaterHeaterParams
from sef.models.waterheater_dr import DRSettings

if TYPE_CHECKING:  # sef.control.der needs pvlib and pandas (the der extra): imported on use
    from sef.control.der import EVScenario, PVScenario

__all__ = [
    "END_ENERGY_RULES",
    "OBJECTIVES",
    "ControlSettings",
    "Scenario",
    "load_scenario",
    "scenario_from_dict",
]

#: Objectives a scenario may ask for (see the module docstring).
OBJECTIVES = ("track", "cap", "floor")
#: End-of-horizon stored-energy rules.
END_ENERGY_RULES = ("return", "free")

FloatArray = npt.NDArray[np.float64]
WATER_KWH_PER_L_K = 4183.0 / 3.6e6


@dataclass(frozen=True)
class ControlSettings:
    """Controller settings shared by the control apps.

    Attributes:
        interval_min: control interval = LP time step (min); a multiple of ``dt_s``.
        horizon_h: MPC horizon (h).
        wh_shed_duration_s: length of each Shed / Load Up event (s, ≤ 32767).
        wh_lp_min_mean_c: LP comfort bound: lowest fleet mean tank temperature (°C).
        battery_soc_margin: SOC margin kept off the limits by the planners (fraction).
    """

    interval_min: float = 15.0
    horizon_h: float = 24.0
    wh_shed_duration_s: int = 3600
    wh_lp_min_mean_c: float = 44.0
    battery_soc_margin: float = 0.02


@dataclass
class Scenario:
    """A realised scenario: every array is on the grid of ``steps`` × ``dt_s``.

    Attributes:
        name: scenario name.
        dt_s: time step (s).
        steps: number of steps.
        seed: random seed of the realisation.
        base_kw: realised uncontrolled base load, interval means (kW), ``(steps,)``.
        base_expected_kw: the standard profile without noise (kW): forecasters' input.
        target_kw: target net load (kW), ``(steps,)``.
        battery_params: parameters of every battery.
        battery_soc0: initial SOC per battery (fraction), ``(n_b,)``.
        wh_params: water-heater parameters (``initial_c`` per heater).
        wh_dr: demand-response settings of the heaters.
        draws_lpm: per-heater draw flow (L/min), ``(steps, n_w)``, stored sparsely
            (``draws_lpm.row(k)``: the flows of step ``k``).
        draws_expected_lpm: forecast of the fleet draw flow (L/min), ``(steps,)``.
        comfort_min_c: comfort limit for the top node and the outlet (°C).
        control: controller settings.
        source: the parsed TOML (for the report).
        objective: ``"track"`` (``target_kw`` is a target), ``"cap"`` (an upper limit:
            nothing above it if feasible, minimal excess otherwise) or ``"floor"`` (a
            lower limit).
        end_energy: ``"return"`` (batteries and tanks end with their starting stored
            energy) or ``"free"``.
        pv: the PV fleet (:class:`~sef.control.der.PVScenario`) or ``None``.
        ev: the EV sessions (:class:`~sef.control.der.EVScenario`) or ``None``.
        export_limit_kw: reverse-flow cap (kW ≥ 0: the net load must stay ≥ −limit) or
            ``None``.
    """

    name: str
    dt_s: float
    steps: int
    seed: int
    base_kw: FloatArray
    base_expected_kw: FloatArray
    target_kw: FloatArray
    battery_params: BatteryParams
    battery_soc0: FloatArray
    wh_params: WaterHeaterParams
    wh_dr: DRSettings
    draws_lpm: DrawSchedule
    draws_expected_lpm: FloatArray
    comfort_min_c: float
    control: ControlSettings = field(default_factory=ControlSettings)
    source: dict[str, Any] = field(default_factory=dict)
    objective: str = "track"
    end_energy: str = "return"
    pv: PVScenario | None = None
    ev: EVScenario | None = None
    export_limit_kw: float | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"[target] objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"
            )
        if self.end_energy not in END_ENERGY_RULES:
            raise ValueError(
                f"[control] end_energy must be one of {', '.join(END_ENERGY_RULES)}, "
                f"got {self.end_energy!r}"
            )

    @property
    def n_batteries(self) -> int:
        """Number of batteries in the fleet."""
        return int(self.battery_soc0.shape[0])

    @property
    def n_heaters(self) -> int:
        """Number of water heaters in the fleet."""
        return int(self.draws_lpm.shape[1])

    @property
    def n_pv(self) -> int:
        """Number of PV systems."""
        return self.pv.n if self.pv is not None else 0

    @property
    def n_ev_sessions(self) -> int:
        """Number of EV sessions (charger columns)."""
        return self.ev.n if self.ev is not None else 0

    def ev_uncontrolled_kw(self) -> FloatArray:
        """Fleet EV load (kW) if every charger ran at the EV's rating (no control)."""
        if self.ev is None:
            return np.zeros(self.steps)
        return self.ev.uncontrolled_kw(self.dt_s, self.steps)

    @property
    def time_s(self) -> FloatArray:
        """Start time of every step (s)."""
        return np.arange(self.steps, dtype=np.float64) * self.dt_s

    @property
    def interval_steps(self) -> int:
        """Simulation steps per control interval."""
        return max(1, round(self.control.interval_min * 60.0 / self.dt_s))

    def wh_scalar(self, name: str) -> float:
        """Fleet mean of a water-heater parameter (unit of the parameter)."""
        return float(np.mean(np.asarray(getattr(self.wh_params, name), dtype=np.float64)))

    def wh_uncontrolled_means(self) -> tuple[float, float]:
        """Draw-weighted mean outlet temperature (°C) and mean standby loss per heater (kW)
        of the uncontrolled fleet, from the tank model itself (not mid-deadband).

        Steps up to 200 of the fleet's tanks (their parameters, normal thermostat) through
        the scenario's draws once and caches the two scalars: a stratified tank delivers
        water near the top of its band, so the mid-band assumption was biased low. Only
        these two fleet means are used (no heater's timing).
        """
        cached = self.__dict__.get("_wh_means")
        if cached is not None:
            return cast(tuple[float, float], cached)
        from sef.models.waterheater import WaterHeaterModel

        m = min(self.n_heaters, 200)
        if m == 0:
            out = self.wh_scalar("setpoint_c") - 0.5 * self.wh_scalar("deadband_k")
            loss = self.wh_scalar("ua_w_per_k") / 1000.0 * (out - self.wh_scalar("ambient_c"))
            self.__dict__["_wh_means"] = (out, loss)
            return out, loss
        init = np.asarray(self.wh_params.initial_c, dtype=np.float64)
        params = replace(self.wh_params, initial_c=np.broadcast_to(init, (self.n_heaters,))[:m])
        model = WaterHeaterModel(params, n=m)
        for k in range(self.steps):
            model.step(self.dt_s, self.draws_lpm[k, :m])
        drawn = float(model.drawn_l.sum())
        out_c = (
            self.wh_scalar("inlet_c")
            + float(model.delivered_kwh.sum()) / (WATER_KWH_PER_L_K * drawn)
            if drawn > 0
            else self.wh_scalar("setpoint_c")
        )
        loss_kw = float(model.loss_kwh.sum()) / m / (self.steps * self.dt_s / 3600.0)
        self.__dict__["_wh_means"] = (out_c, loss_kw)
        return out_c, loss_kw

    def wh_draw_kw_per_lpm(self) -> float:
        """Heat taken out per L/min of draw (kW per L/min), at the model's mean outlet
        temperature (:meth:`wh_uncontrolled_means`)."""
        out_c = self.wh_uncontrolled_means()[0]
        return WATER_KWH_PER_L_K * 60.0 * (out_c - self.wh_scalar("inlet_c"))

    def wh_expected_kw(self) -> FloatArray:
        """Expected uncontrolled heater fleet demand (kW): draw heat + standby loss, both
        from the tank model (:meth:`wh_uncontrolled_means`)."""
        loss = self.n_heaters * self.wh_uncontrolled_means()[1]
        return self.draws_expected_lpm * self.wh_draw_kw_per_lpm() + loss


def _pair(value: Any, default: tuple[float, float]) -> tuple[float, float]:
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value), float(value)
    lo, hi = (float(v) for v in value)
    if hi < lo:
        raise ValueError(f"range {value!r}: upper bound below lower bound")
    return lo, hi


def _dataclass_kwargs(cls: type, raw: dict[str, Any], section: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"[{section}]: unknown keys {sorted(unknown)} (known: {sorted(names)})")
    return dict(raw)


def _base_load(
    raw: dict[str, Any], base_dir: Path, dt_s: float, steps: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    source = raw.get("source", "csv")
    if source == "csv":
        if "csv" not in raw:
            raise ValueError("[base_load] source 'csv' needs csv = \"FILE\" (time_s,kw)")
        t, v = profiles.load_series_csv(base_dir / raw["csv"])
        v = v * float(raw.get("scale", 1.0))
    elif source == "bdew_h0":
        t, v = profiles.bdew_h0_kw(
            str(raw.get("date", "2023-01-17")), float(raw.get("annual_kwh", 4000.0))
        )
        v = v * float(raw.get("homes", 1))
    else:
        raise ValueError(f"[base_load] source must be 'csv' or 'bdew_h0', got {source!r}")
    expected = profiles.resample_mean(t, v, dt_s, steps, period_s=86400.0)
    scale = 1.0 + rng.normal(0.0, float(raw.get("scale_error_std", 0.0)))
    noise = profiles.ar1_noise(
        rng,
        steps,
        dt_s,
        float(raw.get("noise_std", 0.0)),
        60.0 * float(raw.get("noise_tau_min", 30.0)),
    )
    return np.clip(expected * scale * (1.0 + noise), 0.0, None), expected


def scenario_from_dict(raw: dict[str, Any], base_dir: str | Path = ".") -> Scenario:
    """Build a :class:`Scenario` from parsed TOML (``base_dir``: where relative paths start)."""
    base = Path(base_dir)
    dt_s = float(raw.get("dt_s", 60.0))
    steps = round(float(raw.get("duration_h", 24.0)) * 3600.0 / dt_s)
    if dt_s <= 0 or steps < 1:
        raise ValueError("dt_s and duration_h must be > 0")
    seed = int(raw.get("seed", 0))
    rng = np.random.default_rng(seed)
    base_kw, base_exp = _base_load(raw.get("base_load", {}), base, dt_s, steps, rng)

    braw = dict(raw.get("batteries", {}))
    n_b = int(braw.get("count", 0))
    bparams = BatteryParams(
        **_dataclass_kwargs(BatteryParams, braw.get("params", {}), "batteries.params")
    )
    lo, hi = _pair(braw.get("initial_soc"), (0.5, 0.5))
    soc0 = np.clip(rng.uniform(lo, hi, n_b), bparams.soc_min, bparams.soc_max)

    wraw = dict(raw.get("water_heaters", {}))
    n_w = int(wraw.get("count", 0))
    wkw = _dataclass_kwargs(WaterHeaterParams, wraw.get("params", {}), "water_heaters.params")
    sp = float(wkw.get("setpoint_c", WaterHeaterParams.setpoint_c))
    db = float(wkw.get("deadband_k", WaterHeaterParams.deadband_k))
    t_lo, t_hi = _pair(wraw.get("initial_c"), (sp - db, sp))
    wkw["initial_c"] = rng.uniform(t_lo, t_hi, n_w) if n_w else np.zeros(0)
    wparams = WaterHeaterParams(**wkw)
    dr = DRSettings(**_dataclass_kwargs(DRSettings, wraw.get("dr", {}), "water_heaters.dr"))
    draws_cfg = wraw.get("draws", "doe_medium")
    csvs: list[str | Path] = [] if draws_cfg == "doe_medium" else [base / p for p in draws_cfg]
    shift_s = 60.0 * float(wraw.get("shift_std_min", 0.0))
    vscale = _pair(wraw.get("volume_scale"), (1.0, 1.0))
    draws = profiles.draw_schedule(
        n_w, dt_s, steps, rng, shift_std_s=shift_s, scale_range=vscale, csv_paths=csvs
    )
    draws_exp = profiles.expected_draw_flow(
        n_w, dt_s, steps, shift_std_s=shift_s, scale_range=vscale, csv_paths=csvs
    )
    craw = dict(raw.get("control", {}))
    end_energy = str(craw.pop("end_energy", "return"))
    control = ControlSettings(**_dataclass_kwargs(ControlSettings, craw, "control"))
    traw = dict(raw.get("target", {}))
    export = traw.pop("export_limit_kw", None)
    if export is not None and not float(export) >= 0:
        raise ValueError(f"[target] export_limit_kw must be >= 0 kW, got {export!r}")
    pv_raw, ev_raw = dict(raw.get("pv", {})), dict(raw.get("evs", {}))
    pv: PVScenario | None = None
    ev: EVScenario | None = None
    if pv_raw or ev_raw:  # pvlib and pandas only for a scenario with PV or EVs
        from sef.control.der import ev_from_raw, pv_from_raw

        pv = pv_from_raw(pv_raw, base, dt_s, steps, seed)
        ev = ev_from_raw(ev_raw, seed)
    sc = Scenario(
        name=str(raw.get("name", "scenario")),
        dt_s=dt_s,
        steps=steps,
        seed=seed,
        base_kw=base_kw,
        base_expected_kw=base_exp,
        target_kw=np.zeros(steps),
        battery_params=bparams,
        battery_soc0=soc0,
        wh_params=wparams,
        wh_dr=dr,
        draws_lpm=draws,
        draws_expected_lpm=draws_exp,
        comfort_min_c=float(wraw.get("comfort_min_c", 43.33)),
        control=control,
        source=raw,
        objective=str(traw.get("objective", "track")),
        end_energy=end_energy,
        pv=pv,
        ev=ev,
        export_limit_kw=None if export is None else float(export),
    )
    sc.target_kw = _target(traw, base, sc)
    return sc


def _target(raw: dict[str, Any], base_dir: Path, sc: Scenario) -> FloatArray:
    kind = raw.get("kind", "flat")
    expected = sc.base_expected_kw + sc.wh_expected_kw()
    if sc.pv is not None:  # issue 17: expected PV and uncontrolled EV charging
        expected = expected - sc.pv.expected_kw
    if sc.ev is not None:
        expected = expected + sc.ev_uncontrolled_kw()
    if kind == "flat":
        if "peak_fraction" in raw:
            if "value_kw" in raw:
                raise ValueError("[target] flat: give value_kw or peak_fraction, not both")
            level = float(raw["peak_fraction"]) * float(np.max(expected))
        else:
            value = raw.get("value_kw", "mean")
            level = float(np.mean(expected)) if value == "mean" else float(value)
        return np.full(sc.steps, level, dtype=np.float64)
    if kind == "smooth":
        width = max(1, round(float(raw.get("window_h", 6.0)) * 3600.0 / sc.dt_s))
        kernel = np.ones(width) / width
        wrapped = np.concatenate([expected[-(width // 2) :], expected, expected[:width]])
        smooth = np.convolve(wrapped, kernel, mode="valid")
        return np.asarray(smooth[: sc.steps], dtype=np.float64)
    if kind == "cap":
        if "cap_kw" not in raw:
            raise ValueError("[target] kind 'cap' needs cap_kw = kW")
        return np.asarray(np.minimum(expected, float(raw["cap_kw"])), dtype=np.float64)
    if kind == "csv":
        if "csv" not in raw:
            raise ValueError("[target] kind 'csv' needs csv = \"FILE\" (time_s,kw)")
        t, v = profiles.load_series_csv(base_dir / raw["csv"])
        return profiles.resample_mean(t, v, sc.dt_s, sc.steps)
    raise ValueError(f"[target] kind must be 'smooth', 'flat', 'cap' or 'csv', got {kind!r}")


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load a scenario TOML file, or a built-in one by name (``"reference"``)."""
    p = Path(path_or_name)
    if not p.suffix and not p.exists():
        res = resources.files("sef.control.scenarios").joinpath(f"{path_or_name}.toml")
        if not res.is_file():
            raise FileNotFoundError(f"no scenario file {path_or_name!r} and no built-in one")
        with resources.as_file(res) as real:
            return load_scenario(real)
    with open(p, "rb") as fh:
        raw = tomllib.load(fh)
    return scenario_from_dict(raw, p.parent)
