"""Stored-energy views and CTA-2045 commands of the water-heater model (mixins).

Split out of :mod:`sef.models.waterheater` to keep modules small; the classes here are
only meant as bases of :class:`~sef.models.waterheater.WaterHeaterModel`, whose
attributes they use (declared below for the type checker). Units: °C, K, kW, kWh, Wh, s.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sef.models._heat_pump import MIN_ON_S, UPPER_OFF_ABOVE_K, HeatPumpControl, performance
from sef.models._waterheater_params import WaterHeaterLinearView
from sef.models._waterheater_thermal import WATER_C_J_PER_L_K, TankGeometry, row_sum
from sef.models.waterheater_dr import DemandResponse, DRMode, Index

FloatArray = NDArray[np.float64]

_J_PER_KWH = 3.6e6

__all__ = ["DRCommands", "SeriesRunner", "StorageViews"]


class StorageViews:
    """CTA-2045 storage commodities, the MPC reservoir view and a temperature bound."""

    temperatures_c: FloatArray
    geometry: TankGeometry
    storage_reference_c: FloatArray
    setpoint_c: FloatArray
    deadband_k: FloatArray
    max_setpoint_c: FloatArray
    inlet_c: FloatArray
    ambient_c: FloatArray
    ua_w_per_k: FloatArray
    element_kw: FloatArray
    max_substep_s: float
    dr: DemandResponse
    heat_pump: HeatPumpControl | None

    volume_l: FloatArray
    upper_node: int
    lower_node: int

    @property
    def capacity_j_per_k(self) -> FloatArray:
        """Heat capacity of the water, J/K, shape ``(n,)``."""
        return WATER_C_J_PER_L_K * self.volume_l

    @property
    def stored_energy_kwh(self) -> FloatArray:
        """Heat stored above the present inlet temperature, kWh, shape ``(n,)``."""
        t, cap = self.temperatures_c, self.geometry.capacity_j_per_k
        if 0 < t.shape[1] <= 4:  # column by column: row_sum's order, no (n, N) temporaries
            kwh = np.subtract(t[:, 0], self.inlet_c)
            kwh *= cap[:, 0]
            for j in range(1, t.shape[1]):
                node = np.subtract(t[:, j], self.inlet_c)
                node *= cap[:, j]
                kwh += node
        else:
            heat = np.subtract(t, self.inlet_c[:, None])
            heat *= cap
            kwh = row_sum(heat)
        kwh /= _J_PER_KWH
        return kwh

    @property
    def present_energy_storage_wh(self) -> FloatArray:
        """CTA-2045 commodity 7: heat above ``storage_reference_c`` in the tank, Wh."""
        above = np.clip(self.temperatures_c - self.storage_reference_c[:, None], 0.0, None)
        return np.asarray((above * self.geometry.capacity_j_per_k).sum(axis=1) / 3600.0)

    @property
    def total_energy_storage_wh(self) -> FloatArray:
        """CTA-2045 commodity 6: the same heat for a full tank at the setpoint, Wh; never
        below commodity 7 (a tank hotter than its setpoint, e.g. after the setpoint was
        lowered or an Advanced Load Up, holds what it holds)."""
        span = np.clip(self.setpoint_c - self.storage_reference_c, 0.0, None)
        return np.maximum(span * self.capacity_j_per_k / 3600.0, self.present_energy_storage_wh)

    @property
    def energy_take_wh(self) -> FloatArray:
        """Heat the tank can still take up to the setpoint ("Energy Take"), Wh, >= 0."""
        return np.clip(self.total_energy_storage_wh - self.present_energy_storage_wh, 0.0, None)

    def linear_view(self) -> WaterHeaterLinearView:
        """Energy-reservoir view for MPC (see :class:`WaterHeaterLinearView`)."""
        cap = self.capacity_j_per_k / _J_PER_KWH
        t_mean = self.temperatures_c @ self.geometry.fractions
        p_max = self.element_kw.copy()
        cop = np.ones_like(p_max)
        hp = self.heat_pump
        if hp is not None:
            full = hp.electric_kw_at_full()
            p_max = np.where(hp.is_heat_pump, full, p_max)
            with np.errstate(divide="ignore", invalid="ignore"):
                cop = np.where(hp.is_heat_pump & (full > 0), hp.capacity_w / 1000.0 / full, 1.0)
        return WaterHeaterLinearView(
            capacity_kwh_per_k=cap,
            ua_kw_per_k=self.ua_w_per_k / 1000.0,
            stored_energy_kwh=self.stored_energy_kwh,
            e_min_kwh=cap * (self.setpoint_c - self.deadband_k - self.inlet_c),
            e_max_kwh=cap * (self.setpoint_c - self.inlet_c),
            p_max_kw=p_max,
            loss_kw=self.ua_w_per_k * (t_mean - self.ambient_c) / 1000.0,
            cop=cop,
        )

    def max_temperature_c(self) -> FloatArray:
        """Bound on any node temperature reachable from now on, °C.

        Thermostats cut out at most at ``max(setpoint, load-up setpoint)``; one
        sub-step of a full element into its node may overshoot that. A heat pump may
        run to 1 K above it plus its minimum on-time (and one sub-step) at the highest
        capacity its curve gives, all into its most heated node.
        """
        cap_node = self.geometry.capacity_j_per_k
        c_min = np.minimum(cap_node[:, self.upper_node], cap_node[:, self.lower_node])
        top = np.minimum(
            self.setpoint_c
            + max(self.dr.settings.load_up_offset_k, 0.0)
            + self.dr.advanced_offset_k,
            np.maximum(self.max_setpoint_c, self.setpoint_c),
        )
        top = np.maximum(top, self.dr.settings.safety_floor_c + self.deadband_k)
        over = self.element_kw * 1000.0 * self.max_substep_s / c_min
        hp = self.heat_pump
        if hp is not None:
            grid = np.linspace(0.0, 100.0, 21)[:, None]
            _, cap_w = performance(
                hp.wet_bulb_c, grid + 0 * hp.cop_rated, hp.cop_rated, hp.compressor_w * hp.cop_rated
            )
            per_k = (hp.weights[None, :] / cap_node).max(axis=1)
            hp_over = (
                UPPER_OFF_ABOVE_K + cap_w.max(axis=0) * (MIN_ON_S + self.max_substep_s) * per_k
            )
            over = np.where(hp.is_heat_pump, np.maximum(over, hp_over), over)
        return np.asarray(np.maximum(top + over, self.temperatures_c.max(axis=1)), dtype=np.float64)


class DRCommands:
    """CTA-2045 Basic DR commands (each takes ``idx``: ``None`` = all devices)."""

    dr: DemandResponse
    t_s: float
    setpoint_c: FloatArray
    max_setpoint_c: FloatArray

    def set_setpoint(self, idx: Index, setpoint_c: ArrayLike) -> None:
        """Change the normal setpoint, °C (clipped to ``max_setpoint_c``)."""
        sel = self.dr.select(idx)
        self.setpoint_c[sel] = np.minimum(np.asarray(setpoint_c, float), self.max_setpoint_c[sel])

    def shed(self, idx: Index = None, duration_s: float | None = None) -> None:
        """Basic DR Shed: setpoint setback for ``duration_s`` s (``None``/0 = open-ended)."""
        self.dr.start(idx, DRMode.SHED, self.t_s, duration_s)

    def end_shed(self, idx: Index = None) -> None:
        """Basic DR End Shed / Run Normal: end any event now."""
        self.dr.end(idx)

    def load_up(self, idx: Index = None, duration_s: float | None = None) -> None:
        """Basic DR Load Up: heat to the top of the band now, for ``duration_s`` s."""
        self.dr.start(idx, DRMode.LOAD_UP, self.t_s, duration_s)

    def advanced_load_up(self, idx: Index, duration_s: float | None, raise_k: ArrayLike) -> None:
        """CTA-2045-B Advanced Load Up: LOAD_UP with the setpoint raised ``raise_k`` K more
        (capped at ``max_setpoint_c``) for ``duration_s`` s (``None``/0 = open-ended)."""
        self.dr.start(idx, DRMode.LOAD_UP, self.t_s, duration_s)
        self.dr.advanced_offset_k[self.dr.select(idx)] = np.maximum(np.asarray(raise_k, float), 0)

    def critical_peak(self, idx: Index = None, duration_s: float | None = None) -> None:
        """Basic DR Critical Peak Event: deeper setback for ``duration_s`` s."""
        self.dr.start(idx, DRMode.CRITICAL_PEAK, self.t_s, duration_s)

    def grid_emergency(self, idx: Index = None, duration_s: float | None = None) -> None:
        """Basic DR Grid Emergency: element lockout (safety floor only) for ``duration_s`` s."""
        self.dr.start(idx, DRMode.GRID_EMERGENCY, self.t_s, duration_s)

    def customer_override(self, idx: Index = None, on: bool = True) -> None:
        """Set (``on=True``) or clear the customer override; overridden devices ignore
        curtailment and report Opted Out."""
        self.dr.set_override(idx, on)

    def heartbeat(self, idx: Index = None, status: int = 1) -> None:
        """Outside Comm Connection Status (0 lost, 1 good, 2 poor); arms the watchdog."""
        self.dr.heartbeat(idx, self.t_s, status)


class SeriesRunner:
    """:meth:`simulate`: :meth:`step` over whole input series."""

    n: int

    def step(
        self,
        dt_s: float,
        draw_l_per_min: ArrayLike = 0.0,
        *,
        inlet_c: ArrayLike | None = None,
        ambient_c: ArrayLike | None = None,
        wet_bulb_c: ArrayLike | None = None,
    ) -> FloatArray:
        """Advance all devices by ``dt_s`` s (implemented by the model)."""
        raise NotImplementedError

    def simulate(
        self,
        dt_s: float,
        draw_l_per_min: ArrayLike,
        *,
        inlet_c: ArrayLike | None = None,
        ambient_c: ArrayLike | None = None,
        wet_bulb_c: ArrayLike | None = None,
    ) -> FloatArray:
        """Run :meth:`step` over a draw series.

        Parameters
        ----------
        dt_s : float
            Step length, s.
        draw_l_per_min : array_like
            Shape ``(steps,)`` (same for every device) or ``(steps, n)``, L/min.
        inlet_c, ambient_c, wet_bulb_c : array_like, optional
            Shape ``(steps,)`` or ``(steps, n)``, °C.

        Returns
        -------
        numpy.ndarray
            Mean electric power per step, kW, shape ``(steps, n)``.
        """
        draws = np.asarray(draw_l_per_min, dtype=np.float64)
        steps = draws.shape[0]
        inl = None if inlet_c is None else np.asarray(inlet_c, dtype=np.float64)
        amb = None if ambient_c is None else np.asarray(ambient_c, dtype=np.float64)
        wet = None if wet_bulb_c is None else np.asarray(wet_bulb_c, dtype=np.float64)
        out = np.empty((steps, self.n))
        for i in range(steps):
            out[i] = self.step(
                dt_s,
                draws[i],
                inlet_c=None if inl is None else inl[i],
                ambient_c=None if amb is None else amb[i],
                wet_bulb_c=None if wet is None else wet[i],
            )
        return out
