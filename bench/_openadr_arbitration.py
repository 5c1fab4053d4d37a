"""The check of part 2 of ``bench/openadr_latency.py``: was every device running the
command of the event that should hold it, at every time of every event's interval?

The holder is worked out here from the events as put on the VTN (their priorities,
intervals and targets) and the order they reached the bridge, with a rule written for the
bench, independently of the executor's ranking code (``sef.openadr._overlap``): of the
events whose span covers a device, the best priority holds it (1 highest … 3, then 0 =
none given, the lowest), and on equal priority the one received later. Only the commands
an event maps to (its plan's ``(cmd, rate_kW)`` per interval) are taken from the bridge.

A device's time is cut into **segments**: the pieces of the events' intervals over which
the holder and its interval stay the same (a new segment at every interval boundary and
every holder change). Per segment, from its start (the *due* time):

* at the EMS: the ``EnergyMethod`` call in force for the device (the latest one sent to the
  device or to a group it is in, its sequence still running) must be the holder's
  (``sent_by``) with the holder's command at that time;
  (calls are ordered by when ``EMS.call`` was entered: calls started together may reach
  the agents in another order, so the device view is the verdict);
* at the device: the battery emulator's setpoint must be the holder's command
  (``shed r`` → −r kW, ``charge r`` → +r kW, ``idle`` → 0, within ``SETPOINT_TOL_W``).

**Lag**: real s from the due time until the right command runs and stays to the
segment's end (0 when it already ran: sent ahead, or the same holder's sequence goes on).
**Missed**: not running at the segment's end (never, or replaced by a wrong one). **Late**:
lag over ``LATE_S``. **Glitch**: a wrong command ran for a while after the right one had
started (e.g. an outranked event's call landing between), then the right one again.
**Handover**: a segment whose holder differs from the one just before it on the device (the
holder ended or was outranked by a newer arrival); done when its command ran.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from _openadr_rig import CallSeen

LATE_S = 1.0
"""A segment whose right command started more than this many real s after due is late."""
SETPOINT_TOL_W = 300.0
"""Setpoint within this many W of the holder's command counts as that command."""
EVAL_AFTER_S = 1.0
"""Clock s after a moment at which the command in force is read (sequences are cut to whole
seconds, so a command read exactly at a boundary could be the one ending there)."""
END_GUARD_REAL_S = 0.15
"""Real s before a segment's end in which a device change is not held against it (the agent
times its sequence itself; the next command may start a poll early)."""


@dataclass(frozen=True)
class Segment:
    """One device's time under one holder's interval: clock s ``[begin, end)``."""

    device: str
    begin: float
    end: float
    holder: str
    command: tuple[str, int]
    handover: bool


def _priority_key(priority: int, arrival: int) -> tuple[int, int]:
    """Sort key of an event on a device, smallest holds it (this bench's own rule)."""
    return (priority if priority >= 1 else 10**6, -arrival)


def segments(
    events: list[dict[str, Any]],
    spans: dict[str, dict[str, list[tuple[float, float, tuple[str, int]]]]],
    arrival: dict[str, int],
) -> list[Segment]:
    """Every device's segments.

    Args:
        events: the bench's events (``id`` and ``priority`` used).
        spans: event id → device → its intervals ``(begin, end, (cmd, rate_kW))``, clock s,
            offset included.
        arrival: event id → order of arrival at the bridge (higher: later).
    """
    priority = {ev["id"]: int(ev["priority"]) for ev in events}
    devices = sorted({d for per in spans.values() for d in per})
    out: list[Segment] = []
    for device in devices:
        mine = {e: per[device] for e, per in spans.items() if device in per}
        cuts = sorted({t for ivs in mine.values() for b, e, _ in ivs for t in (b, e)})
        previous: str | None = None
        previous_end = -math.inf
        for a, b in itertools.pairwise(cuts):
            mid = (a + b) / 2
            on = {e: cmd for e, ivs in mine.items() for s, t, cmd in ivs if s <= mid < t}
            if not on:
                previous = None
                continue
            holder = min(on, key=lambda e: _priority_key(priority[e], arrival[e]))
            handover = previous is not None and previous != holder and previous_end == a
            out.append(Segment(device, a, b, holder, on[holder], handover))
            previous, previous_end = holder, b
    return out


