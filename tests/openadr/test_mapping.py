"""The mapping table row by row on small fleets: which command, which rate, for how long,
to whom (docs/openadr.md, "Mapping"); int16 splits, 256-event windows, coalescing, restore."""

from __future__ import annotations

import pytest
from oadr_mapping_support import (
    T0,
    as_plan,
    battery,
    commands_of,
    event,
    heater,
    meter,
    signal,
)

from sef.openadr import (
    Dispatch,
    FleetMember,
    MappingTable,
    Plan,
    Targets,
    TargetWindow,
    Unsupported,
    load_mapping,
    plan_event,
)

Commands = tuple[tuple[str, int, int], ...]
TABLE = load_mapping()
FLEET = [battery("b1", 8.0), heater("h1"), meter("m1")]


def one(name: str, type_: str, value: float, unit: str | None = None) -> dict[str, Commands]:
    """Commands of b1 (8 kW) and h1 for one 1-h interval."""
    plan = as_plan(plan_event(event(signal(name, type_, [value], unit=unit)), FLEET, TABLE))
    return {a: commands_of(plan, a) for a in ("b1", "h1", "m1")}


@pytest.mark.parametrize(
    ("level", "bat", "wh"),
    [
        (0, ("idle", 0), "endshed"),
        (1, ("shed", 3), "shed"),  # ⌈0.33·8⌉ = ⌈2.64⌉
        (2, ("shed", 6), "discharge"),  # ⌈0.66·8⌉ = ⌈5.28⌉; heater: Critical Peak
        (3, ("shed", 8), "discharge"),
    ],
)
def test_simple_levels(level: int, bat: tuple[str, int], wh: str) -> None:
    got = one("SIMPLE", "level", level)
    assert got == {"b1": ((*bat, 3600),), "h1": ((wh, 0, 3600),), "m1": ()}


@pytest.mark.parametrize(
    ("type_", "value", "unit", "bat", "wh"),
    [
        ("x-loadControlCapacity", 0.25, None, ("shed", 6), "discharge"),  # ⌈0.75·8⌉
        ("x-loadControlCapacity", 0.75, None, ("shed", 2), "shed"),
        ("x-loadControlCapacity", 1.0, None, ("idle", 0), "endshed"),
        ("x-loadControlLevelOffset", 1, None, ("shed", 3), "shed"),  # ⌈8/3⌉
        ("x-loadControlLevelOffset", 2, None, ("shed", 6), "discharge"),
        ("x-loadControlLevelOffset", 5, None, ("shed", 8), "discharge"),
        ("x-loadControlLevelOffset", 0, None, ("idle", 0), "endshed"),
        ("x-loadControlLevelOffset", -1, None, ("charge", 3), "charge"),
        ("x-loadControlPercentOffset", -60, "%", ("discharge", 5), "discharge"),  # ⌈4.8⌉
        ("x-loadControlPercentOffset", -20, "%", ("discharge", 2), "shed"),
        ("x-loadControlPercentOffset", 0, "%", ("idle", 0), "endshed"),
        ("x-loadControlPercentOffset", 50, "%", ("charge", 4), "charge"),
    ],
)
def test_load_control(
    type_: str, value: float, unit: str | None, bat: tuple[str, int], wh: str
) -> None:
    got = one("LOAD_CONTROL", type_, value, unit)
    assert got["b1"] == ((*bat, 3600),)
    assert got["h1"] == ((wh, 0, 3600),)


@pytest.mark.parametrize(
    ("name", "type_", "value", "unit", "bat", "wh"),
    [
        ("ELECTRICITY_PRICE", "price", 0.05, "USD/kWh", ("charge", 8), "charge"),
        ("ENERGY_PRICE", "price", 0.20, "USD/kWh", ("idle", 0), "endshed"),
        ("PRICE", "price", 0.35, "EUR/kWh", ("discharge", 8), "shed"),
        ("ELECTRICITY_PRICE", "price", 0.70, "USD/kWh", ("discharge", 8), "discharge"),
        ("ELECTRICITY_PRICE", "priceRelative", 0.20, "USD/kWh", ("discharge", 8), "shed"),
        ("ELECTRICITY_PRICE", "priceMultiplier", 0.5, None, ("charge", 8), "charge"),
        ("ELECTRICITY_PRICE", "priceMultiplier", 5.0, None, ("discharge", 8), "discharge"),
    ],
)
def test_prices(
    name: str, type_: str, value: float, unit: str | None, bat: tuple[str, int], wh: str
) -> None:
    got = one(name, type_, value, unit)
    assert got["b1"] == ((*bat, 3600),)
    assert got["h1"] == ((wh, 0, 3600),)


