"""The live layer's peak protection (docs/control.md, "Live mode"): a re-plan that is
late keeps the batteries on their running rate (not the old plan's next interval), and
the peak guard discharges the batteries against the measured net."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sef.control._live_fleet import BatteryPlate, LiveFleet
from sef.control._live_plans import BatteryPlans
from sef.control.controllers.base import Observation
from sef.control.live import LiveControl
from sef.control.scenario import Scenario, scenario_from_dict
from sef.ems import EMS


def _scenario() -> Scenario:
    raw = {
        "name": "live-peak",
        "dt_s": 60,
        "duration_h": 1,
        "seed": 7,
        "base_load": {"source": "bdew_h0", "homes": 10},
        "target": {"kind": "flat", "value_kw": 3.0},
        "batteries": {"count": 1},
        "water_heaters": {"count": 1},
        "control": {"interval_min": 15, "horizon_h": 1},
    }
    return scenario_from_dict(raw)


def _fleet() -> LiveFleet:
    return LiveFleet(
        batteries=(
            BatteryPlate("a", 8.0, 8.0, 60.0, 0.1, 0.9, 0.95, 0.95),
            BatteryPlate("b", 8.0, 8.0, 60.0, 0.1, 0.9, 0.95, 0.95),
        )
    )


def test_hold_keeps_the_corrected_rate_for_the_next_interval() -> None:
    """At a re-plan, before the app's solve, each battery is sent its running (corrected)
    rate for one more interval followed by its later planned intervals (3 events)."""
    fleet, energy = _fleet(), np.array([30.0, 30.0])
    plans = BatteryPlans(3600.0, 1.0)
    assert plans.hold(fleet, 900.0, 15) == []  # no plan yet: nothing to hold
    future = [0.0, 4.0, -2.0, 6.0]  # the app's plan: idle now, charge 4 kW next interval
    plans.update(0, True, np.array([0, 0]), future, fleet, energy, 15, 60.0)
    # between re-plans the controller asks for 10 kW of discharge: a correction
    calls = plans.update(5, False, np.array([-5, -5]), None, fleet, energy, 15, 60.0)
    assert [c[1][0] for c in calls] == [("discharge", 5, 600)] * 2
    held = dict(plans.hold(fleet, 900.0, 15))
    assert set(held) == {"a", "b"}
    for events in held.values():
        assert events[0] == ("discharge", 5, 900)  # not the old plan's "charge 2"
        assert [e[2] for e in events] == [900] * 3
    assert sum(held[i][1][1] for i in "ab") == 2 and held["a"][1][0] == "discharge"
    # the fleet changed (a battery left): no hold, the new plan comes with the re-plan
    assert plans.hold(LiveFleet(batteries=fleet.batteries[:1]), 900.0, 15) == []
    # a correction while the new plan is being solved lasts this interval (not 1 s)
    calls = plans.update(17, False, np.array([-7, -7]), None, fleet, energy, 15, 60.0)
    assert [c[1][0] for c in calls] == [("discharge", 7, 780)] * 2
    assert [len(c[1]) for c in calls] == [3, 3]  # then the held plan's later intervals


def test_a_correction_after_a_missed_replan_lasts_the_interval_it_is_in() -> None:
    """No re-plan came (a failed app, a solve still running): the batteries moved on to
    their plan's next interval on their own clock; a correction (the feeder guard's)
    then holds for the rest of that interval, followed by the intervals after it."""
    fleet, energy = _fleet(), np.array([30.0, 30.0])
    plans = BatteryPlans(3600.0, 1.0)
    plans.update(0, True, np.array([1, 1]), [2.0, 4.0, -2.0, 6.0], fleet, energy, 15, 60.0)
    calls = dict(plans.update(21, False, np.array([-4, -4]), None, fleet, energy, 15, 60.0))
    for events in calls.values():
        assert events[0] == ("discharge", 4, 540)  # 9 steps left of interval 15..29
        assert len(events) == 3  # then the 3rd and 4th planned intervals
    assert plans.step == 15
    # past the whole plan: the last interval is kept as the one running
    calls = dict(plans.update(75, False, np.array([-6, -6]), None, fleet, energy, 15, 60.0))
    assert all(events == [("discharge", 6, 900)] for events in calls.values())


def _obs(net_kw: float, battery_kw: float, heaters_kw: float) -> Observation:
    return Observation(
        step=3,
        t_s=180.0,
        dt_s=60.0,
        net_kw=net_kw,
        battery_energy_kwh=np.array([30.0]),
        battery_power_kw=np.array([battery_kw]),
        wh_power_kw=np.array([heaters_kw]),
        wh_energy_kwh=np.array([5.0]),
        wh_mode=np.zeros(1, dtype=np.int64),
    )


def test_peak_guard_bounds_the_fleet_power_by_the_measured_net() -> None:
    """The guard: the fleet battery power (kW, + = charge) that keeps the measured net
    within ``peak_guard_kw`` of max(target, measured base); ``cap``: within the cap."""
    sc = _scenario()
    sc = replace(sc, target_kw=np.full(sc.steps, 3.0))
    live = LiveControl(EMS("mqtt://127.0.0.1:1", "ems-guard"), sc, app=None, peak_guard_kw=4.0)  # type: ignore[arg-type]
    # base 2 kW, heaters 9 kW (two elements), batteries +1 kW: net 12 kW, target 3 kW;
    # the guard lets the net reach 3 + 4 = 7 kW: batteries at most 7 - 11 = -4 kW
    assert live._guard_kw(3, _obs(12.0, 1.0, 9.0)) == -4
    # a base above the target: the level is the base + 4 kW (20 + 4 - 20 = 4 kW of charge)
    assert live._guard_kw(3, _obs(20.0, 0.0, 0.0)) == 4
    # nothing to do: the app's own decision stands (the guard allows more than it asks)
    assert live._guard_kw(3, _obs(3.0, 0.0, 0.0)) == 4
    live.current = replace(sc, objective="cap", target_kw=np.full(sc.steps, 10.0))
    assert live._guard_kw(3, _obs(12.0, 1.0, 9.0)) == -1  # 10 kW cap - 11 kW
    live.current = replace(live.current, objective="floor")
    assert live._guard_kw(3, _obs(12.0, 1.0, 9.0)) > 1000  # no upper bound over a floor