def _members(target: str, groups: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    if target.startswith("group:"):
        return groups.get(target.removeprefix("group:"), ())
    return (target,)


def _in_force(
    calls: list[CallSeen], sent_by_s: float, t: float
) -> tuple[str | None, tuple[str, int] | None]:
    """Sender and ``(cmd, rate)`` at clock ``t`` of the latest call sent by clock
    ``sent_by_s``, ``(None, None)`` when its sequence is over (or there is none)."""
    sent = [c for c in calls if c.clock_s <= sent_by_s]
    if not sent:
        return None, None
    c = sent[-1]
    at = c.clock_s
    for cmd, rate, duration in c.args[0]:
        if float(duration) <= 0 or at <= t < at + float(duration):
            return c.sent_by, (str(cmd), int(rate))
        at += float(duration)
    return None, None


def _setpoint_w(command: tuple[str, int]) -> float:
    cmd, rate = command
    return -1000.0 * rate if cmd == "shed" else 1000.0 * rate if cmd == "charge" else 0.0


def check(
    segs: list[Segment],
    calls: list[CallSeen],
    setpoints: dict[str, list[tuple[float, float]]],
    groups: dict[str, tuple[str, ...]],
    sender_prefix: str,
    clock_to_mono: Any,
    speed: float,
) -> dict[str, Any]:
    """The figures at the EMS's calls and at the devices.

    Args:
        segs: from :func:`segments`.
        calls: every ``EnergyMethod`` call of the cycle, oldest first.
        setpoints: device → ``(time.monotonic(), W)`` changes.
        groups: group name → its devices.
        sender_prefix: ``openadr:<source>:`` (event id follows).
        clock_to_mono: clock s → ``time.monotonic()``.
        speed: clock s per real s.
    """
    per_device: dict[str, list[CallSeen]] = {}
    for c in calls:
        for d in _members(c.target, groups):
            per_device.setdefault(d, []).append(c)
    ems = _Tally()
    dev = _Tally()
    for s in segs:
        mine = per_device.get(s.device, [])
        want = sender_prefix + s.holder
        moments = [s.begin] + [c.clock_s for c in mine if s.begin < c.clock_s < s.end]
        states = []
        for m in moments:
            t = min(m + EVAL_AFTER_S, (m + s.end) / 2)
            states.append(((m - s.begin) / speed, _in_force(mine, m, t) == (want, s.command)))
        ems.add(s, *_settled(states))
        changes = setpoints.get(s.device, [])
        dev.add(s, *_device_lag(changes, s, clock_to_mono))
        if dev.missed_segments and dev.missed_segments[-1]["begin"] == s.begin:
            begin = clock_to_mono(s.begin)  # what the device did instead, real s after due
            dev.missed_segments[-1]["setpoints_w"] = [
                (round(t - begin, 3), w)
                for t, w in changes
                if begin - 1.0 < t < clock_to_mono(s.end)
            ]
            dev.missed_segments[-1]["calls"] = [
                (round((c.clock_s - s.begin) / speed, 3), c.sent_by, c.args[0])
                for c in mine
                if s.begin - 60.0 * 3 < c.clock_s < s.end
            ]
    return {"ems": ems.figures(), "device": dev.figures()}


def _device_lag(
    changes: list[tuple[float, float]], s: Segment, clock_to_mono: Any
) -> tuple[float | None, bool]:
    begin, end = clock_to_mono(s.begin), clock_to_mono(s.end)
    want = _setpoint_w(s.command)
    before = [w for t, w in changes if t <= begin]
    states = [(0.0, bool(before) and abs(before[-1] - want) <= SETPOINT_TOL_W)]
    states += [
        (t - begin, abs(w - want) <= SETPOINT_TOL_W)
        for t, w in changes
        if begin < t < end - END_GUARD_REAL_S
    ]
    return _settled(states)


def _settled(states: list[tuple[float, bool]]) -> tuple[float | None, bool]:
    """From ``(real s after due, right?)`` in time order: the lag after which the right
    command ran to the segment's end (``None``: it did not), and whether a wrong one ran
    after the right one first ran (a glitch)."""
    if not states or not states[-1][1]:
        return None, False
    i = len(states) - 1
    while i > 0 and states[i - 1][1]:
        i -= 1
    first_right = next(n for n, (_, right) in enumerate(states) if right)
    return states[i][0], i > first_right


class _Tally:
    """Counts of one viewpoint (EMS calls or devices)."""

    def __init__(self) -> None:
        self.total = self.right = self.missed = self.late = 0
        self.handovers = self.handovers_done = self.glitches = 0
        self.lags: list[float] = []
        self.missed_segments: list[dict[str, Any]] = []

    def add(self, s: Segment, lag: float | None, glitch: bool) -> None:
        """Count one segment: ``lag`` real s (``None``: missed), ``glitch`` as above."""
        self.total += 1
        self.handovers += s.handover
        self.glitches += glitch
        if lag is None:
            self.missed += 1
            self.missed_segments.append(dict(s.__dict__))
            return
        self.right += 1
        self.handovers_done += s.handover
        self.late += lag > LATE_S
        self.lags.append(lag)

    def figures(self) -> dict[str, Any]:
        """The counts, the lags (real s) and the missed segments."""
        return {
            "segments": self.total,
            "right": self.right,
            "missed": self.missed,
            "late": self.late,
            "handovers": self.handovers,
            "handovers_done": self.handovers_done,
            "glitches": self.glitches,
            "lags_s": self.lags,
            "missed_segments": self.missed_segments,
        }
