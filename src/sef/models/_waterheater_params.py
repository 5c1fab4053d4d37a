"""Parameters and the linearised view of :class:`~sef.models.waterheater.WaterHeaterModel`.

:class:`WaterHeaterParams` is what the model is built from (scalars or per-device arrays;
:func:`broadcast_params` checks and broadcasts them), :class:`WaterHeaterLinearView` is the
energy-reservoir summary the model gives a model-predictive controller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

__all__ = ["WaterHeaterLinearView", "WaterHeaterParams", "broadcast_params"]


@dataclass(frozen=True)
class WaterHeaterParams:
    """Tank parameters; every physical field is a scalar or an array of shape ``(n,)``.

    Defaults describe a 50-gal (nominal) electric tank (reference notes
    models-and-sunspec.md §1.1, §1.4).

    Attributes
    ----------
    volume_l : array_like, default 170.0
        Water volume, L (OCHRE: 0.9 × 189 L nominal).
    ua_w_per_k : array_like, default 1.33
        Tank loss coefficient, W/K (UEF 0.92, OCHRE's HPXML rule; range 1.1–2.2).
    element_kw : array_like, default 4.5
        Rating of each of the two elements, kW (one runs at a time).
    setpoint_c : array_like, default 51.67
        Thermostat setpoint (top of the band), °C (125 °F, OCHRE/UEF).
    deadband_k : array_like, default 5.56
        Thermostat deadband, K (10 °F, OCHRE ERWH).
    inlet_c : array_like, default 14.4
        Mains (inlet) water temperature, °C (UEF test: 58 °F).
    ambient_c : array_like, default 19.7
        Air temperature around the tank, °C (UEF test: 67.5 °F).
    height_m : array_like, default 1.22
        Height of the water column, m (OCHRE default 4 ft).
    max_setpoint_c : array_like, default 60.0
        Highest setpoint, °C (OCHRE max tank temperature 140 °F); setpoints are clipped.
    initial_c : array_like or None, default None
        Initial temperature of every node, °C; ``None`` = setpoint.
    storage_reference_c : array_like, default 43.33
        Usable-hot-water reference of the CTA-2045 storage commodities, °C (110 °F).
    nodes : int, default 2
        Number of nodes (same for all devices): 1 = mixed, 2 = OCHRE 1/3 + 2/3, N = equal.
    max_substep_s : float, default 60.0
        Longest internal sub-step, s (thermostats are evaluated once per sub-step).
    mixed_delivery_c : array_like or None, default None
        Tempering (mixing) valve delivery temperature, °C; ``None`` (or ``nan`` for a
        device) = no valve. With a valve, ``draw_l_per_min`` is the mixed fixture flow
        and only the hot share ``(T_mix - T_in) / (T_out - T_in)`` leaves the tank while
        the outlet is hotter than ``T_mix`` (OCHRE's fixture draws, 40.56 °C = 105 °F).
    heater_type : str or sequence of str, default "resistance"
        ``"resistance"`` (two elements) or ``"heat_pump"`` (compressor + upper backup
        element, :mod:`sef.models._heat_pump`); one value or one per device.
    compressor_w : array_like, default 500.0
        Heat-pump rated compressor input, W (OCHRE ``HPWH Power (W)``); rated heating
        capacity = ``compressor_w · cop_rated``.
    cop_rated : array_like, default 4.05
        Heat-pump rated COP, scaled by the OCHRE biquadratic (OCHRE from HPXML:
        ``1.1745 · UEF``; 4.05 ≈ UEF 3.45, the reference run's value).
    fan_w : array_like, default 35.0
        Heat-pump fan power while the compressor runs, W (OCHRE).
    parasitic_w : array_like, default 1.0
        Heat-pump standby power while the compressor is off, W (OCHRE).
    wet_bulb_c : array_like, default 15.0
        Wet-bulb temperature of the air around a heat pump, °C (the reference run's value).
    """

    volume_l: ArrayLike = 170.0
    ua_w_per_k: ArrayLike = 1.33
    element_kw: ArrayLike = 4.5
    setpoint_c: ArrayLike = 51.67
    deadband_k: ArrayLike = 5.56
    inlet_c: ArrayLike = 14.4
    ambient_c: ArrayLike = 19.7
    height_m: ArrayLike = 1.22
    max_setpoint_c: ArrayLike = 60.0
    initial_c: ArrayLike | None = None
    storage_reference_c: ArrayLike = 43.33
    nodes: int = 2
    max_substep_s: float = field(default=60.0)
    mixed_delivery_c: ArrayLike | None = None
    heater_type: str | Sequence[str] = "resistance"
    compressor_w: ArrayLike = 500.0
    cop_rated: ArrayLike = 4.05
    fan_w: ArrayLike = 35.0
    parasitic_w: ArrayLike = 1.0
    wet_bulb_c: ArrayLike = 15.0

    @classmethod
    def heat_pump(cls, **overrides: Any) -> WaterHeaterParams:
        """Heat-pump water heater with OCHRE's ``HeatPumpWaterHeater`` defaults: 12 nodes,
        deadband 8.17 K, UA 1.90 W/K (ResStock, ≤ 58 gal); ``overrides`` win."""
        kw: dict[str, Any] = {
            "heater_type": "heat_pump",
            "nodes": 12,
            "deadband_k": 8.17,
            "ua_w_per_k": 1.90,
        }
        kw.update(overrides)
        return cls(**kw)


@dataclass(frozen=True)
class WaterHeaterLinearView:
    """Linearised (energy-reservoir) view for a model-predictive controller.

    ``E[k+1] = E[k] + (cop · P[k] - loss_kw - draw_kw) · Δt / 3600``, with
    ``e_min_kwh <= E <= e_max_kwh`` and ``0 <= P <= p_max_kw`` (``P`` electric; ``cop`` = 1
    for resistance heaters). Energies are heat
    above the inlet temperature. All arrays have shape ``(n,)``.

    Attributes
    ----------
    capacity_kwh_per_k : numpy.ndarray
        Heat capacity of the water, kWh/K.
    ua_kw_per_k : numpy.ndarray
        Loss coefficient, kW/K.
    stored_energy_kwh : numpy.ndarray
        Present heat above inlet, kWh.
    e_min_kwh : numpy.ndarray
        Heat above inlet of a mixed tank at the bottom of the normal band, kWh.
    e_max_kwh : numpy.ndarray
        Heat above inlet of a mixed tank at the normal setpoint, kWh.
    p_max_kw : numpy.ndarray
        Highest electric input in normal operation, kW: one element (resistance), the
        compressor plus fan at the present COP (heat pump).
    loss_kw : numpy.ndarray
        Present standby loss, kW.
    cop : numpy.ndarray or None
        Heat into the water per electric kWh at ``p_max_kw`` (1 for resistance, the
        present heat-pump COP including the fan); ``None`` = 1 for every device.
    """

    capacity_kwh_per_k: FloatArray
    ua_kw_per_k: FloatArray
    stored_energy_kwh: FloatArray
    e_min_kwh: FloatArray
    e_max_kwh: FloatArray
    p_max_kw: FloatArray
    loss_kw: FloatArray
    cop: FloatArray | None = None


_ARRAY_FIELDS = tuple(
    f.name
    for f in fields(WaterHeaterParams)
    if f.name not in ("nodes", "max_substep_s", "heater_type")
)
HEATER_TYPES = ("resistance", "heat_pump")


def broadcast_params(p: WaterHeaterParams, n: int | None) -> tuple[int, dict[str, FloatArray]]:
    """Check ``p`` and broadcast its array fields to ``(n,)``.

    Returns the number of devices (``n``, or the common length of the array fields, 1 if
    all are scalars) and a fresh float array per field name (``initial_c`` defaults to the
    setpoint, ``mixed_delivery_c`` ``None`` to ``nan``; ``heat_pump`` is 1.0 for heat-pump
    devices, else 0.0). Raises ValueError for a bad shape or value.
    """
    if p.max_substep_s <= 0:
        raise ValueError("max_substep_s must be > 0")
    raw = {name: getattr(p, name) for name in _ARRAY_FIELDS}
    if raw["initial_c"] is None:
        raw["initial_c"] = raw["setpoint_c"]
    if raw["mixed_delivery_c"] is None:
        raw["mixed_delivery_c"] = np.nan
    kinds = np.asarray(p.heater_type, dtype=object)
    if not set(kinds.reshape(-1).tolist()) <= set(HEATER_TYPES):
        raise ValueError(f"heater_type must be one of {HEATER_TYPES}, got {p.heater_type!r}")
    raw["heat_pump"] = (kinds == "heat_pump").astype(np.float64)
    arrays = [np.asarray(v, dtype=np.float64) for v in raw.values()]
    shape = np.broadcast_shapes(*(a.shape for a in arrays), (n,) if n is not None else ())
    if len(shape) > 1:
        raise ValueError(f"parameters must be scalars or 1-D arrays, got shape {shape}")
    size = int(shape[0]) if shape else 1
    b = {k: np.broadcast_to(a, (size,)).copy() for k, a in zip(raw, arrays, strict=True)}
    if np.any(b["volume_l"] <= 0) or np.any(b["height_m"] <= 0) or np.any(b["ua_w_per_k"] < 0):
        raise ValueError("volume_l and height_m must be > 0, ua_w_per_k >= 0")
    if np.any(b["element_kw"] < 0) or np.any(b["deadband_k"] < 0):
        raise ValueError("element_kw and deadband_k must be >= 0")
    if np.any(b["cop_rated"] <= 0) or np.any(b["compressor_w"] < 0):
        raise ValueError("cop_rated must be > 0, compressor_w >= 0")
    return size, b
