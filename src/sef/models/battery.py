"""Battery energy-reservoir model, vectorized with numpy.

One :class:`BatteryModel` steps one battery or a fleet of 100 000 with the same code: the
state is a numpy array ``energy_kwh`` of shape ``(n,)`` and every operation is elementwise.

Sign convention (model side): **power > 0 charges the battery, power < 0 discharges it**
(the OCHRE convention). Protocol layers may flip it (SunSpec 802 ``W`` is reported with
+ = discharge, see ``docs/battery.md``); the model never does.

Energy balance over one step of ``dt_s`` seconds (all powers in kW, energy in kWh)::

    E' = E + (eta_c * P_ch - P_dis / eta_d - P_sb_batt) * dt_s / 3600

where ``P_ch``/``P_dis`` >= 0 are the AC charge/discharge powers after clipping, and
``P_sb_batt`` is the part of the standby draw taken from the cells. The standby draw
(BMS, contactors, inverter idle) is taken from the battery while energy is above the
minimum; at the minimum the inverter takes it from the grid instead, and it then shows
in the returned AC power. The AC power is clipped to the power rating and so that the
energy lands *exactly* on its limit within the step (no overshoot).

DC telemetry: ``V = (OCV + sqrt(OCV^2 + 4 P_dc R)) / 2`` (the root of
``V^2 - OCV V - P_dc R = 0``, i.e. ``V = OCV + I R`` with ``I = P_dc / V``), where
``P_dc`` (W) is the rate of change of stored energy, ``OCV`` the pack open-circuit
voltage (V) interpolated from a per-cell LFP table times ``cells_in_series``, and
``R`` the pack resistance (ohm).

Sources for the defaults: ``/work/shared/reference/models-and-sunspec.md`` §3 (OCHRE's
reservoir model, PyBaMM Prada2013 LFP OCV table, sanity ranges for standby and
efficiency); see ``docs/battery.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "LFP_OCV_SOC",
    "LFP_OCV_VOLTS_PER_CELL",
    "BatteryModel",
    "BatteryParams",
    "StepResult",
    "ocv_per_cell",
    "step_energy",
]

FloatArray = npt.NDArray[np.float64]

#: SOC breakpoints (fraction 0..1) of the LFP open-circuit-voltage table.
LFP_OCV_SOC: tuple[float, ...] = (
    0.0, 0.05, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90, 0.95, 0.98, 1.0,
)  # fmt: skip
#: Open-circuit voltage per LFP cell (V) at :data:`LFP_OCV_SOC`, 25 °C, at rest
#: (PyBaMM ``Prada2013`` parameter set, A123 26650 cell).
LFP_OCV_VOLTS_PER_CELL: tuple[float, ...] = (
    2.00, 2.79, 2.98, 3.17, 3.21, 3.25, 3.27, 3.27, 3.27, 3.31, 3.31, 3.32, 3.35, 3.60,
)  # fmt: skip

_S_PER_H = 3600.0
_EPS_KWH = 1e-12


@dataclass(frozen=True)
class BatteryParams:
    """Parameters shared by every battery of a :class:`BatteryModel`.

    Attributes:
        rated_power_kw: AC power rating for charge and discharge (kW).
        capacity_kwh: nameplate stored energy at SOC 1.0 (kWh).
        charge_efficiency: one-way AC→stored efficiency (fraction, 0..1].
        discharge_efficiency: one-way stored→AC efficiency (fraction, 0..1].
            The defaults (0.975 each) give a round trip of 0.951.
        soc_min: lowest SOC the battery management allows (fraction).
        soc_max: highest SOC the battery management allows (fraction).
        standby_kw: standby draw of BMS and inverter (kW), always present.
        cells_in_series: LFP cells in series; 128 s gives a 409.6 V nominal
            high-voltage stack (use 16 for a 51.2 V "48 V" pack).
        pack_resistance_ohm: pack internal resistance (ohm) for the I·R term of the
            DC voltage; 0 reports the open-circuit voltage.
        ocv_soc: SOC breakpoints of the OCV table (fraction, increasing).
        ocv_volts_per_cell: open-circuit voltage per cell at ``ocv_soc`` (V).
        cell_ah: cell capacity (Ah) if given; else derived from capacity and the
            nominal voltage (3.2 V/cell) — used only for the Ah rating.
    """

    rated_power_kw: float = 8.0
    capacity_kwh: float = 60.0
    charge_efficiency: float = 0.975
    discharge_efficiency: float = 0.975
    soc_min: float = 0.05
    soc_max: float = 0.95
    standby_kw: float = 0.03
    cells_in_series: int = 128
    pack_resistance_ohm: float = 0.1
    ocv_soc: tuple[float, ...] = field(default=LFP_OCV_SOC)
    ocv_volts_per_cell: tuple[float, ...] = field(default=LFP_OCV_VOLTS_PER_CELL)
    cell_ah: float | None = None

    def __post_init__(self) -> None:
        checks = {
            "rated_power_kw > 0": self.rated_power_kw > 0,
            "capacity_kwh > 0": self.capacity_kwh > 0,
            "0 < charge_efficiency <= 1": 0 < self.charge_efficiency <= 1,
            "0 < discharge_efficiency <= 1": 0 < self.discharge_efficiency <= 1,
            "0 <= soc_min < soc_max <= 1": 0 <= self.soc_min < self.soc_max <= 1,
            "standby_kw >= 0": self.standby_kw >= 0,
            "cells_in_series >= 1": self.cells_in_series >= 1,
            "pack_resistance_ohm >= 0": self.pack_resistance_ohm >= 0,
            "OCV table sizes match": len(self.ocv_soc) == len(self.ocv_volts_per_cell) >= 2,
            "OCV SOC increasing": all(
                a < b for a, b in zip(self.ocv_soc, self.ocv_soc[1:], strict=False)
            ),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid battery parameters: {', '.join(bad)}")

    @property
    def round_trip_efficiency(self) -> float:
        """AC-to-AC round-trip efficiency (fraction)."""
        return self.charge_efficiency * self.discharge_efficiency

    @property
    def energy_min_kwh(self) -> float:
        """Lowest allowed stored energy (kWh)."""
        return self.soc_min * self.capacity_kwh

    @property
    def energy_max_kwh(self) -> float:
        """Highest allowed stored energy (kWh)."""
        return self.soc_max * self.capacity_kwh

    @property
    def nominal_volts(self) -> float:
        """Nominal pack voltage, 3.2 V per LFP cell (V)."""
        return 3.2 * self.cells_in_series

    @property
    def rated_ah(self) -> float:
        """Pack charge rating (Ah)."""
        if self.cell_ah is not None:
            return self.cell_ah
        return self.capacity_kwh * 1000.0 / self.nominal_volts

    @property
    def max_volts(self) -> float:
        """Highest open-circuit pack voltage of the table (V)."""
        return max(self.ocv_volts_per_cell) * self.cells_in_series

    @property
    def min_volts(self) -> float:
        """Lowest open-circuit pack voltage of the table (V)."""
        return min(self.ocv_volts_per_cell) * self.cells_in_series


@dataclass(frozen=True)
class StepResult:
    """Outcome of one vectorized step; every array has shape ``(n,)``.

    Attributes:
        energy_kwh: stored energy after the step (kWh).
        ac_power_kw: actual AC power (kW, + = charging / drawn from the grid).
        dc_power_kw: rate of change of stored energy (kW, + = charging).
        clipped: True where the AC battery power differs from the setpoint
            (rating or SOC limit).
    """

    energy_kwh: FloatArray
    ac_power_kw: FloatArray
    dc_power_kw: FloatArray
    clipped: npt.NDArray[np.bool_]


def ocv_per_cell(soc: npt.ArrayLike, params: BatteryParams) -> FloatArray:
    """Open-circuit voltage per cell (V) at ``soc`` (fraction), linear in the table."""
    volts = np.interp(
        np.asarray(soc, dtype=np.float64),
        np.asarray(params.ocv_soc),
        np.asarray(params.ocv_volts_per_cell),
    )
    return np.asarray(volts, dtype=np.float64)


def step_energy(
    energy_kwh: npt.ArrayLike,
    setpoint_kw: npt.ArrayLike,
    dt_s: float,
    params: BatteryParams,
    soc_min: npt.ArrayLike | None = None,
    soc_max: npt.ArrayLike | None = None,
) -> StepResult:
    """Advance stored energy by ``dt_s`` seconds under an AC power setpoint (pure).

    Parameters:
        energy_kwh: stored energy before the step (kWh), shape ``(n,)`` or scalar.
        setpoint_kw: requested AC power (kW, + = charge, − = discharge), broadcastable.
        dt_s: step length (s), >= 0.
        params: battery parameters.
        soc_min: optional tighter lower SOC bound (fraction), e.g. a reserve; the
            effective bound is ``max(params.soc_min, soc_min)``.
        soc_max: optional tighter upper SOC bound (fraction); effective
            ``min(params.soc_max, soc_max)``.

    Returns:
        :class:`StepResult`; the new energy never leaves the effective SOC window
        unless it started outside it (then it only moves toward the window).
    """
    if not (dt_s >= 0 and math.isfinite(dt_s)):
        raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
    e = np.atleast_1d(np.asarray(energy_kwh, dtype=np.float64))
    sp = np.broadcast_to(np.asarray(setpoint_kw, dtype=np.float64), e.shape)
    sp = np.nan_to_num(sp, nan=0.0)
    lo_soc = np.maximum(params.soc_min, params.soc_min if soc_min is None else soc_min)
    hi_soc = np.minimum(params.soc_max, params.soc_max if soc_max is None else soc_max)
    e_min = np.broadcast_to(lo_soc * params.capacity_kwh, e.shape)
    e_max = np.maximum(np.broadcast_to(hi_soc * params.capacity_kwh, e.shape), e_min)
    p_max = params.rated_power_kw
    eta_c, eta_d, s_kw = params.charge_efficiency, params.discharge_efficiency, params.standby_kw
    if dt_s == 0:
        zero = np.zeros_like(e)
        clipped = np.abs(np.clip(sp, -p_max, p_max) - sp) > 1e-9
        return StepResult(e.copy(), zero, zero.copy(), clipped)
    hours = dt_s / _S_PER_H
    # Energy rates (kW of stored energy) available before hitting the limits.
    headroom_kw = np.maximum(e_max - e, 0.0) / hours
    avail_kw = np.maximum(e - e_min, 0.0) / hours
    p_ch = np.minimum(np.clip(sp, 0.0, p_max), (headroom_kw + s_kw) / eta_c)
    p_dis = np.minimum(np.clip(-sp, 0.0, p_max), eta_d * np.maximum(avail_kw - s_kw, 0.0))
    batt_rate_kw = eta_c * p_ch - p_dis / eta_d
    after = e + batt_rate_kw * hours
    standby_batt_kw = np.minimum(s_kw, np.maximum(after - e_min, 0.0) / hours)
    new_e = after - standby_batt_kw * hours
    # Round-off guard only; the clipping above already lands on the limits.
    new_e = np.where(new_e > e_max, np.maximum(e_max, np.minimum(new_e, e)), new_e)
    new_e = np.where(new_e < e_min, np.minimum(e_min, np.maximum(new_e, e)), new_e)
    battery_ac = p_ch - p_dis
    ac = battery_ac + (s_kw - standby_batt_kw)
    return StepResult(
        energy_kwh=new_e,
        ac_power_kw=ac,
        dc_power_kw=(new_e - e) / hours,
        clipped=np.abs(battery_ac - sp) > 1e-9,
    )


class BatteryModel:
    """A fleet of ``n`` identical-parameter batteries (``n`` may be 1).

    Attributes:
        params: the shared :class:`BatteryParams`.
        energy_kwh: stored energy per battery (kWh), shape ``(n,)``.
        ac_power_kw: AC power of the last step (kW, + = charging), shape ``(n,)``.
        dc_power_kw: stored-energy rate of the last step (kW, + = charging).
        clipped: True where the last setpoint was clipped.
    """

    def __init__(
        self, params: BatteryParams | None = None, n: int = 1, soc: npt.ArrayLike = 0.5
    ) -> None:
        """Create ``n`` batteries at initial state of charge ``soc`` (fraction)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.params = params or BatteryParams()
        soc_arr = np.broadcast_to(np.asarray(soc, dtype=np.float64), (n,))
        if np.any(~np.isfinite(soc_arr)) or np.any((soc_arr < 0) | (soc_arr > 1)):
            raise ValueError("initial soc must be within [0, 1]")
        self.energy_kwh: FloatArray = soc_arr * self.params.capacity_kwh
        self.ac_power_kw: FloatArray = np.zeros(n)
        self.dc_power_kw: FloatArray = np.zeros(n)
        self.clipped: npt.NDArray[np.bool_] = np.zeros(n, dtype=bool)

    @property
    def n(self) -> int:
        """Number of batteries."""
        return int(self.energy_kwh.shape[0])

    def step(
        self,
        setpoint_kw: npt.ArrayLike,
        dt_s: float,
        soc_min: npt.ArrayLike | None = None,
        soc_max: npt.ArrayLike | None = None,
    ) -> FloatArray:
        """Advance ``dt_s`` seconds at AC setpoint ``setpoint_kw`` (kW, + = charge).

        Returns the actual AC power (kW, + = charging) after clipping; see
        :func:`step_energy` for the optional SOC bounds (fraction).
        """
        result = step_energy(self.energy_kwh, setpoint_kw, dt_s, self.params, soc_min, soc_max)
        self.energy_kwh = result.energy_kwh
        if dt_s > 0:
            self.ac_power_kw = result.ac_power_kw
            self.dc_power_kw = result.dc_power_kw
        self.clipped = result.clipped
        return result.ac_power_kw

    def step_one(self, setpoint_kw: float, dt_s: float) -> float:
        """Scalar convenience for ``n == 1``: AC power (kW) after the step."""
        if self.n != 1:
            raise ValueError("step_one() needs a model with n == 1")
        return float(self.step(setpoint_kw, dt_s)[0])

    @property
    def soc(self) -> FloatArray:
        """State of charge (fraction of ``capacity_kwh``, 0..1)."""
        return self.energy_kwh / self.params.capacity_kwh

    @property
    def ocv_volts(self) -> FloatArray:
        """Open-circuit pack voltage (V)."""
        return ocv_per_cell(self.soc, self.params) * self.params.cells_in_series

    @property
    def dc_volts(self) -> FloatArray:
        """Pack terminal voltage (V) = OCV + I·R at the last step's DC power."""
        ocv = self.ocv_volts
        p_w = self.dc_power_kw * 1000.0
        disc = np.maximum(ocv * ocv + 4.0 * p_w * self.params.pack_resistance_ohm, 0.0)
        return ((ocv + np.sqrt(disc)) / 2.0).astype(np.float64)

    @property
    def dc_current_a(self) -> FloatArray:
        """Pack current (A, + = charging) = P_dc / V."""
        return (self.dc_power_kw * 1000.0 / self.dc_volts).astype(np.float64)

    @property
    def available_discharge_kwh(self) -> FloatArray:
        """Stored energy above the minimum SOC (kWh)."""
        return np.maximum(self.energy_kwh - self.params.energy_min_kwh, 0.0)
