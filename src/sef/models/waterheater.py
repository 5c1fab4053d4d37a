"""Water heaters (resistance or heat pump): vectorized stratified-tank model with CTA-2045 DR.

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
   With a tempering valve only the hot share of the fixture flow leaves the tank
   (:mod:`sef.models._tempering`).
3. Element heat ``P·h`` into its node, heat-pump condenser heat over the lower
   nodes (:mod:`sef.models._heat_pump`); losses ``UA_j (T_j - T_amb) h`` per node
   (UA split by surface area) and conduction between adjacent nodes.
4. Buoyancy: any inversion is mixed to the volume-weighted isotonic profile.

Energy bookkeeping (J, per device) makes the balance exact:
``heat input = delivered + losses + Δ(Σ C_j T_j)``, where delivered heat is taken
above the inlet temperature at the moment of the draw (heat input = electricity
for resistance heaters; ``heat_pump`` counts compressor, condenser and fan).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sef.models._heat_pump import (
    ER_ONLY_ABOVE_C,
    ER_ONLY_BELOW_C,
    LOWER,
    UPPER,
    HeatPumpControl,
)
from sef.models._tempering import hot_share, unmet_heat_j
from sef.models._waterheater_mixins import DRCommands, SeriesRunner, StorageViews
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
    put_rows,
    take_rows,
    tank_geometry,
)
from sef.models.waterheater_dr import (
    DemandResponse,
    DRMode,
    DRSettings,
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


class WaterHeaterModel(StorageViews, DRCommands, SeriesRunner):
    """``n`` water heaters (resistance or heat pump) with a stratified tank and CTA-2045 DR.

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
    mixed_delivery_c : numpy.ndarray
        Tempering-valve delivery temperature, °C (``nan`` = no valve).
    unmet_kwh : numpy.ndarray
        Tempered draws only: heat the fixtures asked for at ``mixed_delivery_c`` and did
        not get (outlet colder than the valve setting), kWh.
    heat_input_kwh : numpy.ndarray
        Heat put into the water by elements and condenser, kWh (= ``electric_kwh`` for a
        resistance heater).
    heat_pump : HeatPumpControl or None
        Heat-pump state and counters (``None`` when no device is a heat pump).
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
        self.mixed_delivery_c: FloatArray = b["mixed_delivery_c"]
        self._valve: BoolArray = np.isfinite(self.mixed_delivery_c)
        self.unmet_kwh: FloatArray = np.zeros(self.n)
        self.heat_input_kwh: FloatArray = np.zeros(self.n)
        self._running: BoolArray = np.zeros(self.n, dtype=bool)
        is_hp: BoolArray = b["heat_pump"] > 0
        self.heat_pump: HeatPumpControl | None = None
        if is_hp.any():
            self.heat_pump = HeatPumpControl(
                is_hp,
                b["compressor_w"],
                b["cop_rated"],
                b["fan_w"],
                b["parasitic_w"],
                b["wet_bulb_c"],
                self.geometry.edges,
            )
        self._u0_j: FloatArray = self.internal_energy_j()

    # ------------------------------------------------------------------ state views
    def internal_energy_j(self) -> FloatArray:
        """Heat content ``Σ C_j T_j`` relative to 0 °C, J, shape ``(n,)``."""
        return np.asarray(
            (self.temperatures_c * self.geometry.capacity_j_per_k).sum(axis=1), dtype=np.float64
        )

    @property
    def stored_energy_change_kwh(self) -> FloatArray:
        """Change of ``Σ C_j T_j`` since construction, kWh (the balance's ΔU)."""
        return (self.internal_energy_j() - self._u0_j) / _J_PER_KWH

    @property
    def balance_error_kwh(self) -> FloatArray:
        """``heat input - delivered - losses - ΔU``, kWh; zero up to round-off (heat input
        = electricity for a resistance heater)."""
        return (
            self.heat_input_kwh - self.delivered_kwh - self.loss_kwh - self.stored_energy_change_kwh
        )

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
        return self.dr.operational_state(self._running, error)

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
        wet_bulb_c: ArrayLike | None = None,
    ) -> FloatArray:
        """Advance all devices by ``dt_s``.

        Parameters
        ----------
        dt_s : float
            Step length, s (> 0); split into equal sub-steps of at most ``max_substep_s``.
        draw_l_per_min : array_like, default 0
            Mean flow during the step, L/min, scalar or ``(n,)``: hot water leaving the
            tank, or, for a device with a tempering valve, mixed water at the fixtures.
        inlet_c, ambient_c, wet_bulb_c : array_like, optional
            Inlet, ambient (dry-bulb) and ambient wet-bulb (heat pumps) temperatures for
            this step, °C; also stored as the new values. Default: keep the present ones.

        Returns
        -------
        numpy.ndarray
            Mean electric power over the step, kW, shape ``(n,)``.
        """
        if not dt_s > 0:
            raise ValueError("dt_s must be > 0")
        draw = self._vec(draw_l_per_min, np.zeros(self.n))
        # min/max instead of two masks: nan propagates into both, so it fails as well
        if draw.size and not (float(draw.min()) >= 0.0 and float(draw.max()) < math.inf):
            raise ValueError("draw_l_per_min must be finite and >= 0")
        if inlet_c is not None:
            self.inlet_c = self._vec(inlet_c, self.inlet_c).copy()
        if ambient_c is not None:
            self.ambient_c = self._vec(ambient_c, self.ambient_c).copy()
        if wet_bulb_c is not None and self.heat_pump is not None:
            self.heat_pump.wet_bulb_c = self._vec(wet_bulb_c, self.heat_pump.wet_bulb_c).copy()
        k = max(1, math.ceil(dt_s / self.max_substep_s - 1e-9))
        h = dt_s / k
        geom = self.geometry
        cap = geom.capacity_j_per_k
        # draws are sparse in a fleet: per-device values only for the devices with a flow
        flowing = np.flatnonzero(draw != 0)  # (a float array's own nonzero is 4x slower)
        frac_flowing = draw[flowing] * (h / 60.0) / self.volume_l[flowing]
        drawing = flowing[frac_flowing > 0]
        frac_draw = frac_flowing[frac_flowing > 0]
        tempered = drawing[self._valve[drawing]] if drawing.size else drawing
        hot_l = np.zeros(self.n)  # hot volume drawn, L (tempered devices: summed below)
        hot_l[flowing] = draw[flowing] * dt_s / 60.0
        if tempered.size:
            hot_l[tempered] = 0.0
        elec_j = np.zeros(self.n)
        heat_j = np.zeros(self.n)
        deliv_j = np.zeros(self.n)
        hp = self.heat_pump
        # thermostats read self.temperatures_c: keep it the same array as t
        t = self.temperatures_c = self.temperatures_c.copy()
        for _ in range(k):
            self.dr.expire(self.t_s)
            self._thermostats(h)
            if hp is not None:
                hp.update_performance(t)
            # draw: plug flow (a tempering valve takes only the hot share)
            if drawing.size:
                fd = frac_draw
                if tempered.size:
                    fd = fd * hot_share(
                        t[drawing, 0], self.mixed_delivery_c[drawing], self.inlet_c[drawing]
                    )
                sub = take_rows(t, drawing)
                new, dk = plug_flow_draw(sub, fd, self.inlet_c[drawing], geom)
                put_rows(t, drawing, new)
                deliv_j[drawing] += dk * (WATER_C_J_PER_L_K * self.volume_l[drawing])
                if tempered.size:
                    self._tempered_accounting(drawing, fd, dk, draw, h, hot_l)
            # losses, conduction, element heat (explicit; accounting is exact)
            q, loss_j = passive_heat_j(t, self.ambient_c, geom, h)
            loss_j /= _J_PER_KWH
            self.loss_kwh += loss_j
            e_run = self.element_kw * 1000.0
            e_run *= h  # J per sub-step of a running element
            e_up = np.where(self.upper_on, e_run, 0.0)
            e_lo = np.where(self.lower_on, e_run, 0.0)
            q[:, self.upper_node] += e_up
            q[:, self.lower_node] += e_lo
            e_up += e_lo  # the element heat of the sub-step (J)
            elec_j += e_up
            heat_j += e_up
            if hp is not None:
                q_hp, e_hp = hp.heat_and_power(h)
                q += q_hp
                elec_j += e_hp
                heat_j += q_hp.sum(axis=1)
            q /= cap
            t += q
            mix_inversions(t, geom.fractions)
            self.t_s += h
        self.dr.expire(self.t_s)
        self._running = heat_j > 0.0
        elec_kwh = elec_j / _J_PER_KWH
        self.electric_kwh += elec_kwh
        heat_j /= _J_PER_KWH
        self.heat_input_kwh += heat_j
        # delivered heat and drawn volume are zero where nothing flowed
        self.delivered_kwh[drawing] += deliv_j[drawing] / _J_PER_KWH
        drawn = hot_l[flowing]
        self.drawn_l[flowing] += drawn
        poured = flowing[drawn > 0]
        self.outlet_c = np.full(self.n, np.nan)
        self.outlet_c[poured] = self.inlet_c[poured] + deliv_j[poured] / (
            WATER_C_J_PER_L_K * hot_l[poured]
        )
        elec_j /= dt_s
        elec_j /= 1000.0
        self.power_kw = elec_j
        return self.power_kw.copy()

    def _tempered_accounting(
        self,
        drawing: IntArray,
        frac: FloatArray,
        delivered_k: FloatArray,
        draw: FloatArray,
        h: float,
        hot_l: FloatArray,
    ) -> None:
        """Hot volume and unmet fixture heat of the tempered draws of one sub-step."""
        valve = self._valve[drawing]
        idx = drawing[valve]
        hot_l[idx] += frac[valve] * self.volume_l[idx]
        got_j = delivered_k[valve] * self.capacity_j_per_k[idx]
        unmet = unmet_heat_j(
            draw[idx] * h / 60.0, self.mixed_delivery_c[idx], self.inlet_c[idx], got_j
        )
        self.unmet_kwh[idx] += unmet / _J_PER_KWH

    def _thermostats(self, h: float) -> None:
        sp, db, lockout = self.dr.thermostat(self.setpoint_c, self.deadband_k, self.max_setpoint_c)
        hp = self.heat_pump
        if hp is not None:  # heat pumps in resistance mode continue their element cycle
            self._upper_latch = np.where(hp.is_heat_pump, hp.mode == UPPER, self._upper_latch)
            self._lower_latch = np.where(hp.is_heat_pump, hp.mode == LOWER, self._lower_latch)
        floor = self.dr.settings.safety_floor_c
        # grid emergency: only the upper element, only below the safety floor
        sp_r, db_r = sp, db
        if lockout.any():
            sp_r = np.where(lockout, floor + self.deadband_k, sp)
            db_r = np.where(lockout, self.deadband_k, db)
        low = sp_r - db_r
        tu = self.upper_sensor_c
        tl = self.lower_sensor_c
        u, lo = np.ascontiguousarray(tu), np.ascontiguousarray(tl)  # node columns: strided
        self._upper_latch = (u < low) | (self._upper_latch & (u < sp_r))
        self._lower_latch = (lo < low) | (self._lower_latch & (lo <= sp_r))
        self.upper_on = self._upper_latch & (self.element_kw > 0)
        self.lower_on = self._lower_latch & ~self._upper_latch & ~lockout & (self.element_kw > 0)
        if hp is not None:
            amb = self.ambient_c
            resistance_mode = lockout | (amb < ER_ONLY_BELOW_C) | (amb > ER_ONLY_ABOVE_C)
            allowed = self.dr.heat_pump_elements_allowed() & (self.element_kw > 0)
            self.upper_on, self.lower_on = hp.control(
                tu,
                self.temperatures_c[:, self.lower_node],
                sp,
                db,
                allowed,
                resistance_mode,
                self.upper_on,
                self.lower_on,
                h,
            )
