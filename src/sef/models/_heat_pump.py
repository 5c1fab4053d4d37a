"""Heat-pump water heater (HPWH): performance curves and thermostat logic, vectorized.

Used by :class:`sef.models.waterheater.WaterHeaterModel` for the devices whose
``heater_type`` is ``"heat_pump"``. The behaviour follows NREL OCHRE 0.9.2
``HeatPumpWaterHeater`` (``ochre/Equipment/WaterHeater.py``, BSD-3; reference notes
models-and-sunspec.md §1.1); the code is our own.

Performance (per sub-step, from the state at its start)
-------------------------------------------------------
With ``v = [1, T_wb, T_wb², T_c, T_c², T_c·T_wb]`` (zone wet-bulb ``T_wb`` and condenser
temperature ``T_c``, both °C)::

    capacity_W = compressor_w · cop_rated · (CAPACITY_COEFFS · v)
    COP        = cop_rated · (COP_COEFFS · v)
    electric_W = capacity_W / COP + fan_w        (compressor on)
               = parasitic_w                     (compressor off)

The coefficients are the ones hard-coded in OCHRE's ``HeatPumpWaterHeater``
(``hp_capacity_coeff``, ``cop_coeff``). ``T_c`` is the condenser-weighted tank
temperature ``Σ w_j T_j``; the condenser heat goes into the nodes with the same
weights ``w``: OCHRE's 12-node profile ``(0, 0, 0, 0, 0, 5, 10, 15, 20, 25, 30, 5) / 110``
(top first; nodes 6-12, node 12 gets 5/110, not 35/110), spread over the height of
the column for other node counts (2 nodes: all in the bottom node; 1 node: all), as
OCHRE does for 1 and 2 nodes.

Control (OCHRE's thermostat, setpoint = top of the band)
-------------------------------------------------------
``T_u`` = upper element node (node 3 of 12), ``T_l`` = lower element node (node 10 of 12),
``T_ctl = ¾ T_u + ¼ T_l``, ``S`` setpoint, ``D`` deadband (8.17 K default for a HPWH):

1. upper element if ``T_u < S - 13 K`` or (it was on and ``T_u < S``);
   else lower element if an element was on and ``T_l < S - 15 K`` (elements only
   when allowed: not during a CTA-2045 Shed/Critical Peak, and ``element_kw > 0``);
2. otherwise the compressor if an element was on or ``T_ctl < S - D``;
3. otherwise off if ``T_ctl ≥ S`` or ``T_u ≥ S + 1 K``; otherwise no change.

The compressor stays on at least :data:`MIN_ON_S` (10 min). When the ambient is
outside [7.22, 43.33] °C the device runs as a resistance heater (OCHRE's ER-only
mode); the model's Grid Emergency lockout also uses the resistance logic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

__all__ = [
    "CAPACITY_COEFFS",
    "COMPRESSOR",
    "COP_COEFFS",
    "LOWER",
    "MIN_ON_S",
    "OFF",
    "UPPER",
    "HeatPumpControl",
    "condenser_weights",
    "performance",
]

#: Heat-pump modes (one per device).
OFF, COMPRESSOR, UPPER, LOWER = 0, 1, 2, 3

#: Capacity multiplier, terms ``[1, T_wb, T_wb², T_c, T_c², T_c·T_wb]`` (OCHRE 0.9.2
#: ``HeatPumpWaterHeater.hp_capacity_coeff``).
CAPACITY_COEFFS = np.array([0.563, 0.0437, 0.000039, 0.0055, -0.000148, -0.000145])
#: COP multiplier, same terms (OCHRE 0.9.2 ``HeatPumpWaterHeater.cop_coeff``).
COP_COEFFS = np.array([1.1332, 0.063, -0.0000979, -0.00972, -0.0000214, -0.000686])
#: Condenser heat per twelfth of the column height, top first (OCHRE ``hp_nodes``, 12 nodes).
CONDENSER_PROFILE_12 = np.array([0, 0, 0, 0, 0, 5, 10, 15, 20, 25, 30, 5], dtype=float) / 110.0
#: Upper element turns on when the upper node is this far below the setpoint, K (OCHRE).
UPPER_ELEMENT_BELOW_K = 13.0
#: Lower element keeps an element cycle going this far below the setpoint, K (OCHRE).
LOWER_ELEMENT_BELOW_K = 15.0
#: Compressor off when the upper node is this far above the setpoint, K (OCHRE).
UPPER_OFF_ABOVE_K = 1.0
#: Minimum compressor on-time, s (OCHRE ``HPWH Minimum On Time (min)`` = 10).
MIN_ON_S = 600.0
#: Outside this ambient range the compressor is not used (OCHRE ER-only mode), °C.
ER_ONLY_BELOW_C = 7.222
ER_ONLY_ABOVE_C = 43.333


def condenser_weights(edges: FloatArray) -> FloatArray:
    """Share of the condenser heat per node, shape ``(N,)``, sums to 1.

    Parameters
    ----------
    edges : numpy.ndarray
        Node boundaries as fractions of the column height, top first, shape ``(N + 1,)``.
    """
    src = np.linspace(0.0, 1.0, CONDENSER_PROFILE_12.size + 1)
    cum = np.concatenate(([0.0], np.cumsum(CONDENSER_PROFILE_12)))
    return np.asarray(np.diff(np.interp(edges, src, cum)), dtype=np.float64)


def performance(
    wet_bulb_c: FloatArray, condenser_c: FloatArray, cop_rated: FloatArray, capacity_w: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """COP and heating capacity (W) at the given wet-bulb and condenser temperatures (°C).

    ``capacity_w`` is the rated heating capacity, W (``compressor_w · cop_rated``).
    """
    tw, tc = wet_bulb_c, condenser_c
    terms = (np.ones_like(tc), tw, tw * tw, tc, tc * tc, tc * tw)
    cap_factor = sum(c * t for c, t in zip(CAPACITY_COEFFS, terms, strict=True))
    cop_factor = sum(c * t for c, t in zip(COP_COEFFS, terms, strict=True))
    return np.asarray(cop_rated * cop_factor), np.asarray(capacity_w * cap_factor)


class HeatPumpControl:
    """Mode, compressor timer, performance and energy counters of the heat-pump devices.

    Arrays have shape ``(n,)`` over all devices of the model; entries of resistance
    devices (``is_heat_pump`` False) stay OFF and draw nothing.

    Attributes
    ----------
    mode : numpy.ndarray
        OFF / COMPRESSOR / UPPER / LOWER, int64.
    time_in_mode_s : numpy.ndarray
        Time since the mode last changed, s.
    cop, capacity_w : numpy.ndarray
        COP and heating capacity, W, at the start of the last sub-step.
    compressor_kwh, condenser_kwh, auxiliary_kwh : numpy.ndarray
        Compressor electric input, heat into the water from the condenser, and fan plus
        standby electricity since construction, kWh.
    """

    def __init__(
        self,
        is_heat_pump: BoolArray,
        compressor_w: FloatArray,
        cop_rated: FloatArray,
        fan_w: FloatArray,
        parasitic_w: FloatArray,
        wet_bulb_c: FloatArray,
        edges: FloatArray,
    ) -> None:
        n = is_heat_pump.size
        self.is_heat_pump = is_heat_pump
        self.compressor_w = compressor_w
        self.cop_rated = cop_rated
        self.fan_w = fan_w
        self.parasitic_w = parasitic_w
        self.wet_bulb_c = wet_bulb_c
        self.weights = condenser_weights(edges)
        self.mode: IntArray = np.zeros(n, dtype=np.int64)
        self.time_in_mode_s: FloatArray = np.zeros(n)
        self.cop: FloatArray = cop_rated.copy()
        self.capacity_w: FloatArray = compressor_w * cop_rated
        self.compressor_kwh: FloatArray = np.zeros(n)
        self.condenser_kwh: FloatArray = np.zeros(n)
        self.auxiliary_kwh: FloatArray = np.zeros(n)

    def update_performance(self, temps_c: FloatArray) -> None:
        """COP and capacity from the node temperatures ``(n, N)``, °C."""
        self.cop, self.capacity_w = performance(
            self.wet_bulb_c,
            temps_c @ self.weights,
            self.cop_rated,
            self.compressor_w * self.cop_rated,
        )

    def control(
        self,
        t_upper_c: FloatArray,
        t_lower_c: FloatArray,
        setpoint_c: FloatArray,
        deadband_k: FloatArray,
        elements_allowed: BoolArray,
        resistance_mode: BoolArray,
        upper_on: BoolArray,
        lower_on: BoolArray,
        h_s: float,
    ) -> tuple[BoolArray, BoolArray]:
        """Choose each heat-pump device's mode for the next sub-step.

        Parameters
        ----------
        t_upper_c, t_lower_c : numpy.ndarray
            Upper and lower element node temperatures, °C.
        setpoint_c, deadband_k : numpy.ndarray
            Effective setpoint (top of the band), °C, and deadband, K (after DR).
        elements_allowed : numpy.ndarray
            Bool, the backup elements may run (DR and ``element_kw > 0``).
        resistance_mode : numpy.ndarray
            Bool, the device runs as a resistance heater this sub-step (ER-only ambient,
            Grid Emergency lockout): its elements are ``upper_on`` / ``lower_on``.
        upper_on, lower_on : numpy.ndarray
            Element states from the resistance thermostat, bool.
        h_s : float
            Sub-step length, s.

        Returns
        -------
        upper_on, lower_on : numpy.ndarray
            Element states of every device (resistance devices unchanged).
        """
        m = self.mode
        sp, db = setpoint_c, deadband_k
        element = (m == UPPER) | (m == LOWER)
        t_ctl = 0.75 * t_upper_c + 0.25 * t_lower_c
        up = elements_allowed & (
            (t_upper_c < sp - UPPER_ELEMENT_BELOW_K) | ((m == UPPER) & (t_upper_c < sp))
        )
        lo = elements_allowed & ~up & element & (t_lower_c < sp - LOWER_ELEMENT_BELOW_K)
        undecided = ~up & ~lo
        comp = undecided & (element | (t_ctl < sp - db))
        off = undecided & ~comp & ((t_ctl >= sp) | (t_upper_c >= sp + UPPER_OFF_ABOVE_K))
        want = np.select([up, lo, comp, off], [UPPER, LOWER, COMPRESSOR, OFF], m)
        held = (m == COMPRESSOR) & (self.time_in_mode_s < MIN_ON_S)
        new = np.where(held, m, want)
        as_resistance = np.where(upper_on, UPPER, np.where(lower_on, LOWER, OFF))
        new = np.where(resistance_mode, as_resistance, new)
        new = np.where(self.is_heat_pump, new, OFF).astype(np.int64)
        self.time_in_mode_s = np.where(new == m, self.time_in_mode_s + h_s, h_s)
        self.mode = new
        hp = self.is_heat_pump
        return (
            np.where(hp, new == UPPER, upper_on),
            np.where(hp, new == LOWER, lower_on),
        )

    def heat_and_power(self, h_s: float) -> tuple[FloatArray, FloatArray]:
        """Condenser heat per node, J ``(n, N)``, and heat-pump electricity, J ``(n,)``,
        over a sub-step of ``h_s`` s (elements not included)."""
        on = self.mode == COMPRESSOR
        heat_w = np.where(on, self.capacity_w, 0.0)
        comp_w = np.where(on, self.capacity_w / self.cop, 0.0)
        aux_w = np.where(self.is_heat_pump, np.where(on, self.fan_w, self.parasitic_w), 0.0)
        self.compressor_kwh += comp_w * h_s / 3.6e6
        self.condenser_kwh += heat_w * h_s / 3.6e6
        self.auxiliary_kwh += aux_w * h_s / 3.6e6
        q = (heat_w * h_s)[:, None] * self.weights[None, :]
        return q, (comp_w + aux_w) * h_s

    def electric_kw_at_full(self) -> FloatArray:
        """Electric input with the compressor on at the present COP, kW (0 for resistance)."""
        w = self.capacity_w / self.cop + self.fan_w
        return np.asarray(np.where(self.is_heat_pump, w / 1000.0, 0.0))
