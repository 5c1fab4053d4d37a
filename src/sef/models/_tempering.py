"""Tempering (mixing) valve of the water-heater model: hot share of a fixture draw.

A thermostatic mixing valve delivers water at ``T_mix`` by mixing tank water (outlet
``T_out``) with mains water (``T_in``). Per litre at the fixture it takes
``(T_mix - T_in) / (T_out - T_in)`` litres from the tank when ``T_out > T_mix``, else
one (the fixture then gets colder water: unmet demand). NREL OCHRE 0.9.2
(``StratifiedWaterModel.update_water_draw``) applies this to its fixture draws with
``T_out`` = top-node temperature at the start of the step and ``T_mix`` = 40.56 °C
(105 °F, ``Mixed Delivery Temperature (C)``); we do the same per sub-step.
Units: °C, L, J.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sef.models._waterheater_thermal import WATER_C_J_PER_L_K

FloatArray = NDArray[np.float64]

__all__ = ["hot_share", "unmet_heat_j"]


def hot_share(outlet_c: FloatArray, mixed_c: FloatArray, inlet_c: FloatArray) -> FloatArray:
    """Litres of tank water per litre at the fixture, in [0, 1].

    Parameters
    ----------
    outlet_c : numpy.ndarray
        Tank outlet temperature, °C.
    mixed_c : numpy.ndarray
        Valve delivery temperature, °C (``nan`` = no valve: share 1).
    inlet_c : numpy.ndarray
        Mains temperature, °C.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(outlet_c > mixed_c, (mixed_c - inlet_c) / (outlet_c - inlet_c), 1.0)
    return np.asarray(np.clip(share, 0.0, 1.0))


def unmet_heat_j(
    fixture_l: FloatArray, mixed_c: FloatArray, inlet_c: FloatArray, delivered_j: FloatArray
) -> FloatArray:
    """Heat the fixtures asked for (``fixture_l`` litres at ``mixed_c`` above the mains)
    and did not get from ``delivered_j``, J, >= 0."""
    wanted = WATER_C_J_PER_L_K * fixture_l * (mixed_c - inlet_c)
    return np.asarray(np.clip(wanted - delivered_j, 0.0, None))
