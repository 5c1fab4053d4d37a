"""One event version being carried out (:class:`ScheduledPlan`), and what the bridge
derives from an event for the executor (:func:`plan_end`, :func:`measured_agents`).

Split from :mod:`sef.openadr._executor`, which re-exports these names.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sef.openadr._mapping import targeted_members
from sef.openadr._model import DrEvent, EventKey
from sef.openadr._overlap import Rank
from sef.openadr._plan import FleetMember, MemberKind, Plan

__all__ = ["ScheduledPlan", "measured_agents", "plan_end"]


@dataclass
class ScheduledPlan:
    """One event version being carried out.

    Attributes:
        key: the event version.
        plan: what to do.
        offset_s: random start offset, s.
        end_s: when the event ends (offset included), Unix s on the EMS clock.
        groups: the event's targeted groups (group calls are used for them).
        sent_by: the command log's sender.
        received_mono: ``time.monotonic()`` when the event reached the bridge, real s.
        commanded: agents a command was sent to (or is being sent to).
        dispatched: ``EnergyMethod`` calls sent.
        failures: calls refused or failed, and members that did not answer.
        first_sent_mono: ``time.monotonic()`` of the first call, real s.
        first_sent_s: EMS clock time of the first call, Unix s.
        measured: agents whose power gives the delivered figure (default: the plan's).
        baseline_kw: their power just before the first command, kW.
        samples_kw: their power sampled while the event ran, kW.
        board_keys: windows put on the target board.
        held: whether a hold was put on the board.
        rank: its rank among overlapping versions on a device (lower holds it).
        reached: agents whose first dispatch time this version has reached (sent, or
            left to a higher-ranked version), or that it took over from its predecessor:
            it is on them until ``end_s``.
        first_due: per agent, when its first dispatch is due (offset included), Unix s.
        active: whether the record was made ``active``.
    """

    key: EventKey
    plan: Plan
    offset_s: float
    end_s: float
    groups: tuple[str, ...]
    sent_by: str
    received_mono: float
    commanded: set[str] = field(default_factory=set)
    dispatched: int = 0
    failures: int = 0
    first_sent_mono: float | None = None
    first_sent_s: float | None = None
    baseline_kw: float | None = None
    samples_kw: list[float] = field(default_factory=list)
    board_keys: list[str] = field(default_factory=list)
    held: bool = False
    measured: frozenset[str] = frozenset()
    rank: Rank = (math.inf, 0)
    reached: set[str] = field(default_factory=set)
    first_due: dict[str, float] = field(default_factory=dict)
    active: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for d in self.plan.dispatches:
            for agent in d.agents:
                due = d.start_s + self.offset_s
                self.first_due[agent] = min(self.first_due.get(agent, math.inf), due)

    def covers(self, agent: str, now_s: float) -> bool:
        """Whether this version is on ``agent`` at ``now_s`` (clock s): from its first
        dispatch's due time (or from when it took the agent over: :attr:`reached`) until
        its end. By the due time, not by when its task ran: of two versions due at the
        same instant, the lower-ranked one must see the other (else both send, and the
        call that reaches the device last wins, which may be the wrong one)."""
        if now_s >= self.end_s:
            return False
        return agent in self.reached or self.first_due.get(agent, math.inf) <= now_s + 1e-6

    @property
    def board_key(self) -> str:
        """The key of this event version's windows and hold on the target board."""
        source, event_id, modification = self.key
        return f"openadr:{source}:{event_id}:{modification}"

    @property
    def latency_s(self) -> float | None:
        """Real seconds from the event's arrival to its first device command."""
        if self.first_sent_mono is None:
            return None
        return self.first_sent_mono - self.received_mono

    @property
    def delivered_kw(self) -> float | None:
        """Mean sampled power − baseline, kW (``None`` before a sample)."""
        if self.baseline_kw is None or not self.samples_kw:
            return None
        return sum(self.samples_kw) / len(self.samples_kw) - self.baseline_kw

    @property
    def agents(self) -> frozenset[str]:
        """Every agent the plan's dispatches address."""
        return frozenset(a for d in self.plan.dispatches for a in d.agents)


def plan_end(event: DrEvent, plan: Plan) -> float:
    """The event's end, Unix s; for an event of unknown length, the end of the plan's last
    sequence or window."""
    if math.isfinite(event.end_s):
        return event.end_s
    ends = [d.start_s + sum(c[2] for c in d.commands) for d in plan.dispatches]
    ends += [w.end_s for w in plan.windows]
    return max(ends, default=event.start_s)


def measured_agents(event: DrEvent, plan: Plan, fleet: Sequence[FleetMember]) -> frozenset[str]:
    """Whose power change is the event's delivered figure: the agents the plan commands;
    for a plan of windows only, the online devices (not meters) the event targets."""
    commanded = frozenset(a for d in plan.dispatches for a in d.agents)
    if commanded:
        return commanded
    members, _ = targeted_members(event.targets, fleet)
    return frozenset(m.agent_id for m in members if m.online and m.kind is not MemberKind.METER)
