"""What the demo interface's ``EnergyMethod`` means: commands, events and their rules.

``EnergyMethod(cmds: a(snn))`` carries ``(cmd, rate_kW, duration_s)`` events executed in
order from now; a duration of 0 means "until the next command". The EMS (which checks a
sequence before sending it) and every agent (which runs it) share these definitions, so
neither needs the other's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ._errors import TypeMismatch

__all__ = ["IDLE_EVENT", "MAX_EVENTS", "Command", "EnergyEvent", "parse_events"]


class Command(StrEnum):
    """The commands of the demo interface."""

    CHARGE = "charge"
    DISCHARGE = "discharge"
    IDLE = "idle"
    SHED = "shed"
    ENDSHED = "endshed"


@dataclass(frozen=True, slots=True)
class EnergyEvent:
    """One event: a command at ``rate_kw`` (kW, ≥ 0) for ``duration_s`` (s; 0 = open-ended)."""

    cmd: Command
    rate_kw: int
    duration_s: int

    def as_tuple(self) -> tuple[str, int, int]:
        return (self.cmd.value, self.rate_kw, self.duration_s)


MAX_EVENTS = 256
"""Most events in one ``EnergyMethod`` sequence (``docs/protocol.md``, "Commands")."""

IDLE_EVENT = EnergyEvent(Command.IDLE, 0, 0)
"""Open-ended idle: what a device does when no sequence is running."""


def parse_events(cmds: Sequence[tuple[str, int, int]]) -> list[EnergyEvent]:
    """Turn ``a(snn)`` values (already type-checked) into events.

    Raises:
        TypeMismatch: with the offending item's path, e.g. ``cmds[1][0]: unknown command
            'boost' ...``, when a command is unknown, a rate or duration is negative, an
            open-ended event (duration 0) is not the last one, or the sequence is empty or
            longer than :data:`MAX_EVENTS`.
    """
    if not cmds:
        raise TypeMismatch("must hold at least one event", "cmds")
    if len(cmds) > MAX_EVENTS:
        raise TypeMismatch(f"{len(cmds)} events, at most {MAX_EVENTS} allowed", "cmds")
    events = []
    for index, (cmd, rate, duration) in enumerate(cmds):
        try:
            command = Command(cmd.strip().lower())
        except ValueError:
            raise TypeMismatch(
                f"unknown command {cmd!r} (expected one of {', '.join(c.value for c in Command)})",
                f"cmds[{index}][0]",
            ) from None
        if rate < 0:
            raise TypeMismatch(f"rate must be >= 0 kW, got {rate}", f"cmds[{index}][1]")
        if duration < 0:
            raise TypeMismatch(f"duration must be >= 0 s, got {duration}", f"cmds[{index}][2]")
        if duration == 0 and index < len(cmds) - 1:
            raise TypeMismatch(
                "only the last event may be open-ended (duration 0 = until the next command)",
                f"cmds[{index}][2]",
            )
        events.append(EnergyEvent(command, rate, duration))
    return events
