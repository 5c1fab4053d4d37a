"""The feeder guard's logic, sample by sample (pure: no bus; the live tests run it on one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sef.control._live_guard import FeederGuard, LoadUpBudget, guard_limit_kw

LO = np.array([-8, -8, -8], dtype=np.int64)  # three 8-kW batteries


def test_limit_per_objective() -> None:
    assert guard_limit_kw("track", 5.0, 9.3) == 9.3  # the base peak above the target
    assert guard_limit_kw("track", 11.0, 9.3) == 11.0  # a target above it is allowed
    assert guard_limit_kw("cap", 7.0, 9.3) == 7.0
    assert guard_limit_kw("floor", 7.0, 9.3) is None


def test_excess_is_added_at_once_then_held_while_settling() -> None:
    guard = FeederGuard(settle_periods=2.0)
    assert not guard.sample(8.0, 0.0, 9.3)  # under the limit: nothing to give back
    assert not guard.sample(8.5, 30.0, 9.3)
    assert guard.sample(13.8, 60.0, 9.3)  # a heater element switched on
    assert guard.extra_kw == pytest.approx(4.5)
    # two meter periods (30 s each) to settle: the next samples still hold old power
    assert not guard.sample(13.0, 90.0, 9.3)
    assert guard.extra_kw == pytest.approx(4.5)
    assert guard.sample(10.3, 121.0, 9.3)  # still 1 kW over after settling: more
    assert guard.extra_kw == pytest.approx(5.5)
    assert guard.actions == 2


def test_new_load_while_settling_is_added_at_once() -> None:
    """A second heater switching on during the settle window is not the excess already
    answered: it is added at once, not two meter periods later."""
    guard = FeederGuard(settle_periods=2.0, new_load_kw=0.5)
    guard.sample(8.0, 0.0, 9.3)
    guard.sample(8.0, 30.0, 9.3)
    assert guard.sample(13.8, 60.0, 9.3)  # one element: 4.5 kW answered
    assert not guard.sample(14.0, 90.0, 9.3)  # the same load, still settling
    assert guard.sample(18.3, 100.0, 9.3)  # a second element: 9 kW over, 4.5 new
    assert guard.extra_kw == pytest.approx(9.0)
    assert guard.actions == 2
    # after a release the guard is settling too, and a spike is still new load
    guard = FeederGuard(settle_periods=2.0, release_band_kw=1.0, release_gain=0.5)
    guard.sample(9.3, 0.0, 9.3)
    guard.sample(13.3, 30.0, 9.3)  # extra 4
    guard.sample(5.3, 90.0, 9.3)  # 3 kW beyond the band: 1.5 given back
    assert guard.extra_kw == pytest.approx(2.5)
    assert guard.sample(12.3, 100.0, 9.3)  # 3 kW over within the settle window
    assert guard.extra_kw == pytest.approx(5.5)


def test_release_is_gradual_and_stops_at_zero() -> None:
    guard = FeederGuard(release_band_kw=1.0, release_gain=0.5, settle_periods=0.0)
    guard.sample(9.3, 0.0, 9.3)
    guard.sample(12.3, 30.0, 9.3)
    assert guard.extra_kw == pytest.approx(3.0)
    assert not guard.sample(8.8, 60.0, 9.3)  # inside the band: kept
    assert guard.sample(5.3, 90.0, 9.3)  # 4 kW of room, 3 beyond the band: half given back
    assert guard.extra_kw == pytest.approx(1.5)
    assert guard.sample(0.0, 120.0, 9.3)
    assert guard.extra_kw == 0.0
    assert not guard.sample(0.0, 150.0, 9.3)


def test_old_or_repeated_samples_are_ignored() -> None:
    guard = FeederGuard(settle_periods=0.0)
    guard.sample(9.0, 100.0, 9.3)
    assert not guard.sample(50.0, 100.0, 9.3)  # the same sample read again
    assert not guard.sample(50.0, 40.0, 9.3)  # an older one (reordered)
    assert guard.extra_kw == 0.0


def test_no_limit_or_nan_clears_the_guard() -> None:
    guard = FeederGuard(settle_periods=0.0)
    guard.sample(15.0, 0.0, 9.3)
    assert guard.extra_kw > 0
    assert guard.sample(15.0, 30.0, None)  # a floor objective: no upper limit
    assert guard.extra_kw == 0.0
    guard.sample(15.0, 60.0, 9.3)
    assert guard.sample(math.nan, 90.0, 9.3)
    assert guard.extra_kw == 0.0


def test_fleet_kw_discharges_more_but_not_beyond_the_limits() -> None:
    guard = FeederGuard(settle_periods=0.0)
    assert guard.fleet_kw(5, LO) == 5  # no extra: the app's rate
    guard.sample(0.0, 0.0, 9.3)
    guard.sample(12.8, 30.0, 9.3)  # 3.5 kW over
    assert guard.fleet_kw(5, LO) == 1  # 5 - 3.5, rounded toward discharge
    assert guard.fleet_kw(-20, LO) == -24  # the fleet's discharge limit


@given(
    readings=st.lists(
        st.one_of(st.floats(min_value=-1e6, max_value=1e6), st.just(math.nan)),
        min_size=1,
        max_size=40,
    ),
    limit=st.floats(min_value=-1e3, max_value=1e3),
)
def test_extra_is_never_negative_or_nan(readings: list[float], limit: float) -> None:
    guard = FeederGuard()
    for n, reading in enumerate(readings):
        guard.sample(reading, 30.0 * n, limit)
        assert guard.extra_kw >= 0.0
        assert math.isfinite(guard.extra_kw)
        assert guard.fleet_kw(0, LO) >= int(LO.sum())


def test_load_up_budget_counts_pending_elements_until_the_meter_shows_them() -> None:
    budget = LoadUpBudget(pending_s=120.0)
    assert budget.allow(3.0, 9.3, 0.0, 4.5)  # 3 + 4.5 <= 9.3
    budget.sent(0.0, 4.5)
    assert not budget.allow(3.0, 9.3, 10.0, 4.5)  # 3 + 4.5 pending + 4.5 > 9.3
    assert budget.pending_kw(119.0) == pytest.approx(4.5)
    assert budget.pending_kw(120.0) == 0.0  # by now the meter shows it
    assert budget.allow(3.0, 9.3, 120.0, 4.5)
    assert budget.allow(1e6, None, 0.0, 4.5)  # no limit (floor): always
