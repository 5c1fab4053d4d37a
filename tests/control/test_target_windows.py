"""The target board's windows and holds (``sef.ems._target_board``) and what the live
controller makes of a window's limit, pure: no bus.

A window changes the live target or caps the feeder over ``[start_s, end_s)``; a hold
keeps the live controller away from agents over a span. Ended ones are dropped by the
board's clock, so a long run of events does not grow it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from control_support import small_scenario
from sef.control.controllers.base import Observation
from sef.control.live import LiveControl
from sef.ems import EMS
from sef.ems._target_board import MAX_HOLDS, MAX_WINDOWS, TargetBoard, target_board


class Now:
    """A settable clock (Unix s)."""

    def __init__(self, t_s: float = 0.0) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


def test_limit_is_the_smallest_of_the_windows_covering_the_time() -> None:
    board = TargetBoard()
    board.put_window("a", 100.0, 200.0, limit_kw=50.0)
    board.put_window("b", 150.0, 300.0, limit_kw=30.0)
    assert board.limit_at(99.9) is None
    assert board.limit_at(100.0) == 50.0
    assert board.limit_at(150.0) == 30.0  # both cover it: the smaller
    assert board.limit_at(250.0) == 30.0
    assert board.limit_at(300.0) is None  # the end is exclusive
    assert board.value_at(150.0) is None  # a limit is not a target


def test_limit_series_limits_every_step_a_window_touches() -> None:
    board = TargetBoard()
    board.put_window("a", 130.0, 250.0, limit_kw=40.0)  # inside steps 2..4 of 60 s
    board.put_window("b", 240.0, 300.0, limit_kw=20.0)  # step 4 only
    limits = board.limit_series(0.0, 60.0, 6)
    assert limits.tolist() == [math.inf, math.inf, 40.0, 40.0, 20.0, math.inf]
    assert board.limit_series(1000.0, 60.0, 3).tolist() == [math.inf] * 3


def test_target_windows_override_points_and_the_newest_put_wins() -> None:
    board = TargetBoard()
    board.set([(0.0, 10.0)], "op", 0.0)
    board.put_window("old", 120.0, 360.0, target_kw=5.0)
    board.put_window("new", 240.0, 480.0, target_kw=7.0)
    assert board.value_at(60.0) == 10.0
    assert board.value_at(120.0) == 5.0
    assert board.value_at(300.0) == 7.0  # overlap: the window put last
    assert board.value_at(480.0) == 10.0  # after the windows: the points again
    series = board.series(np.full(10, 99.0), 0.0, 60.0)
    assert series.tolist() == [10.0, 10.0, 5.0, 5.0, 7.0, 7.0, 7.0, 7.0, 10.0, 10.0]
    # putting the older key again makes it the newest
    board.put_window("old", 120.0, 360.0, target_kw=5.0)
    assert board.value_at(300.0) == 5.0
    assert board.series(np.full(10, 99.0), 0.0, 60.0)[4:6].tolist() == [5.0, 5.0]


def test_series_without_points_falls_back_to_the_scenario_outside_windows() -> None:
    board = TargetBoard()
    board.put_window("w", 60.0, 120.0, target_kw=3.0, limit_kw=4.0)
    assert board.series(np.arange(4.0), 0.0, 60.0).tolist() == [0.0, 3.0, 2.0, 3.0]
    assert board.limit_at(60.0) == 4.0


def test_replacing_and_removing_a_window_bump_the_version() -> None:
    board = TargetBoard()
    board.put_window("e", 0.0, 100.0, limit_kw=10.0)
    v = board.version
    board.put_window("e", 0.0, 100.0, limit_kw=8.0)  # same key: replaced, not added
    assert len(board.windows) == 1 and board.limit_at(50.0) == 8.0
    assert board.version == v + 1
    assert board.remove_window("e") and board.version == v + 2
    assert not board.remove_window("e") and board.version == v + 2
    assert board.limit_at(50.0) is None


@pytest.mark.parametrize(
    ("span", "values", "message"),
    [
        ((100.0, 100.0), {"limit_kw": 1.0}, "end after start"),
        ((200.0, 100.0), {"limit_kw": 1.0}, "end after start"),
        ((math.nan, 100.0), {"limit_kw": 1.0}, "finite"),
        ((0.0, math.inf), {"limit_kw": 1.0}, "finite"),
        ((0.0, 10**400), {"limit_kw": 1.0}, "not two numbers"),
        ((0.0, 100.0), {"limit_kw": math.nan}, "not finite"),
        ((0.0, 100.0), {"target_kw": 2e6}, "beyond"),
        ((0.0, 100.0), {"limit_kw": -math.inf}, "not finite"),
        ((0.0, 100.0), {}, "needs limit_kw or target_kw"),
    ],
)
def test_bad_windows_are_refused_and_change_nothing(
    span: tuple[float, float], values: dict[str, float], message: str
) -> None:
    board = TargetBoard()
    with pytest.raises(ValueError, match=message):
        board.put_window("bad", *span, **values)
    assert board.windows == {} and board.version == 0


def test_at_most_max_windows_but_replacing_one_still_works() -> None:
    board = TargetBoard()
    for i in range(MAX_WINDOWS):
        board.put_window(f"w{i}", 0.0, 100.0, limit_kw=float(i))
    with pytest.raises(ValueError, match="windows on the board"):
        board.put_window("one more", 0.0, 100.0, limit_kw=1.0)
    board.put_window("w5", 0.0, 100.0, limit_kw=-1.0)
    assert board.limit_at(0.0) == -1.0


def test_ended_windows_and_holds_are_dropped_by_the_clock() -> None:
    now = Now(0.0)
    board = TargetBoard(clock=now)
    board.put_window("a", 0.0, 100.0, limit_kw=5.0)
    board.put_window("b", 50.0, 300.0, target_kw=6.0)
    board.hold("h", ["bat-1"], 0.0, 200.0)
    version = board.version
    now.t_s = 150.0
    assert board.limit_at(150.0) is None
    assert set(board.windows) == {"b"}  # "a" ended at 100 s
    assert board.held_at(150.0) == {"bat-1"}
    now.t_s = 300.0
    assert board.held_at(300.0) == frozenset()
    assert board.windows == {} and board.holds == {}
    assert board.version == version  # nothing at or after now changed


def test_a_long_run_of_events_does_not_grow_the_board() -> None:
    """One event a minute, each a 5-min window and hold, for 300 000 events (208 days;
    a million takes 7 s here): the board holds only those not yet ended (5 each)."""
    now = Now(0.0)
    board = TargetBoard(clock=now)
    most = 0
    for i in range(300_000):
        now.t_s = 60.0 * i
        board.put_window(f"event-{i}", now.t_s, now.t_s + 300.0, limit_kw=10.0)
        board.hold(f"event-{i}", ["bat-0"], now.t_s, now.t_s + 300.0)
        most = max(most, len(board.windows), len(board.holds))
    assert most <= 6
    assert len(board.windows) == 5 and len(board.holds) == 5


def test_holds_union_replace_and_release() -> None:
    board = TargetBoard()
    board.hold("e1", ["bat-0", "wh-1"], 100.0, 200.0)
    board.hold("e2", {"bat-1"}, 150.0, 400.0)
    assert board.held_at(99.0) == frozenset()
    assert board.held_at(100.0) == {"bat-0", "wh-1"}
    assert board.held_at(160.0) == {"bat-0", "wh-1", "bat-1"}
    assert board.held_at(200.0) == {"bat-1"}
    v = board.version
    board.hold("e2", ["bat-2"], 150.0, 400.0)  # replaced: a modified event
    assert board.held_at(300.0) == {"bat-2"} and board.version == v + 1
    assert board.release("e2") and board.held_at(300.0) == frozenset()
    assert not board.release("e2")
    assert board.version == v + 2


@pytest.mark.parametrize(
    ("agents", "span", "message"),
    [
        (["bat-0"], (5.0, 5.0), "end after start"),
        ([""], (0.0, 5.0), "non-empty strings"),
        ("bat-0", (0.0, 5.0), "not one string"),
        ([3], (0.0, 5.0), "non-empty strings"),
        ([f"a{i}" for i in range(10_001)], (0.0, 5.0), "at most"),
    ],
)
def test_bad_holds_are_refused(
    agents: list[object], span: tuple[float, float], message: str
) -> None:
    board = TargetBoard()
    with pytest.raises(ValueError, match=message):
        board.hold("bad", agents, *span)  # type: ignore[arg-type]
    assert board.holds == {} and board.version == 0


def test_at_most_max_holds() -> None:
    board = TargetBoard()
    for i in range(MAX_HOLDS):
        board.hold(f"h{i}", ["a"], 0.0, 1.0)
    with pytest.raises(ValueError, match="holds on the board"):
        board.hold("one more", ["a"], 0.0, 1.0)


def test_points_are_unchanged_by_windows_and_the_ems_board_has_its_clock() -> None:
    class Ems:
        class clock:
            @staticmethod
            def now() -> float:
                return 1000.0

    ems = Ems()
    board = target_board(ems)
    assert target_board(ems) is board and board.clock is not None and board.clock() == 1000.0
    board.set([(0.0, 1.0), (500.0, 2.0)], "op", 0.0)
    board.put_window("ended", 0.0, 900.0, target_kw=9.0)  # already over by the clock
    assert board.points == [(0.0, 1.0), (500.0, 2.0)]
    assert board.value_at(600.0) == 2.0  # dropped: the points apply
    assert board.windows == {}


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


@pytest.mark.parametrize("objective", ["track", "cap", "floor"])
def test_live_control_holds_a_window_limit_whatever_the_objective(objective: str) -> None:
    """A limit window on the EMS's board: the app's target is at most the limit, the
    feeder guard's limit and the step's peak guard are the window's in its steps (also
    with ``floor``, which has none of its own), the objective's outside them; a change of
    the board is picked up (version), nothing is recomputed without one."""
    sc = small_scenario(n_b=1, n_w=1, hours=1.0)
    sc = replace(sc, objective=objective, target_kw=np.full(sc.steps, 8.0))
    ems = EMS("mqtt://127.0.0.1:1", "ems-window")
    t0 = ems.clock.now() + 600.0  # ahead: the board drops windows ended by the EMS clock
    live = LiveControl(ems, sc, app=None, start_s=t0)  # type: ignore[arg-type]
    board = target_board(ems)
    board.put_window("e", t0 + 2 * 60.0, t0 + 5 * 60.0, limit_kw=6.0)
    assert live.refresh_target() and not live.refresh_target()  # the second: unchanged
    assert live.current.target_kw[:7].tolist() == [8.0, 8.0, 6.0, 6.0, 6.0, 8.0, 8.0]
    assert live.window_limit_kw(3) == 6.0 and live.window_limit_kw(5) is None
    assert live.feeder.limit_kw(3) == 6.0
    own = {"track": max(8.0, live.feeder.base_peak_kw), "cap": 8.0, "floor": None}[objective]
    assert live.feeder.limit_kw(5) == own
    # net 12 kW with the battery at +1 and heaters 9 kW: the batteries may run at most
    # 6 - 11 = -5 kW in the window
    assert live._guard_kw(3, _obs(12.0, 1.0, 9.0)) == -5
    assert live._guard_kw(5, _obs(12.0, 1.0, 9.0)) != -5  # the objective's own bound
    board.put_window("e", t0 + 2 * 60.0, t0 + 5 * 60.0, limit_kw=4.0)  # the event modified
    assert live.window_limit_kw(3) == 4.0  # the feeder watch's read: at once
    assert live.refresh_target() and live.current.target_kw[3] == 4.0
