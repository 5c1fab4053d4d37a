"""The opt-out policy: unsupported, blocked, test, too long and cannot-deliver events, and its
JSON form for the API."""

from __future__ import annotations

from typing import Any

import pytest
from oadr_mapping_support import battery, event, heater, meter, signal

from sef.openadr import (
    FleetMember,
    Opt,
    OptDecision,
    OptPolicy,
    Plan,
    Targets,
    Unsupported,
    available_reduction_kw,
    load_mapping,
    plan_event,
)

TABLE = load_mapping()
FLEET = [battery("b1", 8.0, power_kw=2.0), battery("b2", 4.0), heater("h1", power_kw=4.5)]


def decide(
    policy: OptPolicy, values: list[float], fleet: list[FleetMember], **kw: Any
) -> OptDecision:
    ev = event(signal("LOAD_DISPATCH", "delta", values, unit="kW"), **kw)
    return policy.decide(ev, plan_event(ev, fleet, TABLE), fleet)


def test_available_reduction_counts_discharge_charging_and_heaters() -> None:
    # 8 + 4 discharge, +2 the charging battery stops, +4.5 the heater sheds
    assert available_reduction_kw(FLEET) == 18.5
    offline = [battery("x", 8, online=False), heater("y", power_kw=3, online=False), meter("m", 50)]
    assert available_reduction_kw(offline) == 0.0


def test_unsupported_is_opted_out_with_the_mapping_reason() -> None:
    ev = event(signal("SIMPLE", "level", [7]))
    got = OptPolicy().decide(ev, plan_event(ev, FLEET, TABLE), FLEET)
    assert got == OptDecision(Opt.OUT, "SIMPLE level interval 0: value 7 outside 0…3")


def test_must_deliver_opts_out_what_the_fleet_cannot_give() -> None:
    strict = OptPolicy(must_deliver=True)
    assert decide(strict, [-50], FLEET) == OptDecision(
        Opt.OUT, "fleet cannot deliver 50 kW: at most 18 kW available"
    )
    assert decide(strict, [-10, -18.5], FLEET).opt is Opt.IN
    assert decide(strict, [+50], FLEET).opt is Opt.IN  # an increase is not a reduction
    assert decide(OptPolicy(), [-50], FLEET).opt is Opt.IN  # best effort without must_deliver


def test_must_deliver_counts_only_the_targeted_members() -> None:
    strict = OptPolicy(must_deliver=True)
    got = decide(strict, [-10], FLEET, targets=Targets(groups=("heaters",)))
    assert got == OptDecision(Opt.OUT, "fleet cannot deliver 10 kW: at most 4 kW available")


def test_must_deliver_for_a_capacity_limit_counts_the_whole_fleet() -> None:
    fleet = [*FLEET, meter("m1", power_kw=40.0)]
    ev = event(signal("IMPORT_CAPACITY_LIMIT", "setpoint", [10.0], unit="kW"))
    plan = plan_event(ev, fleet, TABLE, live_control=True)
    assert isinstance(plan, Plan) and plan.requested_kw == -30.0
    got = OptPolicy(must_deliver=True).decide(ev, plan, fleet)
    assert got == OptDecision(Opt.OUT, "fleet cannot deliver 30 kW: at most 18 kW available")


def test_blocked_programs_and_signals() -> None:
    policy = OptPolicy(blocked_programs=frozenset({"cpp"}), blocked_signals=frozenset({"SIMPLE"}))
    assert decide(policy, [-1], FLEET, program="cpp") == OptDecision(
        Opt.OUT, "operator blocks program cpp"
    )
    ev = event(signal("SIMPLE", "level", [1]))
    assert policy.decide(ev, plan_event(ev, FLEET, TABLE), FLEET) == OptDecision(
        Opt.OUT, "operator blocks signal SIMPLE"
    )
    assert decide(policy, [-1], FLEET) == OptDecision(Opt.IN, "mapped LOAD_DISPATCH")


def test_test_events_are_answered_and_may_be_opted_out() -> None:
    assert decide(OptPolicy(), [-1], FLEET, test=True) == OptDecision(
        Opt.IN, "test event: answered, nothing sent"
    )
    got = decide(OptPolicy(opt_out_test_events=True), [-1], FLEET, test=True)
    assert got.opt is Opt.OUT and "test event" in got.reason


def test_too_long_events() -> None:
    got = decide(OptPolicy(max_duration_s=3000), [-1], FLEET)
    assert got == OptDecision(Opt.OUT, "event lasts 3600 s, operator allows at most 3000 s")
    assert decide(OptPolicy(max_duration_s=3600), [-1], FLEET).opt is Opt.IN


def test_unsupported_wins_over_everything() -> None:
    ev = event(signal("x-foo", "level", [1]), program="cpp", test=True)
    got = OptPolicy(blocked_programs=frozenset({"cpp"})).decide(ev, Unsupported("nope"), FLEET)
    assert got == OptDecision(Opt.OUT, "nope")


def test_json_round_trip() -> None:
    policy = OptPolicy(
        blocked_programs=frozenset({"b", "a"}),
        blocked_signals=frozenset({"PRICE"}),
        opt_out_test_events=True,
        must_deliver=True,
        max_duration_s=7200.0,
    )
    data = policy.as_json()
    assert data == {
        "blocked_programs": ["a", "b"],
        "blocked_signals": ["PRICE"],
        "opt_out_test_events": True,
        "must_deliver": True,
        "max_duration_s": 7200.0,
    }
    assert OptPolicy.from_json(data) == policy
    assert OptPolicy.from_json({}) == OptPolicy()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"blocked": []}, "unknown key 'blocked'"),
        ({"blocked_programs": "cpp"}, "blocked_programs must be a list"),
        ({"blocked_signals": [""]}, "blocked_signals must be a list of non-empty strings"),
        ({"must_deliver": "yes"}, "must_deliver must be true or false"),
        ({"opt_out_test_events": 1}, "opt_out_test_events must be true or false"),
        ({"max_duration_s": -1}, "max_duration_s must be a positive"),
        ({"max_duration_s": float("nan")}, "max_duration_s must be a positive"),
        ({"max_duration_s": True}, "max_duration_s must be a number"),
        ([], "expected a JSON object"),
    ],
)
def test_from_json_refuses_bad_data(data: Any, needle: str) -> None:
    with pytest.raises(ValueError, match="policy") as info:
        OptPolicy.from_json(data)
    assert needle in str(info.value)
