"""The ``Nameplate`` property of ``edu.pdx.powerlab.demo``: a device's ratings as ``a{sv}``.

An agent publishes it (retained) once it has read the device, and again only when it
changes; a controller builds its fleet from it (``docs/interfaces.md``, "Nameplate keys").
Every key carries its unit in its name:

==============================  ====  =====================================================
key                             type  meaning
==============================  ====  =====================================================
``DeviceType``                  s     ``"battery"`` | ``"water_heater"`` | ``"meter"`` |
                                      ``"pv_inverter"`` | ``"ev_charger"``
``Charge_Rate_kW``              d     battery: rated charge power, kW
``Discharge_Rate_kW``           d     battery: rated discharge power, kW
``Capacity_kWh``                d     battery: rated stored energy at SOC 100 %, kWh
``SOC_Min_pct``                 d     battery: lowest SOC the battery allows, % of capacity
``SOC_Max_pct``                 d     battery: highest SOC the battery allows, %
``Charge_Efficiency_pct``       d     battery: one-way AC → stored efficiency, %
``Discharge_Efficiency_pct``    d     battery: one-way stored → AC efficiency, %
``Heater_Type``                 s     water heater: ``"resistance"`` | ``"heat_pump"``
``Volume_L``                    d     water heater: tank volume, L
``Element_kW``                  d     water heater: resistance element power (one at a
                                      time), kW
``Compressor_kW``               d     water heater: compressor electric power, kW (0 for
                                      a resistance heater)
``Setpoint_C``                  d     water heater: thermostat setpoint, °C
``Deadband_K``                  d     water heater: thermostat deadband, K
``Inlet_C``                     d     water heater, optional: mains water temperature, °C
``Phases``                      i     meter: number of phases
``AC_Rating_kW``                d     PV inverter: active-power rating (SunSpec 702 WMaxRtg)
``VA_Rating_kVA``               d     PV inverter: apparent-power rating (702 VAMaxRtg)
``Var_Rating_kvar``             d     PV inverter, optional: reactive capability (702
                                      VarMaxInjRtg), kvar
``DC_Rating_kWp``               d     PV inverter, optional: PV array rating at STC, kWp
``Charge_Rate_kW``              d     EV charger (``ev_charger``): the charger's rating, kW
==============================  ====  =====================================================

:func:`nameplate_problems` checks a value against this schema (the certification suite and
the tests use it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sef.interface import Variant

__all__ = [
    "BATTERY_KEYS",
    "DEFAULT_EFFICIENCY_PCT",
    "DEVICE_TYPES",
    "EV_CHARGER_KEYS",
    "HEATER_TYPES",
    "METER_KEYS",
    "OPTIONAL_KEYS",
    "PV_INVERTER_KEYS",
    "WATER_HEATER_KEYS",
    "battery_nameplate",
    "ev_charger_nameplate",
    "nameplate_problems",
    "pv_inverter_nameplate",
    "water_heater_nameplate",
]

DEVICE_TYPES = ("battery", "water_heater", "meter", "pv_inverter", "ev_charger")
HEATER_TYPES = ("resistance", "heat_pump")
DEFAULT_EFFICIENCY_PCT = 97.5
"""One-way efficiency a battery agent reports when its device does not say (%): SEF's
battery model default (0.975 each way, round trip 95.1 %). SunSpec models 802, 124 and 713
carry no efficiency."""

BATTERY_KEYS: dict[str, str] = {
    "Charge_Rate_kW": "d",
    "Discharge_Rate_kW": "d",
    "Capacity_kWh": "d",
    "SOC_Min_pct": "d",
    "SOC_Max_pct": "d",
    "Charge_Efficiency_pct": "d",
    "Discharge_Efficiency_pct": "d",
}
"""Required battery keys and their D-Bus types."""
WATER_HEATER_KEYS: dict[str, str] = {
    "Heater_Type": "s",
    "Volume_L": "d",
    "Element_kW": "d",
    "Compressor_kW": "d",
    "Setpoint_C": "d",
    "Deadband_K": "d",
}
"""Required water-heater keys and their D-Bus types."""
METER_KEYS: dict[str, str] = {"Phases": "i"}
"""Required meter keys and their D-Bus types."""
PV_INVERTER_KEYS: dict[str, str] = {"AC_Rating_kW": "d", "VA_Rating_kVA": "d"}
"""Required PV-inverter keys and their D-Bus types."""
EV_CHARGER_KEYS: dict[str, str] = {"Charge_Rate_kW": "d"}
"""Required EV-charger keys and their D-Bus types."""
OPTIONAL_KEYS: dict[str, dict[str, str]] = {
    "water_heater": {"Inlet_C": "d"},
    "pv_inverter": {"Var_Rating_kvar": "d", "DC_Rating_kWp": "d"},
}
"""Optional keys per device type and their D-Bus types."""
_REQUIRED = {
    "battery": BATTERY_KEYS,
    "water_heater": WATER_HEATER_KEYS,
    "meter": METER_KEYS,
    "pv_inverter": PV_INVERTER_KEYS,
    "ev_charger": EV_CHARGER_KEYS,
}
_POSITIVE = ("Charge_Rate_kW", "Discharge_Rate_kW", "Capacity_kWh", "Volume_L", "Phases",
             "AC_Rating_kW", "VA_Rating_kVA", "DC_Rating_kWp")  # fmt: skip
_NON_NEGATIVE = ("Element_kW", "Compressor_kW", "Deadband_K", "Var_Rating_kvar")
_PERCENT = ("SOC_Min_pct", "SOC_Max_pct", "Charge_Efficiency_pct", "Discharge_Efficiency_pct")


def battery_nameplate(
    *,
    charge_kw: float,
    discharge_kw: float,
    capacity_kwh: float,
    soc_min_pct: float,
    soc_max_pct: float,
    charge_efficiency_pct: float = DEFAULT_EFFICIENCY_PCT,
    discharge_efficiency_pct: float = DEFAULT_EFFICIENCY_PCT,
) -> dict[str, Variant]:
    """A battery's ``Nameplate``: powers kW, energy kWh, SOC limits and efficiencies %."""
    values = {
        "Charge_Rate_kW": charge_kw,
        "Discharge_Rate_kW": discharge_kw,
        "Capacity_kWh": capacity_kwh,
        "SOC_Min_pct": soc_min_pct,
        "SOC_Max_pct": soc_max_pct,
        "Charge_Efficiency_pct": charge_efficiency_pct,
        "Discharge_Efficiency_pct": discharge_efficiency_pct,
    }
    return {
        "DeviceType": Variant("s", "battery"),
        **{key: Variant("d", round(float(v), 4)) for key, v in values.items()},
    }


