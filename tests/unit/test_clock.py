"""Unit tests for sef.clock: spec parsing, scaled time arithmetic, sleeping, round trips."""

from __future__ import annotations

import asyncio
import calendar
import time
from datetime import UTC, datetime
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sef.clock import ClockSpecError, RealClock, ScaledClock, default_clock, parse_clock

JULY_1_2026 = calendar.timegm((2026, 7, 1, 0, 0, 0))  # independent of datetime parsing


# -- parse_clock ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["real", " real ", ""])
def test_real_spec_gives_wall_clock(spec: str) -> None:
    clock = parse_clock(spec)
    assert isinstance(clock, RealClock)
    assert clock.speed == 1.0
    assert clock.spec() == "real"
    assert abs(clock.now() - time.time()) < 0.01


def test_scaled_speed_only_starts_at_real_now() -> None:
    before = time.time()
    clock = parse_clock("scaled:720")
    after = time.time()
    assert isinstance(clock, ScaledClock)
    assert clock.speed == 720.0
    assert clock.real_anchor is not None
    assert before <= clock.real_anchor <= after
    assert clock.sim_start == clock.real_anchor
    # 50 ms of real time is 36 s of clock time
    start = clock.now()
    time.sleep(0.05)
    advanced = clock.now() - start
    assert 0.05 * 720 <= advanced < 0.5 * 720


def test_scaled_with_iso_start() -> None:
    before = time.time()
    clock = parse_clock("scaled:720:2026-07-01T00:00:00Z")
    assert isinstance(clock, ScaledClock)
    assert clock.sim_start == JULY_1_2026
    elapsed = time.time() - before
    now = clock.now()
    assert JULY_1_2026 <= now <= JULY_1_2026 + (elapsed + 0.01) * 720
    assert clock.datetime().date() == datetime(2026, 7, 1, tzinfo=UTC).date()


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("2026-07-01T00:00:00", JULY_1_2026),  # naive ISO: taken as UTC
        ("2026-07-01T02:00:00+02:00", JULY_1_2026),
        ("2026-07-01", JULY_1_2026),
        ("1782864000", 1782864000.0),
        ("1782864000.5", 1782864000.5),
    ],
)
def test_scaled_start_formats(start: str, expected: float) -> None:
    clock = parse_clock(f"scaled:60:{start}@1000")
    assert isinstance(clock, ScaledClock)
    assert clock.sim_start == expected
    assert clock.real_anchor == 1000.0


def test_scaled_start_and_anchor_formula() -> None:
    """Sim time = start + (real - anchor) * speed, checked against a computed value."""
    clock = parse_clock("scaled:60:1700000000@1800000000")
    assert isinstance(clock, ScaledClock)
    assert (clock.speed, clock.sim_start, clock.real_anchor) == (60.0, 1.7e9, 1.8e9)
    t0 = time.time()
    now = clock.now()
    t1 = time.time()
    assert 1.7e9 + (t0 - 1.8e9) * 60 <= now <= 1.7e9 + (t1 - 1.8e9) * 60
    # and with a frozen wall clock, the exact value
    with mock.patch("sef.clock.time.time", return_value=1_800_000_100.0):
        assert clock.now() == pytest.approx(1_700_000_000 + 100 * 60, abs=1e-6)
    with mock.patch("sef.clock.time.time", return_value=1_799_999_990.0):
        assert clock.now() == pytest.approx(1_700_000_000 - 10 * 60, abs=1e-6)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("scaled:0", r"speed must be > 0.*0"),
        ("scaled:-5", r"speed must be > 0.*-5"),
        ("scaled:nan", r"speed must be > 0"),
        ("scaled:fast", r"speed is not a number: 'fast'"),
        ("scaled:", r"speed is not a number: ''"),
        ("scaled:60@tomorrow", r"anchor is not Unix seconds: 'tomorrow'"),
        ("scaled:60:1700000000@noon", r"anchor is not Unix seconds: 'noon'"),
        ("scaled:60:next-tuesday", r"not a Unix time or ISO 8601 date: 'next-tuesday'"),
        ("garbage", r"must be 'real' or 'scaled:SPEED.*'garbage'"),
        ("Real", r"must be 'real' or 'scaled"),
        ("scaled720", r"must be 'real' or 'scaled"),
    ],
)
def test_bad_specs_raise_clear_error(spec: str, match: str) -> None:
    with pytest.raises(ClockSpecError, match=match):
        parse_clock(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "scaled:inf",  # speed must be a finite number: now() would be inf/nan
        "scaled:60:nan",  # a NaN start makes now() NaN forever
        "scaled:60:inf",
        "scaled:60:1700000000@nan",
        "scaled:60:1700000000@inf",
    ],
)
def test_non_finite_numbers_in_spec_rejected(spec: str) -> None:
    with pytest.raises(ClockSpecError):
        parse_clock(spec)


