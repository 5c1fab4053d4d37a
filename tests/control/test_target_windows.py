"""The target board's windows and holds (``sef.ems._target_board``), pure: no bus.

A window changes the live target or caps the feeder over ``[start_s, end_s)``; a hold
keeps the live controller away from agents over a span. Ended ones are dropped by the
board's clock, so a long run of events does not grow it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

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