def water_heater_nameplate(
    *,
    heater_type: str,
    volume_l: float,
    element_kw: float,
    compressor_kw: float,
    setpoint_c: float,
    deadband_k: float,
    inlet_c: float | None = None,
) -> dict[str, Variant]:
    """A water heater's ``Nameplate``: L, kW, °C, K (``Inlet_C`` only when known)."""
    if heater_type not in HEATER_TYPES:
        raise ValueError(f"heater type {heater_type!r} is not one of {HEATER_TYPES}")
    values = {
        "Volume_L": volume_l,
        "Element_kW": element_kw,
        "Compressor_kW": compressor_kw,
        "Setpoint_C": setpoint_c,
        "Deadband_K": deadband_k,
    }
    if inlet_c is not None:
        values["Inlet_C"] = inlet_c
    return {
        "DeviceType": Variant("s", "water_heater"),
        "Heater_Type": Variant("s", heater_type),
        **{key: Variant("d", round(float(v), 4)) for key, v in values.items()},
    }


def pv_inverter_nameplate(
    *,
    ac_kw: float,
    kva: float,
    var_kvar: float | None = None,
    dc_kwp: float | None = None,
) -> dict[str, Variant]:
    """A PV inverter's ``Nameplate``: kW, kVA, optional kvar and kWp (when known)."""
    values = {"AC_Rating_kW": ac_kw, "VA_Rating_kVA": kva}
    if var_kvar is not None:
        values["Var_Rating_kvar"] = var_kvar
    if dc_kwp is not None:
        values["DC_Rating_kWp"] = dc_kwp
    return {
        "DeviceType": Variant("s", "pv_inverter"),
        **{key: Variant("d", round(float(v), 4)) for key, v in values.items()},
    }


