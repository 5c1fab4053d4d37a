"""Unit tests for EnergyMethod event sequences: parse_events and EventSequencer timing."""

from __future__ import annotations

import asyncio
import time

import pytest

from sef.agents._sequence import EventSequencer
from sef.clock import ScaledClock
from sef.interface import Command, EnergyEvent, TypeMismatch, parse_events

SPEED = 1200.0  # twenty clock minutes per real second
SCALE = 3600.0 / SPEED  # the waits below were written for 3600x
TOL = 0.2 * SPEED  # 200 ms of real scheduling jitter (a loaded CI machine), clock s


# -- parse_events -------------------------------------------------------------------------------


def test_parse_valid_events_normalizes_case() -> None:
    events = parse_events([("Charge", 5, 1800), ("  DISCHARGE ", 3, 900), ("idle", 0, 0)])
    assert events == [
        EnergyEvent(Command.CHARGE, 5, 1800),
        EnergyEvent(Command.DISCHARGE, 3, 900),
        EnergyEvent(Command.IDLE, 0, 0),
    ]
    assert events[1].as_tuple() == ("discharge", 3, 900)


def test_parse_all_commands() -> None:
    cmds = [(c, 1, 10) for c in ("charge", "discharge", "idle", "shed", "endshed")]
    assert [e.cmd for e in parse_events(cmds)] == list(Command)


def test_parse_single_open_ended_event() -> None:
    assert parse_events([("shed", 0, 0)]) == [EnergyEvent(Command.SHED, 0, 0)]


@pytest.mark.parametrize(
    ("cmds", "match"),
    [
        ([], r"at least one event"),
        ([("charge", 1, 10), ("boost", 1, 10)], r"^cmds\[1\]\[0\]: unknown command 'boost'"),
        ([("", 1, 10)], r"^cmds\[0\]\[0\]: unknown command ''"),
        (
            [("charge", 1, 10), ("idle", 0, 5), ("charge", -1, 10)],
            r"^cmds\[2\]\[1\]: rate must be >= 0 kW, got -1",
        ),
        ([("charge", 1, -10)], r"^cmds\[0\]\[2\]: duration must be >= 0 s, got -10"),
        ([("charge", 1, 0), ("idle", 0, 10)], r"^cmds\[0\]\[2\]: only the last event"),
        ([("charge", 1, 10), ("charge", 1, 0), ("idle", 0, 0)], r"^cmds\[1\]\[2\]"),
    ],
)
def test_parse_rejects_with_index(cmds: list[tuple[str, int, int]], match: str) -> None:
    with pytest.raises(TypeMismatch, match=match) as info:
        parse_events(cmds)
    assert info.value.path.startswith("cmds")


def test_unknown_command_lists_the_valid_ones() -> None:
    with pytest.raises(TypeMismatch) as info:
        parse_events([("warp", 1, 1)])
    for command in Command:
        assert command.value in str(info.value)


# -- EventSequencer -----------------------------------------------------------------------------


class Recorder:
    def __init__(self, clock: ScaledClock) -> None:
        self.clock = clock
        self.applied: list[tuple[float, EnergyEvent]] = []

    def __call__(self, event: EnergyEvent) -> None:
        self.applied.append((self.clock.now(), event))

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.applied) < count:
            assert time.monotonic() < deadline, f"only {self.applied} after {timeout} s"
            await asyncio.sleep(0.005)


def _at(applied: list[tuple[float, EnergyEvent]], t0: float) -> list[tuple[float, str]]:
    return [(t - t0, e.cmd.value) for t, e in applied]


