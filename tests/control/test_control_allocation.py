"""Integer rate allocation and EnergyMethod events."""

from __future__ import annotations

import numpy as np
import pytest

from sef.control.allocation import (
    FleetAllocator,
    allocate_integer,
    battery_limits_kw,
    decision_to_events,
)
from sef.control.controllers.base import WH_KEEP, WH_LOAD_UP, WH_NORMAL, WH_SHED, Decision


def test_sum_matches_and_limits_respected() -> None:
    lo = np.array([-5, -5, -2, 0])
    hi = np.array([5, 3, 5, 5])
    for total in range(-12, 19):
        r = allocate_integer(total, lo, hi)
        assert r.sum() == total
        assert np.all(r >= lo) and np.all(r <= hi)


def test_total_clipped_to_fleet_limits() -> None:
    r = allocate_integer(100, np.array([-5, -5]), np.array([5, 3]))
    assert r.tolist() == [5, 3]
    r = allocate_integer(-100, np.array([-5, -1]), np.array([5, 3]))
    assert r.tolist() == [-5, -1]


def test_largest_remainder_proportional_shares() -> None:
    # shares 7 * (5, 3, 2)/10 = 3.5, 2.1, 1.4 -> floors 3, 2, 1 + the largest remainder (0.5)
    r = allocate_integer(7, np.array([0, 0, 0]), np.array([5, 3, 2]))
    assert r.tolist() == [4, 2, 1]


def test_weights_steer_and_water_filling() -> None:
    # weights favour battery 0, but it caps at 2: the rest goes to the others
    r = allocate_integer(
        6, np.zeros(3, dtype=np.int64), np.array([2, 5, 5]), weights=np.array([10.0, 1.0, 1.0])
    )
    assert r.tolist() == [2, 2, 2]


def test_carry_makes_the_average_exact() -> None:
    alloc = FleetAllocator()
    lo, hi = np.full(4, -5), np.full(4, 5)
    sums = [int(alloc.allocate(2.4, lo, hi).sum()) for _ in range(10)]
    assert sum(sums) == 24
    assert abs(alloc.carry_kw) <= 0.5 + 1e-12
    assert set(sums) <= {2, 3}


def test_carry_dropped_when_bounded() -> None:
    alloc = FleetAllocator()
    r = alloc.allocate(30.7, np.full(2, -5), np.full(2, 5))
    assert r.sum() == 10 and alloc.carry_kw == 0.0


def test_battery_limits_from_energy() -> None:
    # 13.5 kWh, window 0.675..12.825 kWh, 60 s step: energy limits dwarf the 5 kW rating
    lo, hi = battery_limits_kw(np.array([0.675, 0.70, 6.0, 12.825]), 0.675, 12.825, 5.0, 60.0)
    assert lo.tolist() == [0, -1, -5, -5]
    assert hi.tolist() == [5, 5, 5, 0]


def test_decision_to_events() -> None:
    d = Decision(
        battery_kw=np.array([3, -2, 0]),
        wh_command=np.array([WH_KEEP, WH_SHED, WH_LOAD_UP, WH_NORMAL]),
        battery_duration_s=60,
        wh_duration_s=3600,
    )
    ev = decision_to_events(d, plan_kw=[np.array([1, 0, -4])])
    assert ev.batteries == [
        [("charge", 3, 60), ("charge", 1, 60)],
        [("discharge", 2, 60), ("idle", 0, 60)],
        [("idle", 0, 60), ("discharge", 4, 60)],
    ]
    assert ev.water_heaters == {
        1: [("shed", 0, 3600)],
        2: [("charge", 0, 3600)],
        3: [("endshed", 0, 0)],
    }


def test_decision_to_events_int16() -> None:
    d = Decision(np.array([40000]), np.array([], dtype=np.int64), 60, 3600)
    with pytest.raises(ValueError, match="int16"):
        decision_to_events(d)
    d = Decision(np.array([1]), np.array([], dtype=np.int64), 60, 40000)
    with pytest.raises(ValueError, match="int16"):
        decision_to_events(d)