def ev_charger_nameplate(*, charge_kw: float) -> dict[str, Variant]:
    """An EV charger's ``Nameplate``: its rating, kW (the EV's own limit is per session)."""
    return {
        "DeviceType": Variant("s", "ev_charger"),
        "Charge_Rate_kW": Variant("d", round(float(charge_kw), 4)),
    }


def nameplate_problems(value: Mapping[str, object]) -> list[str]:
    """What is wrong with a ``Nameplate`` value (``a{sv}`` as ``{key: Variant}``); ``[]``
    when it is well formed: a known ``DeviceType``, every required key of that type with
    its type, finite numbers, positive ratings, percentages in 0..100 with SOC_Min_pct <
    SOC_Max_pct, a known ``Heater_Type``. Keys it does not know are allowed."""
    kind = _plain(value.get("DeviceType"), "s")
    if kind not in DEVICE_TYPES:
        return [f"DeviceType {_show(value.get('DeviceType'))} is not one of {DEVICE_TYPES}"]
    problems: list[str] = []
    wanted = {**_REQUIRED[str(kind)], **OPTIONAL_KEYS.get(str(kind), {})}
    numbers: dict[str, float] = {}
    for key, sig in wanted.items():
        if key not in value:
            if key in _REQUIRED[str(kind)]:
                problems.append(f"{key}: missing")
            continue
        got = value[key]
        plain = _plain(got, sig)
        if plain is None:
            problems.append(f"{key}: expected type {sig!r}, got {_show(got)}")
        elif sig in "di":
            assert isinstance(plain, int | float)
            numbers[key] = float(plain)
    for key, number in numbers.items():
        if not math.isfinite(number):
            problems.append(f"{key}: {number} is not finite")
        elif key in _POSITIVE and number <= 0:
            problems.append(f"{key}: {number:g} must be > 0")
        elif key in _NON_NEGATIVE and number < 0:
            problems.append(f"{key}: {number:g} must be >= 0")
        elif key in _PERCENT and not 0 <= number <= 100:
            problems.append(f"{key}: {number:g} % is outside 0..100")
    low, high = numbers.get("SOC_Min_pct"), numbers.get("SOC_Max_pct")
    if low is not None and high is not None and not low < high:
        problems.append(f"SOC_Min_pct {low:g} is not below SOC_Max_pct {high:g}")
    heater = value.get("Heater_Type")
    if kind == "water_heater" and heater is not None and _plain(heater, "s") not in HEATER_TYPES:
        problems.append(f"Heater_Type {_show(heater)} is not one of {HEATER_TYPES}")
    if kind == "water_heater" and not problems:
        element, compressor = numbers["Element_kW"], numbers["Compressor_kW"]
        if element + compressor <= 0:
            problems.append("Element_kW and Compressor_kW are both 0: the heater draws no power")
    return problems


def _plain(item: object, sig: str) -> object | None:
    """The value of a variant of type ``sig`` (``None`` if it is not one)."""
    if not isinstance(item, Variant) or item.signature != sig:
        return None
    if sig == "s":
        return item.value if isinstance(item.value, str) else None
    if isinstance(item.value, bool) or not isinstance(item.value, int | float):
        return None
    return item.value


def _show(item: object) -> str:
    if isinstance(item, Variant):
        return f"{item.signature!r} {item.value!r:.40}"
    return "nothing" if item is None else f"{item!r:.40}"