def test_plan_carries_restore_signal_and_no_request_for_levels() -> None:
    plan = as_plan(plan_event(event(signal("SIMPLE", "level", [2])), FLEET, TABLE))
    assert plan.signal == "SIMPLE"
    assert plan.requested_kw is None
    assert plan.windows == ()
    assert plan.restore == (
        Dispatch(("b1",), T0, (("idle", 0, 1),)),
        Dispatch(("h1",), T0, (("endshed", 0, 1),)),
    )


def test_intervals_merge_and_split_at_int16() -> None:
    sig = signal("SIMPLE", "level", [1, 1, 2], duration_s=[1800, 1800, 40000])
    plan = as_plan(plan_event(event(sig), [battery("b1")], TABLE))
    assert commands_of(plan, "b1") == (("shed", 3, 3600), ("shed", 6, 32767), ("shed", 6, 7233))
    assert plan.dispatches[0].start_s == T0


def test_more_than_256_events_go_in_later_dispatches() -> None:
    sig = signal("SIMPLE", "level", [1, 2] * 150, duration_s=60)
    plan = as_plan(plan_event(event(sig), [battery("b1")], TABLE))
    first, second = plan.dispatches
    assert len(first.commands) == 256 and len(second.commands) == 44
    assert first.start_s == T0 and second.start_s == T0 + 256 * 60
    assert first.commands[:2] == (("shed", 3, 60), ("shed", 6, 60))


def test_rates_clip_to_the_nameplate_and_int16() -> None:
    fleet = [battery("small", 7.5), battery("huge", 50000.0), battery("none", 0.0)]
    plan = as_plan(plan_event(event(signal("SIMPLE", "level", [3])), fleet, TABLE))
    assert commands_of(plan, "small") == (("shed", 8, 3600),)  # the BIS clips 8 to 7.5
    assert commands_of(plan, "huge") == (("shed", 32767, 3600),)
    assert commands_of(plan, "none") == (("shed", 0, 3600),)  # shed 0 = stop charging


def test_identical_sequences_share_one_dispatch() -> None:
    fleet = [battery("b2"), battery("b1"), battery("b3", 4.0)]
    plan = as_plan(plan_event(event(signal("SIMPLE", "level", [2])), fleet, TABLE))
    assert {d.agents: d.commands for d in plan.dispatches} == {
        ("b1", "b2"): (("shed", 6, 3600),),
        ("b3",): (("shed", 3, 3600),),
    }
    assert plan.restore == (Dispatch(("b1", "b2", "b3"), T0, (("idle", 0, 1),)),)


def test_offline_members_and_meters_get_nothing() -> None:
    fleet = [battery("b1"), battery("b2", online=False), heater("h1", online=False), meter("m")]
    plan = as_plan(plan_event(event(signal("SIMPLE", "level", [1])), fleet, TABLE))
    assert [d.agents for d in plan.dispatches] == [("b1",)]
    assert [d.agents for d in plan.restore] == [("b1",)]


def test_targets_pick_groups_and_agents() -> None:
    fleet = [battery("b1", groups=("east",)), battery("b2", groups=("west",)), heater("h1")]
    for targets, expected in [
        (Targets(groups=("east",)), {"b1"}),
        (Targets(resources=("west",)), {"b2"}),
        (Targets(resources=("h1",)), {"h1"}),
        (Targets(groups=("east",), resources=("h1", "nowhere")), {"b1", "h1"}),
    ]:
        ev = event(signal("SIMPLE", "level", [1]), targets=targets)
        plan = as_plan(plan_event(ev, fleet, TABLE))
        assert {a for d in plan.dispatches for a in d.agents} == expected, targets


def test_an_event_under_way_starts_with_what_is_left() -> None:
    sig = signal("SIMPLE", "level", [1, 2, 3])
    plan = as_plan(plan_event(event(sig), [battery("b1")], TABLE, now_s=T0 + 5400))
    assert plan.dispatches[0].start_s == T0 + 5400
    assert commands_of(plan, "b1") == (("shed", 6, 1800), ("shed", 8, 3600))
    assert plan_event(event(sig), [battery("b1")], TABLE, now_s=T0 + 3 * 3600) == Unsupported(
        "the event is already over"
    )


# -- LOAD_DISPATCH -----------------------------------------------------------------------


def dispatch(
    type_: str, values: list[float], fleet: list[FleetMember], unit: str | None = "kW", **kw: bool
) -> Plan | Unsupported:
    return plan_event(event(signal("LOAD_DISPATCH", type_, values, unit=unit)), fleet, TABLE, **kw)


