"""The Nameplate schema: the property in the shipped XML, the keys, their types and units,
what a reader is told about missing or wrong keys, and how the UCM and the BIS turn device
answers into values (no bus here; ``test_nameplate.py`` runs them against the emulators)."""

from __future__ import annotations

import pytest

from sef.agents._nameplate import (
    BATTERY_KEYS,
    WATER_HEATER_KEYS,
    battery_nameplate,
    nameplate_problems,
    water_heater_nameplate,
)
from sef.agents._ucm_nameplate import (
    NameplateOptions,
    SgdRatings,
    heater_type_of,
    volume_from_storage_l,
)
from sef.agents.bis import _soc_limits_pct
from sef.interface import DEMO_INTERFACE, Variant, builtin_xml, from_json, load_xml, to_json
from sef.protocols import cta2045 as cta

BATTERY = battery_nameplate(
    charge_kw=5.0,
    discharge_kw=4.0,
    capacity_kwh=13.5,
    soc_min_pct=10.0,
    soc_max_pct=90.0,
    charge_efficiency_pct=96.0,
)
HEATER = water_heater_nameplate(
    heater_type="resistance",
    volume_l=170.0,
    element_kw=4.5,
    compressor_kw=0.0,
    setpoint_c=51.67,
    deadband_k=5.56,
)


def test_the_shipped_interface_declares_a_retained_read_only_nameplate() -> None:
    iface = load_xml(builtin_xml(DEMO_INTERFACE)).interfaces[DEMO_INTERFACE]
    prop = iface.properties["Nameplate"]
    assert (prop.type, prop.access, prop.emits_changed) == ("a{sv}", "read", "true")
    assert "DeviceType" in (prop.description or "")


def test_battery_keys_types_and_units() -> None:
    assert set(BATTERY) == {"DeviceType", *BATTERY_KEYS}
    assert BATTERY["DeviceType"] == Variant("s", "battery")
    assert all(BATTERY[key].signature == "d" for key in BATTERY_KEYS)
    assert BATTERY["Discharge_Efficiency_pct"] == Variant("d", 97.5)  # the default
    assert all(key.endswith(("_kW", "_kWh", "_pct")) for key in BATTERY_KEYS)
    assert nameplate_problems(BATTERY) == []


def test_water_heater_keys_and_the_optional_inlet() -> None:
    assert set(HEATER) == {"DeviceType", *WATER_HEATER_KEYS}  # no Inlet_C unless known
    assert HEATER["Heater_Type"] == Variant("s", "resistance")
    with_inlet = water_heater_nameplate(
        heater_type="heat_pump",
        volume_l=189.3,
        element_kw=4.5,
        compressor_kw=0.5,
        setpoint_c=51.67,
        deadband_k=8.17,
        inlet_c=14.4,
    )
    assert with_inlet["Inlet_C"] == Variant("d", 14.4)
    assert nameplate_problems(HEATER) == [] and nameplate_problems(with_inlet) == []
    with pytest.raises(ValueError, match="gas"):
        water_heater_nameplate(
            heater_type="gas",
            volume_l=1,
            element_kw=1,
            compressor_kw=0,
            setpoint_c=50,
            deadband_k=5,
        )


def test_the_json_form_round_trips() -> None:
    wire = to_json("a{sv}", BATTERY)
    assert isinstance(wire, dict)
    assert wire["Capacity_kWh"] == ["d", 13.5] and wire["DeviceType"] == ["s", "battery"]
    back = from_json("a{sv}", wire)
    assert isinstance(back, dict) and nameplate_problems(back) == []


def test_a_meter_needs_only_its_phases() -> None:
    assert (
        nameplate_problems({"DeviceType": Variant("s", "meter"), "Phases": Variant("i", 3)}) == []
    )
    assert nameplate_problems({"DeviceType": Variant("s", "meter")}) == ["Phases: missing"]


def _without(values: dict[str, Variant], *keys: str) -> dict[str, Variant]:
    return {k: v for k, v in values.items() if k not in keys}


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (_without(BATTERY, "Capacity_kWh"), "Capacity_kWh: missing"),
        (_without(BATTERY, "DeviceType"), "DeviceType nothing is not one of"),
        ({**BATTERY, "DeviceType": Variant("s", "ev")}, "DeviceType 's' 'ev' is not one of"),
        ({**BATTERY, "Capacity_kWh": Variant("s", "13.5")}, "Capacity_kWh: expected type 'd'"),
        ({**BATTERY, "Capacity_kWh": Variant("i", 13)}, "Capacity_kWh: expected type 'd'"),
        ({**BATTERY, "Charge_Rate_kW": Variant("d", 0.0)}, "Charge_Rate_kW: 0 must be > 0"),
        ({**BATTERY, "SOC_Max_pct": Variant("d", 120.0)}, "SOC_Max_pct: 120 % is outside"),
        ({**BATTERY, "SOC_Min_pct": Variant("d", 95.0)}, "SOC_Min_pct 95 is not below"),
        ({**BATTERY, "Capacity_kWh": Variant("d", float("nan"))}, "Capacity_kWh: nan is not"),
        (_without(HEATER, "Deadband_K"), "Deadband_K: missing"),
        ({**HEATER, "Heater_Type": Variant("s", "gas")}, "Heater_Type 's' 'gas' is not one of"),
        ({**HEATER, "Element_kW": Variant("d", -1.0)}, "Element_kW: -1 must be >= 0"),
        ({**HEATER, "Element_kW": Variant("d", 0.0)}, "Element_kW and Compressor_kW are both 0"),
        ({**HEATER, "Inlet_C": Variant("s", "cold")}, "Inlet_C: expected type 'd'"),
    ],
)
def test_problems_name_the_key(broken: dict[str, Variant], problem: str) -> None:
    problems = nameplate_problems(broken)
    assert any(p.startswith(problem) for p in problems), problems


