"""``MeterValues`` sampled values: the energy register (Wh) and the power (W), both ways.

OCPP 1.6 carries each value as a string with ``unit``; 2.0.1 as a number with
``unit_of_measure.unit`` (snake_case, as the ``ocpp`` package hands payloads over).
Measurands used: ``Energy.Active.Import.Register`` (Wh or kWh) and
``Power.Active.Import`` (W or kW).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._profiles import iso, parse_iso

__all__ = ["ENERGY", "POWER", "MeterReading", "meter_value", "parse_meter_values"]

ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
_SCALE = {"Wh": 1.0, "kWh": 1000.0, "W": 1.0, "kW": 1000.0}


@dataclass(frozen=True)
class MeterReading:
    """The newest values of a ``MeterValues`` list (None where absent).

    Attributes:
        t_s: the meter value's time (Unix s).
        energy_wh: energy register (Wh).
        power_w: active power drawn (W).
    """

    t_s: float
    energy_wh: float | None
    power_w: float | None


def meter_value(
    version: str, t_s: float, energy_wh: float, power_w: float, context: str = "Sample.Periodic"
) -> dict[str, Any]:
    """One ``MeterValue`` (snake_case) with the energy register (Wh) and the power (W)."""

    def sample(value: float, measurand: str, unit: str) -> dict[str, Any]:
        if version == "ocpp1.6":
            return {
                "value": f"{value:.1f}",
                "measurand": measurand,
                "unit": unit,
                "context": context,
            }
        return {
            "value": round(value, 1),
            "measurand": measurand,
            "unit_of_measure": {"unit": unit},
            "context": context,
        }

    return {
        "timestamp": iso(t_s),
        "sampled_value": [sample(energy_wh, ENERGY, "Wh"), sample(power_w, POWER, "W")],
    }


def _value(sample: dict[str, Any]) -> tuple[str, float]:
    measurand = sample.get("measurand", ENERGY)  # OCPP's default measurand
    unit = sample.get("unit")
    uom = sample.get("unit_of_measure")
    if isinstance(uom, dict):
        unit = uom.get("unit", unit)
        multiplier = uom.get("multiplier", 0)
    else:
        multiplier = 0
    unit = unit or ("Wh" if measurand == ENERGY else "W")
    raw = sample.get("value")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise ValueError(f"sampled value is not a number: {raw!r}")
    value = float(raw)
    if not math.isfinite(value) or unit not in _SCALE or not isinstance(multiplier, int):
        raise ValueError(f"unusable sampled value {raw!r} {unit!r}")
    return str(measurand), value * _SCALE[unit] * 10.0**multiplier


def parse_meter_values(values: object) -> MeterReading | None:
    """The newest energy and power in a ``meter_value`` list (snake_case); None when it
    holds none of them. Samples of other measurands are ignored.

    Raises:
        ValueError: the list is malformed (names what).
    """
    if not isinstance(values, list):
        raise ValueError("meter_value is not a list")
    newest: MeterReading | None = None
    for item in values:
        if not isinstance(item, dict) or not isinstance(item.get("sampled_value"), list):
            raise ValueError("meter value without sampled_value list")
        t_s = parse_iso(item.get("timestamp"))
        energy = power = None
        for sample in item["sampled_value"]:
            if not isinstance(sample, dict):
                raise ValueError("sampled value is not an object")
            if sample.get("phase") is not None:
                continue  # per-phase values: the totals are what is kept
            measurand, value = _value(sample)
            if measurand == ENERGY:
                energy = value
            elif measurand == POWER:
                power = value
        if (energy is not None or power is not None) and (newest is None or t_s >= newest.t_s):
            newest = MeterReading(
                t_s,
                energy if energy is not None else (newest.energy_wh if newest else None),
                power if power is not None else (newest.power_w if newest else None),
            )
    return newest