def test_delta_reduction_is_shared_pro_rata_to_the_ratings() -> None:
    plan = as_plan(dispatch("delta", [-10], [battery("big", 8), battery("small", 4)]))
    assert commands_of(plan, "big") == (("discharge", 7, 3600),)  # ⌈10·8/12⌉
    assert commands_of(plan, "small") == (("discharge", 4, 3600),)  # ⌈10·4/12⌉
    assert plan.requested_kw == -10


def test_delta_increase_charges_pro_rata_to_the_charge_ratings() -> None:
    fleet = [battery("a", 8, charge_kw=6), battery("b", 8, charge_kw=2)]
    plan = as_plan(dispatch("delta", [4], fleet))
    assert commands_of(plan, "a") == (("charge", 3, 3600),)
    assert commands_of(plan, "b") == (("charge", 1, 3600),)


def test_delta_beyond_the_fleet_is_clipped_to_the_ratings() -> None:
    plan = as_plan(dispatch("delta", [-100], [battery("big", 8), battery("small", 4)]))
    assert commands_of(plan, "big") == (("discharge", 8, 3600),)
    assert commands_of(plan, "small") == (("discharge", 4, 3600),)
    assert plan.requested_kw == -100


def test_delta_with_heaters_counts_their_shed_first() -> None:
    fleet = [battery("big", 8), battery("small", 4), heater("h1", power_kw=4.5)]
    plan = as_plan(dispatch("delta", [-10, 0, 3], fleet))
    # -10: the heater sheds its 4.5 kW, batteries give 5.5 -> ⌈3.67⌉ + ⌈1.83⌉; 0: normal;
    # +3: Load Up (no spare power: it already draws its element), batteries charge 3
    assert commands_of(plan, "h1") == (("shed", 0, 3600), ("endshed", 0, 3600), ("charge", 0, 3600))
    assert commands_of(plan, "big") == (
        ("discharge", 4, 3600),
        ("idle", 0, 3600),
        ("charge", 2, 3600),
    )
    assert commands_of(plan, "small") == (
        ("discharge", 2, 3600),
        ("idle", 0, 3600),
        ("charge", 1, 3600),
    )


def test_setpoint_uses_the_present_load() -> None:
    fleet = [battery("a", 8, power_kw=2.0), battery("b", 4, power_kw=0.0)]
    plan = as_plan(dispatch("setpoint", [-6], fleet))
    # now +2 kW (a charging), setpoint -6: Δ = -8; the batteries go to -6 in total
    assert commands_of(plan, "a") == (("discharge", 4, 3600),)
    assert commands_of(plan, "b") == (("discharge", 2, 3600),)
    assert plan.requested_kw == -8


def test_multiplier_scales_the_present_load() -> None:
    fleet = [battery("a", 8, power_kw=6.0), heater("h1", power_kw=4.0)]
    plan = as_plan(dispatch("multiplier", [0.5], fleet, unit=None))
    # load 10 kW x 0.5: Δ = -5; the heater sheds its 4 kW, the battery charges 6 - 1 = 5
    assert commands_of(plan, "h1") == (("shed", 0, 3600),)
    assert commands_of(plan, "a") == (("charge", 5, 3600),)
    assert plan.requested_kw == -5


@pytest.mark.parametrize("type_", ["setpoint", "multiplier"])
def test_setpoint_and_multiplier_need_power_readings(type_: str) -> None:
    fleet = [battery("a", power_kw=1.0), battery("b2")]
    got = dispatch(type_, [1.0], fleet, unit="kW" if type_ == "setpoint" else None)
    assert isinstance(got, Unsupported) and "no power reading from b2" in got.reason


def test_whole_fleet_setpoint_goes_to_the_live_controller() -> None:
    fleet = [battery("a", power_kw=1.0), heater("h", power_kw=3.0)]
    plan = as_plan(dispatch("setpoint", [2.0, -1.0], fleet, live_control=True))
    assert plan.dispatches == () and plan.restore == ()
    assert plan.windows == (
        TargetWindow(T0, T0 + 3600, target_kw=2.0),
        TargetWindow(T0 + 3600, T0 + 7200, target_kw=-1.0),
    )
    assert plan.requested_kw == -5.0
    grouped = plan_event(
        event(signal("LOAD_DISPATCH", "setpoint", [2.0], unit="kW"), targets=Targets(("bats",))),
        fleet,
        TABLE,
        live_control=True,
    )
    assert as_plan(grouped).dispatches  # a group's setpoint stays a direct dispatch