def test_unknown_keys_are_allowed() -> None:
    assert nameplate_problems({**BATTERY, "Vendor_Warranty_y": Variant("u", 10)}) == []


def test_heater_type_from_the_cta2045_device_type() -> None:
    assert heater_type_of(cta.DeviceType.ELECTRIC_WATER_HEATER) == "resistance"
    assert heater_type_of(cta.DeviceType.HEAT_PUMP_WATER_HEATER) == "heat_pump"
    assert heater_type_of(cta.DeviceType.HPWH_VARIABLE_CAPACITY) == "heat_pump"
    assert heater_type_of(cta.DeviceType.GAS_WATER_HEATER) is None
    assert heater_type_of(None) is None


def test_volume_from_the_storage_commodity() -> None:
    # a 170 L tank at 51.67 °C holds 170 · 4183 J/K · 8.34 K / 3600 Wh above 43.33 °C
    wh = 170 * 4183 * (51.67 - 43.33) / 3600
    assert volume_from_storage_l(wh, 51.67) == pytest.approx(170.0, rel=1e-6)
    assert volume_from_storage_l(wh, 44.0) is None  # setpoint too close to the reference
    assert volume_from_storage_l(0.0, 51.67) is None
    assert volume_from_storage_l(100 * wh, 51.67) is None  # 17 000 L: not plausible


def _commodities(*records: tuple[int, int, int]) -> cta.CommodityReadReply:
    return cta.CommodityReadReply(
        records=tuple(cta.CommodityRecord(c, i, w, measured=False) for c, i, w in records)
    )


def test_ucm_values_come_from_options_then_the_sgd_then_defaults() -> None:
    ratings = SgdRatings()
    assert ratings.nameplate(cta.DeviceType.ELECTRIC_WATER_HEATER) is None  # before a poll
    ratings.polled()  # an SGD that told nothing: every default
    plain = {k: v.value for k, v in (ratings.nameplate(None) or {}).items()}
    assert plain == {
        "DeviceType": "water_heater",
        "Heater_Type": "resistance",
        "Volume_L": 170.0,
        "Element_kW": 4.5,
        "Compressor_kW": 0.0,
        "Setpoint_C": 51.67,
        "Deadband_K": 5.56,
    }
    ratings.reset()
    full_wh = round(250 * 4183 * (51.67 - 43.33) / 3600)
    ratings.commodities(_commodities((8, 3800, 0), (6, 0, full_wh)))
    ratings.polled()
    told = {k: v.value for k, v in (ratings.nameplate(3) or {}).items()}
    assert told["Heater_Type"] == "heat_pump" and told["Compressor_kW"] == 0.5
    assert told["Element_kW"] == 3.8 and told["Volume_L"] == pytest.approx(250.0, abs=0.2)
    # a tank hotter than its setpoint reports more storage: the smaller estimate stays
    ratings.commodities(_commodities((6, 0, 2 * full_wh)))
    ratings.polled()
    assert (ratings.nameplate(3) or {})["Volume_L"].value == pytest.approx(250.0, abs=0.2)
    configured = SgdRatings(NameplateOptions(heater_type="resistance", element_kw=5.5))
    configured.commodities(_commodities((8, 3800, 0)))
    configured.polled()
    plate = configured.nameplate(3) or {}
    assert plate["Heater_Type"].value == "resistance" and plate["Element_kW"].value == 5.5
    with pytest.raises(ValueError, match="heater type"):
        NameplateOptions(heater_type="gas")
    with pytest.raises(ValueError, match="volume_l"):
        NameplateOptions(volume_l=-1.0)


def test_bis_soc_window_from_the_limits_and_the_reserves() -> None:
    ratings = {"SoCMin": 5.0, "SoCMax": 95.0, "SoCRsvMin": 5.0, "SocRsvMax": 95.0}
    assert _soc_limits_pct(ratings, 5.0) == (5.0, 95.0)
    assert _soc_limits_pct({**ratings, "SocRsvMax": 80.0}, 20.0) == (20.0, 80.0)
    unimplemented = dict.fromkeys(ratings)  # 0xFFFF reads as None
    assert _soc_limits_pct(unimplemented, None) == (0.0, 100.0)
    # reserves that leave no window are ignored; the limits stay
    assert _soc_limits_pct({**ratings, "SoCRsvMin": 99.0, "SocRsvMax": 50.0}, None) == (5.0, 95.0)