async def test_events_applied_in_order_at_clock_times() -> None:
    clock = ScaledClock(speed=SPEED)
    rec = Recorder(clock)
    seq = EventSequencer(clock, rec)
    t0 = clock.now()
    await seq.replace(parse_events([("charge", 5, 1800), ("discharge", 3, 1800)]))
    # the first event is applied before replace() returns
    assert [e for _, e in rec.applied] == [EnergyEvent(Command.CHARGE, 5, 1800)]
    assert seq.current == EnergyEvent(Command.CHARGE, 5, 1800)
    assert seq.current_ends == pytest.approx(t0 + 1800, abs=TOL)
    await rec.wait_for(3)
    offsets = _at(rec.applied, t0)
    assert [cmd for _, cmd in offsets] == ["charge", "discharge", "idle"]
    for (offset, _), expected in zip(offsets, (0, 1800, 3600), strict=True):
        assert offset == pytest.approx(expected, abs=TOL)
    assert rec.applied[1][1] == EnergyEvent(Command.DISCHARGE, 3, 1800)
    assert rec.applied[2][1] == EnergyEvent(Command.IDLE, 0, 0)
    assert seq.current.cmd is Command.IDLE and seq.current_ends is None
    # boundaries are absolute: start times are exactly start + duration, no drift
    assert seq.current_started is not None
    assert seq.current_started - rec.applied[0][0] == pytest.approx(3600, abs=1.0)
    await asyncio.sleep(0.2 * SCALE)
    assert len(rec.applied) == 3  # nothing after idle


async def test_open_ended_last_event_stays() -> None:
    clock = ScaledClock(speed=SPEED)
    rec = Recorder(clock)
    seq = EventSequencer(clock, rec)
    t0 = clock.now()
    await seq.replace(parse_events([("charge", 2, 900), ("shed", 0, 0)]))
    await rec.wait_for(2)
    await asyncio.sleep(0.5 * SCALE)  # another 1800 clock s: no idle appears
    offsets = _at(rec.applied, t0)
    assert [cmd for _, cmd in offsets] == ["charge", "shed"]
    assert offsets[1][0] == pytest.approx(900, abs=TOL)
    assert seq.current == EnergyEvent(Command.SHED, 0, 0)
    assert seq.current_ends is None
    await seq.cancel()


async def test_replace_cancels_running_sequence() -> None:
    clock = ScaledClock(speed=SPEED)
    rec = Recorder(clock)
    seq = EventSequencer(clock, rec)
    t0 = clock.now()
    await seq.replace(parse_events([("charge", 1, 1800), ("discharge", 1, 1800)]))
    await asyncio.sleep(0.1 * SCALE)  # 360 clock s into the charge
    await seq.replace(parse_events([("endshed", 0, 600)]))
    await rec.wait_for(3)
    await asyncio.sleep(0.8 * SCALE)  # well past where the old discharge and idle would have been
    offsets = _at(rec.applied, t0)
    assert [cmd for _, cmd in offsets] == ["charge", "endshed", "idle"]
    assert offsets[1][0] == pytest.approx(360, abs=TOL)
    assert offsets[2][0] == pytest.approx(960, abs=TOL)
    assert all(e.cmd is not Command.DISCHARGE for _, e in rec.applied)


async def test_cancel_stops_everything() -> None:
    clock = ScaledClock(speed=SPEED)
    rec = Recorder(clock)
    seq = EventSequencer(clock, rec)
    await seq.replace(parse_events([("charge", 1, 360), ("discharge", 1, 360)]))
    await seq.cancel()
    await asyncio.sleep(0.35 * SCALE)
    assert [e.cmd for _, e in rec.applied] == [Command.CHARGE]
    await seq.cancel()  # idempotent


async def test_async_apply_is_awaited() -> None:
    clock = ScaledClock(speed=SPEED)
    done: list[str] = []

    async def apply(event: EnergyEvent) -> None:
        await asyncio.sleep(0)
        done.append(event.cmd.value)

    seq = EventSequencer(clock, apply)
    await seq.replace(parse_events([("discharge", 1, 180)]))
    deadline = time.monotonic() + 2
    while len(done) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert done == ["discharge", "idle"]


async def test_failed_apply_does_not_break_the_next_replace() -> None:
    clock = ScaledClock(speed=SPEED)
    calls: list[str] = []

    def apply(event: EnergyEvent) -> None:
        calls.append(event.cmd.value)
        if event.cmd is Command.CHARGE:
            raise RuntimeError("device refused")

    seq = EventSequencer(clock, apply)
    await seq.replace(parse_events([("charge", 1, 36000)]))  # does not end during the test
    await asyncio.sleep(0.01)
    await seq.replace(parse_events([("idle", 0, 0)]))  # must not re-raise the old failure
    assert calls == ["charge", "idle"]
    assert seq.current.cmd is Command.IDLE