# -- CHARGE_STATE ------------------------------------------------------------------------


def test_charge_state_setpoint_charges_until_reached_then_idles() -> None:
    fleet = [battery("b1", 8, soc_pct=50.0, capacity_kwh=60.0), heater("h1")]
    sig = signal("CHARGE_STATE", "setpoint", [80.0], unit="%", duration_s=10800)
    plan = as_plan(plan_event(event(sig), fleet, TABLE))
    # 18 kWh at 8 kW and 97.5 %: 3600·18/(8·0.975) = 8307.7 s
    assert commands_of(plan, "b1") == (("charge", 8, 8308), ("idle", 0, 2492))
    assert commands_of(plan, "h1") == ()  # heaters have no state of charge
    assert plan.requested_kw is None
    kwh = signal("CHARGE_STATE", "setpoint", [48.0], unit="kWh", duration_s=10800)
    assert as_plan(plan_event(event(kwh), fleet, TABLE)).dispatches == plan.dispatches


def test_charge_state_delta_discharges_and_clips_to_the_soc_window() -> None:
    fleet = [battery("b1", 8, soc_pct=50.0, capacity_kwh=60.0)]
    down = signal("CHARGE_STATE", "delta", [-10.0], unit="%")
    # 6 kWh out at 8 kW: 3600·6·0.975/8 = 2632.5 s
    assert commands_of(as_plan(plan_event(event(down), fleet, TABLE)), "b1") == (
        ("discharge", 8, 2633),
        ("idle", 0, 967),
    )
    up = signal("CHARGE_STATE", "setpoint", [100.0, 100.0], unit="%", duration_s=7200)
    # capped at 95 %: 27 kWh -> 12461.5 s; first 2 h charge 15.6 kWh (to 76 %), then
    # 11.4 kWh in 5261.5 s: merged into one charge of 7200 + 5262 s
    assert commands_of(as_plan(plan_event(event(up), fleet, TABLE)), "b1") == (
        ("charge", 8, 12462),
        ("idle", 0, 1938),
    )


def test_charge_state_without_batteries_or_soc_is_refused() -> None:
    sig = signal("CHARGE_STATE", "setpoint", [80.0], unit="%")
    only_heater = plan_event(event(sig), [heater("h1")], TABLE)
    assert isinstance(only_heater, Unsupported) and "no online battery" in only_heater.reason
    no_soc = plan_event(event(sig), [battery("b1", soc_pct=None)], TABLE)
    assert isinstance(no_soc, Unsupported) and "b1 reports none" in no_soc.reason


# -- for the live controller only -----------------------------------------------------------


def test_import_capacity_limit_needs_the_live_controller() -> None:
    sig = signal("IMPORT_CAPACITY_LIMIT", "setpoint", [12.5, 10.0], unit="kW", duration_s=900)
    fleet = [meter("m1", power_kw=14.0), battery("b1")]
    assert plan_event(event(sig), fleet, TABLE) == Unsupported(
        "IMPORT_CAPACITY_LIMIT needs the live controller"
    )
    plan = as_plan(plan_event(event(sig), fleet, TABLE, live_control=True))
    assert plan.windows == (
        TargetWindow(T0, T0 + 900, limit_kw=12.5),
        TargetWindow(T0 + 900, T0 + 1800, limit_kw=10.0),
    )
    assert plan.dispatches == ()
    assert plan.requested_kw == -4.0  # the feeder draws 14 kW, the tightest limit is 10


def test_demand_charge_needs_a_contracted_demand() -> None:
    sig = signal("DEMAND_CHARGE", "price", [12.0], unit="USD/kW")
    refused = plan_event(event(sig), FLEET, TABLE, live_control=True)
    assert isinstance(refused, Unsupported) and "contracted demand" in refused.reason
    table = MappingTable(TABLE.rules, TABLE.max_event_s, TABLE.efficiency_pct, 250.0)
    assert isinstance(plan_event(event(sig), FLEET, table), Unsupported)
    plan = as_plan(plan_event(event(sig), FLEET, table, live_control=True))
    assert plan.windows == (TargetWindow(T0, T0 + 3600, limit_kw=250.0),)


def test_the_first_supported_signal_is_used() -> None:
    ev = event(signal("x-foo", "level", [1]), signal("SIMPLE", "level", [3]))
    plan = as_plan(plan_event(ev, [battery("b1")], TABLE))
    assert plan.signal == "SIMPLE" and commands_of(plan, "b1") == (("shed", 8, 3600),)