def test_clock_spec_error_is_value_error() -> None:
    assert issubclass(ClockSpecError, ValueError)
    with pytest.raises(ClockSpecError):
        ScaledClock(speed=0)


def test_default_clock_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEF_CLOCK", "scaled:42:1000@2000")
    clock = default_clock()
    assert isinstance(clock, ScaledClock)
    assert (clock.speed, clock.sim_start, clock.real_anchor) == (42.0, 1000.0, 2000.0)
    monkeypatch.delenv("SEF_CLOCK")
    assert isinstance(default_clock(), RealClock)


# -- spec round trip ----------------------------------------------------------------------


def test_spec_round_trip_now_within_ms() -> None:
    clock = parse_clock("scaled:720:2026-07-01T00:00:00Z")
    clone = parse_clock(clock.spec())
    assert isinstance(clone, ScaledClock)
    a, b = clock.now(), clone.now()
    # b is read a few microseconds later: at most (1 ms real) * 720 ahead
    assert 0 <= b - a < 0.001 * 720
    assert clone.spec() == clock.spec()


def test_real_clock_spec_round_trip() -> None:
    assert isinstance(parse_clock(RealClock().spec()), RealClock)


@given(
    speed=st.floats(min_value=1e-3, max_value=1e7, allow_nan=False, allow_infinity=False),
    sim_start=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    anchor=st.floats(min_value=1e9, max_value=3e9, allow_nan=False),
)
def test_spec_round_trip_reproduces_clock(speed: float, sim_start: float, anchor: float) -> None:
    clock = ScaledClock(speed=speed, sim_start=sim_start, real_anchor=anchor)
    clone = parse_clock(clock.spec())
    assert isinstance(clone, ScaledClock)
    with mock.patch("sef.clock.time.time", return_value=anchor + 12.5):
        expected = sim_start + 12.5 * speed
        assert clock.now() == pytest.approx(expected, rel=1e-12, abs=1e-6)
        assert clone.now() == pytest.approx(clock.now(), rel=1e-12, abs=1e-3)
    assert clone.speed == speed


# -- sleeping and conversions -------------------------------------------------------------


async def test_scaled_sleep_hour_at_36000_takes_a_tenth_of_a_second() -> None:
    clock = ScaledClock(speed=36000)
    t0 = time.monotonic()
    c0 = clock.now()
    await clock.sleep(3600)
    real = time.monotonic() - t0
    assert 0.095 <= real < 0.4
    assert clock.now() - c0 == pytest.approx(real * 36000, rel=0.05)
    assert clock.now() - c0 >= 3600 * 0.95


async def test_sleep_negative_returns_at_once() -> None:
    clock = ScaledClock(speed=2)
    t0 = time.monotonic()
    await clock.sleep(-100)
    assert time.monotonic() - t0 < 0.05


def test_to_real_and_to_clock() -> None:
    clock = ScaledClock(speed=720)
    assert clock.to_real(3600) == 5.0
    assert clock.to_clock(5.0) == 3600.0
    assert clock.to_clock(clock.to_real(86400)) == pytest.approx(86400)
    real = RealClock()
    assert real.to_real(12.5) == 12.5
    assert real.to_clock(12.5) == 12.5


def test_scaled_monotonic_runs_at_speed() -> None:
    clock = ScaledClock(speed=1000)
    m0, t0 = clock.monotonic(), time.monotonic()
    time.sleep(0.02)
    m1, t1 = clock.monotonic(), time.monotonic()
    assert m1 - m0 == pytest.approx((t1 - t0) * 1000, rel=0.05)


def test_scaled_datetime_is_aware_utc() -> None:
    clock = ScaledClock(speed=1, sim_start=JULY_1_2026 + 3600, real_anchor=time.time())
    dt = clock.datetime()
    assert dt.tzinfo is not None
    assert (dt.year, dt.month, dt.day, dt.hour) == (2026, 7, 1, 1)


async def test_sleep_concurrently_keeps_order() -> None:
    clock = ScaledClock(speed=36000)
    order: list[int] = []

    async def nap(n: int) -> None:
        await clock.sleep(n * 360)  # 10 ms real per step
        order.append(n)

    await asyncio.gather(nap(3), nap(1), nap(2))
    assert order == [1, 2, 3]
