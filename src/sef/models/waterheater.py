"""Electric resistance water heater: vectorized stratified-tank model with CTA-2045 DR.

One :class:`WaterHeaterModel` steps ``n`` tanks at once (numpy arrays of shape
``(n,)``; node temperatures ``(n, N)``), so the same code serves one SGD emulator
and a 10 000-heater fleet simulation. Equations, parameter sources and the OCHRE
comparison are in ``docs/waterheater.md``.

Tank (``N`` nodes, node 0 at the top; per sub-step ``h <= max_substep_s``)
--------------------------------------------------------------------------
1. Thermostats (OCHRE convention, setpoint = top of the band) read the state at
   the start of the sub-step: the upper thermostat (node of the upper element)
   closes below ``T_set - DB`` and stays closed until ``T_set``; the lower one
   (node of the lower element, or the mean of it and the node above when
   ``N >= 3``) likewise. Upper priority: the lower element runs only while the
   upper thermostat is open; never both.
2. Draw as plug flow: volume ``q·h`` of inlet water enters at the bottom, the
   same volume leaves at the top; each node takes the mean of the water that
   ends up in it (exact, conservative and monotone for any volume).
3. Element heat ``P·h`` into its node; losses ``UA_j (T_j - T_amb) h`` per node
   (UA split by surface area) and conduction between adjacent nodes.
4. Buoyancy: any inversion is mixed to the volume-weighted isotonic profile.

Energy bookkeeping (J, per device) makes the balance exact:
``electric = delivered + losses + Δ(Σ C_j T_j)``, where delivered heat is taken
above the inlet temperature at the moment of the draw.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sef.models._waterheater_params import (
    WaterHeaterLinearView,
    WaterHeaterParams,
    broadcast_params,
)
from sef.models._waterheater_thermal import (
    LOWER_ELEMENT_POSITION,
    UPPER_ELEMENT_POSITION,
    WATER_C_J_PER_L_K,
    mix_inversions,
    node_at,
    passive_heat_j,
    plug_flow_draw,
    tank_geometry,
)
from sef.models.waterheater_dr import (
    DemandResponse,
    DRMode,
    DRSettings,
    Index,
    OperationalState,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

__all__ = [
    "DRMode",
    "DRSettings",
    "OperationalState",
    "WaterHeaterLinearView",
    "WaterHeaterModel",
    "WaterHeaterParams",
]

_J_PER_KWH = 3.6e6


class WaterHeaterModel:
    """``n`` electric resistance water heaters with a stratified tank and CTA-2045 DR.

    Parameters
    ----------
    params : WaterHeaterParams, optional
        Tank parameters (scalars broadcast to all devices). Default: 50-gal tank.
    n : int, optional
        Number of devices; default: the common length of the array parameters (1
        if all are scalars).
    dr : DRSettings, optional
        Demand-response behaviour.

    Attributes
    ----------
    n : int
        Number of devices.
    nodes : int
        Number of tank nodes.
    t_s : float
        Model clock, s since construction (event end times use it).
    temperatures_c : numpy.ndarray
        Node temperatures, °C, shape ``(n, nodes)``, column 0 = top.
    setpoint_c, deadband_k, inlet_c, ambient_c, element_kw : numpy.ndarray
        Per-device settings, shape ``(n,)`` (°C, K, °C, °C, kW); may be changed
        between steps (use :meth:`set_setpoint` for the setpoint).
    upper_on, lower_on : numpy.ndarray
        Bool, element state during the last sub-step.
    power_kw : numpy.ndarray
        Mean electric power over the last step, kW.
    electric_kwh, delivered_kwh, loss_kwh : numpy.ndarray
        Energy since construction, kWh: electricity in; heat carried out by hot
        water above inlet temperature; heat lost to ambient.
    drawn_l : numpy.ndarray
        Hot water drawn since construction, L.
    outlet_c : numpy.ndarray
        Flow-weighted mean outlet temperature of the last step, °C (``nan`` if no draw).
    """

    def __init__(
        self,
        params: WaterHeaterParams | None = None,
        n: int | None = None,
        dr: DRSettings | None = None,
    ) -> None:
        p = params if params is not None else WaterHeaterParams()
        self.n, b = broadcast_params(p, n)
        self.params = p
        self.nodes: int = int(p.nodes)
        self.max_substep_s = float(p.max_substep_s)
        self.volume_l: FloatArray = b["volume_l"]
        self.ua_w_per_k: FloatArray = b["ua_w_per_k"]
        self.element_kw: FloatArray = b["element_kw"]
        self.max_setpoint_c: FloatArray = b["max_setpoint_c"]
        self.setpoint_c: FloatArray = np.minimum(b["setpoint_c"], self.max_setpoint_c)
        self.deadband_k: FloatArray = b["deadband_k"]
        self.inlet_c: FloatArray = b["inlet_c"]
        self.ambient_c: FloatArray = b["ambient_c"]
        self.storage_reference_c: FloatArray = b["storage_reference_c"]
        self.geometry = tank_geometry(self.volume_l, b["height_m"], self.ua_w_per_k, self.nodes)
        self.upper_node = node_at(UPPER_ELEMENT_POSITION, self.geometry.fractions)
        self.lower_node = node_at(LOWER_ELEMENT_POSITION, self.geometry.fractions)
        self.dr = DemandResponse(self.n, dr if dr is not None else DRSettings())
        self.t_s = 0.0
        self.temperatures_c: FloatArray = np.repeat(b["initial_c"][:, None], self.nodes, axis=1)
        self.upper_on: BoolArray = np.zeros(self.n, dtype=bool)
        self.lower_on: BoolArray = np.zeros(self.n, dtype=bool)
        self._upper_latch: BoolArray = np.zeros(self.n, dtype=bool)
        self._lower_latch: BoolArray = np.zeros(self.n, dtype=bool)
        self.power_kw: FloatArray = np.zeros(self.n)
        self.electric_kwh: FloatArray = np.zeros(self.n)
        self.delivered_kwh: FloatArray = np.zeros(self.n)
        self.loss_kwh: FloatArray = np.zeros(self.n)
        self.drawn_l: FloatArray = np.zeros(self.n)
        self.outlet_c: FloatArray = np.full(self.n, np.nan)
        self._u0_j: FloatArray = self.internal_energy_j()

    # ------------------------------------------------------------------ state views
    @property
    def capacity_j_per_k(self) -> FloatArray:
        """Heat capacity of the water, J/K, shape ``(n,)``."""
        return WATER_C_J_PER_L_K * self.volume_l

    def internal_energy_j(self) -> FloatArray:
        """Heat content ``Σ C_j T_j`` relative to 0 °C, J, shape ``(n,)``."""
        return np.asarray(
            (self.temperatures_c * self.geometry.capacity_j_per_k).sum(axis=1), dtype=np.float64
        )

    @property
    def stored_energy_kwh(self) -> FloatArray:
        """Heat stored above the present inlet temperature, kWh, shape ``(n,)``."""
        heat = (self.temperatures_c - self.inlet_c[:, None]) * self.geometry.capacity_j_per_k
        return np.asarray(heat.sum(axis=1) / _J_PER_KWH, dtype=np.float64)

    @property
    def stored_energy_change_kwh(self) -> FloatArray:
        """Change of ``Σ C_j T_j`` since construction, kWh (the balance's ΔU)."""
        return (self.internal_energy_j() - self._u0_j) / _J_PER_KWH

    @property
    def balance_error_kwh(self) -> FloatArray:
        """``electric - delivered - losses - ΔU``, kWh; zero up to round-off."""
        return (
            self.electric_kwh - self.delivered_kwh - self.loss_kwh - self.stored_energy_change_kwh
        )

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

    @property
    def upper_sensor_c(self) -> FloatArray:
        """Upper thermostat temperature, °C."""
        return np.asarray(self.temperatures_c[:, self.upper_node])

    @property
    def lower_sensor_c(self) -> FloatArray:
        """Lower thermostat temperature, °C (mean of the lower element node and the
        node above when ``nodes >= 3``, as in OCHRE)."""
        t = self.temperatures_c
        if self.nodes >= 3:
            return np.asarray(0.5 * (t[:, self.lower_node] + t[:, self.lower_node - 1]))
        return np.asarray(t[:, self.lower_node])

    @property
    def mode(self) -> IntArray:
        """:class:`DRMode` of each device (the command in force), int64."""
        return self.dr.mode

    @property
    def override(self) -> BoolArray:
        """Customer override in effect, bool."""
        return self.dr.override

    @property
    def operational_state(self) -> IntArray:
        """CTA-2045 :class:`OperationalState` code of each device, int64."""
        error: BoolArray = np.asarray(~np.isfinite(self.temperatures_c).all(axis=1))
        return self.dr.operational_state(self.power_kw > 0.0, error)

    def linear_view(self) -> WaterHeaterLinearView:
        """Energy-reservoir view for MPC (see :class:`WaterHeaterLinearView`)."""
        cap = self.capacity_j_per_k / _J_PER_KWH
        t_mean = self.temperatures_c @ self.geometry.fractions
        return WaterHeaterLinearView(
            capacity_kwh_per_k=cap,
            ua_kw_per_k=self.ua_w_per_k / 1000.0,
            stored_energy_kwh=self.stored_energy_kwh,
            e_min_kwh=cap * (self.setpoint_c - self.deadband_k - self.inlet_c),
            e_max_kwh=cap * (self.setpoint_c - self.inlet_c),
            p_max_kw=self.element_kw.copy(),
            loss_kw=self.ua_w_per_k * (t_mean - self.ambient_c) / 1000.0,
        )

    def max_temperature_c(self) -> FloatArray:
        """Bound on any node temperature reachable from now on, °C.

        Thermostats cut out at most at ``max(setpoint, load-up setpoint)``; one
        sub-step of a full element into its node may overshoot that.
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
        return np.asarray(np.maximum(top + over, self.temperatures_c.max(axis=1)), dtype=np.float64)

    # ------------------------------------------------------------------ commands
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

    # ------------------------------------------------------------------ dynamics
    def _vec(self, value: ArrayLike | None, default: FloatArray) -> FloatArray:
        if value is None:
            return default
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (self.n,))

    def step(
        self,
        dt_s: float,
        draw_l_per_min: ArrayLike = 0.0,
        *,
        inlet_c: ArrayLike | None = None,
        ambient_c: ArrayLike | None = None,
    ) -> FloatArray:
        """Advance all devices by ``dt_s``.

        Parameters
        ----------
        dt_s : float
            Step length, s (> 0); split into equal sub-steps of at most ``max_substep_s``.
        draw_l_per_min : array_like, default 0
            Mean hot-water flow leaving the tank during the step, L/min, scalar or ``(n,)``.
        inlet_c, ambient_c : array_like, optional
            Inlet and ambient temperatures for this step, °C; also stored as the new
            values. Default: keep the present ones.

        Returns
        -------
        numpy.ndarray
            Mean electric power over the step, kW, shape ``(n,)``.
        """
        if not dt_s > 0:
            raise ValueError("dt_s must be > 0")
        draw = self._vec(draw_l_per_min, np.zeros(self.n))
        if np.any(draw < 0) or not np.all(np.isfinite(draw)):
            raise ValueError("draw_l_per_min must be finite and >= 0")
        if inlet_c is not None:
            self.inlet_c = self._vec(inlet_c, self.inlet_c).copy()
        if ambient_c is not None:
            self.ambient_c = self._vec(ambient_c, self.ambient_c).copy()
        k = max(1, math.ceil(dt_s / self.max_substep_s - 1e-9))
        h = dt_s / k
        geom = self.geometry
        cap = geom.capacity_j_per_k
        frac_draw = draw * (h / 60.0) / self.volume_l
        drawing = np.nonzero(frac_draw > 0)[0]
        elec_j = np.zeros(self.n)
        deliv_j = np.zeros(self.n)
        # thermostats read self.temperatures_c: keep it the same array as t
        t = self.temperatures_c = self.temperatures_c.copy()
        for _ in range(k):
            self.dr.expire(self.t_s)
            self._thermostats()
            # draw: plug flow
            if drawing.size:
                sub = t[drawing]
                new, dk = plug_flow_draw(sub, frac_draw[drawing], self.inlet_c[drawing], geom)
                t[drawing] = new
                deliv_j[drawing] += dk * self.capacity_j_per_k[drawing]
            # losses, conduction, element heat (explicit; accounting is exact)
            q, loss_j = passive_heat_j(t, self.ambient_c, geom, h)
            self.loss_kwh += loss_j / _J_PER_KWH
            p_w = self.element_kw * 1000.0
            e_up = np.where(self.upper_on, p_w * h, 0.0)
            e_lo = np.where(self.lower_on, p_w * h, 0.0)
            q[:, self.upper_node] += e_up
            q[:, self.lower_node] += e_lo
            elec_j += e_up + e_lo
            t += q / cap
            mix_inversions(t, geom.fractions)
            self.t_s += h
        self.dr.expire(self.t_s)
        self.electric_kwh += elec_j / _J_PER_KWH
        self.delivered_kwh += deliv_j / _J_PER_KWH
        drawn = draw * dt_s / 60.0
        self.drawn_l += drawn
        with np.errstate(divide="ignore", invalid="ignore"):
            self.outlet_c = np.where(
                drawn > 0, self.inlet_c + deliv_j / (WATER_C_J_PER_L_K * drawn), np.nan
            )
        self.power_kw = elec_j / dt_s / 1000.0
        return self.power_kw.copy()

    def _thermostats(self) -> None:
        sp, db, lockout = self.dr.thermostat(self.setpoint_c, self.deadband_k, self.max_setpoint_c)
        floor = self.dr.settings.safety_floor_c
        # grid emergency: only the upper element, only below the safety floor
        sp = np.where(lockout, floor + self.deadband_k, sp)
        db = np.where(lockout, self.deadband_k, db)
        low = sp - db
        tu = self.upper_sensor_c
        tl = self.lower_sensor_c
        self._upper_latch = (tu < low) | (self._upper_latch & (tu < sp))
        self._lower_latch = (tl < low) | (self._lower_latch & (tl <= sp))
        self.upper_on = self._upper_latch & (self.element_kw > 0)
        self.lower_on = self._lower_latch & ~self._upper_latch & ~lockout & (self.element_kw > 0)

    def simulate(
        self,
        dt_s: float,
        draw_l_per_min: ArrayLike,
        *,
        inlet_c: ArrayLike | None = None,
        ambient_c: ArrayLike | None = None,
    ) -> FloatArray:
        """Run :meth:`step` over a draw series.

        Parameters
        ----------
        dt_s : float
            Step length, s.
        draw_l_per_min : array_like
            Shape ``(steps,)`` (same for every device) or ``(steps, n)``, L/min.
        inlet_c, ambient_c : array_like, optional
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
        out = np.empty((steps, self.n))
        for i in range(steps):
            out[i] = self.step(
                dt_s,
                draws[i],
                inlet_c=None if inl is None else inl[i],
                ambient_c=None if amb is None else amb[i],
            )
        return out
