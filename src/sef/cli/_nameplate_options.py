"""Nameplate options of ``sef bis`` and ``sef ucm``: what the device cannot tell.

``sef ucm``: an option given wins over what the SGD reports (``docs/ucm.md``, Nameplate);
``sef bis``: the efficiencies, which no SunSpec battery model carries.
"""

from __future__ import annotations

from typing import Any

import typer

from sef.agents._nameplate import DEFAULT_EFFICIENCY_PCT

__all__ = [
    "CHARGE_EFFICIENCY_OPTION",
    "COMPRESSOR_KW_OPTION",
    "DEADBAND_K_OPTION",
    "DISCHARGE_EFFICIENCY_OPTION",
    "ELEMENT_KW_OPTION",
    "HEATER_TYPE_OPTION",
    "INLET_C_OPTION",
    "SETPOINT_C_OPTION",
    "VOLUME_L_OPTION",
]

CHARGE_EFFICIENCY_OPTION: Any = typer.Option(
    DEFAULT_EFFICIENCY_PCT,
    "--charge-efficiency",
    min=1.0,
    max=100.0,
    help="One-way AC-to-stored efficiency for the Nameplate, %.",
)
DISCHARGE_EFFICIENCY_OPTION: Any = typer.Option(
    DEFAULT_EFFICIENCY_PCT,
    "--discharge-efficiency",
    min=1.0,
    max=100.0,
    help="One-way stored-to-AC efficiency for the Nameplate, %.",
)
HEATER_TYPE_OPTION: Any = typer.Option(
    None,
    "--heater-type",
    help="resistance or heat_pump (default: from the SGD's device type, else resistance).",
)
VOLUME_L_OPTION: Any = typer.Option(
    None,
    "--volume-l",
    min=1.0,
    help="Tank volume, L (default: estimated from the SGD's storage capacity, else 170).",
)
ELEMENT_KW_OPTION: Any = typer.Option(
    None,
    "--element-kw",
    min=0.0,
    help="Element power, kW (default: the SGD's rated maximum consumption, else 4.5).",
)
COMPRESSOR_KW_OPTION: Any = typer.Option(
    None,
    "--compressor-kw",
    min=0.0,
    help="Compressor power of a heat pump, kW (default 0.5; 0 for a resistance heater).",
)
SETPOINT_C_OPTION: Any = typer.Option(
    None, "--setpoint-c", help="Setpoint, °C (default: the SGD's setpoint 1, else 51.67)."
)
DEADBAND_K_OPTION: Any = typer.Option(
    None, "--deadband-k", min=0.0, help="Thermostat deadband, K (default 5.56)."
)
INLET_C_OPTION: Any = typer.Option(
    None, "--inlet-c", help="Mains water temperature, °C (published only when given)."
)
