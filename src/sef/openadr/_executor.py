"""Carries out a :class:`~sef.openadr.Plan` on the EMS clock: ``EnergyMethod`` calls at
their times, target windows and holds on the EMS target board, restore on cancel.

* Each :class:`~sef.openadr.Dispatch` is sent at ``start_s + offset_s`` (clock s; at once
  when that has passed); dispatches due at the same time are sent concurrently. A dispatch
  whose agents are exactly the known members of one of the event's targeted groups goes as
  **one group call** (``group:NAME``), any other as one call per agent, concurrently.
  Calls carry ``sent_by = "openadr:<source>:<event_id>"`` (the command log's column). A
  refused call, an error reply or a member that does not answer is logged and counted
  (:attr:`ScheduledPlan.failures`), never raised.
* The plan's windows go on the target board (``put_window``) and the agents it commands
  are held there (``hold``) for the event's span, so the live controller leaves them
  alone; both are removed at cancel and at the event's end.
* **Delivered**: just before the first command the executor takes the power of the agents
  the plan commands (Σ telemetry, :func:`~sef.openadr._telemetry.agents_power_kw`; for a
  plan of windows only, the event's targeted members the bridge names) as the baseline,
  then samples it every ~1/20 of the event while it runs; ``delivered_kw`` = mean of the
  samples − baseline (kW, negative: a reduction), written to the history as it goes.
  Telemetry lags a poll behind the command, so the figure reads a little short.
* At the end (``end_s``) the record becomes ``completed``; devices fall back by
  themselves since every sequence is timed (``docs/openadr.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sef.ems import EMS
from sef.ems._target_board import target_board
from sef.interface import DEMO_INTERFACE
from sef.openadr._history import DrHistory
from sef.openadr._mapping import targeted_members
from sef.openadr._model import DrEvent, EventKey
from sef.openadr._plan import Dispatch, FleetMember, MemberKind, Plan
from sef.openadr._telemetry import agents_power_kw

__all__ = ["PlanExecutor", "ScheduledPlan", "measured_agents", "plan_end"]

log = logging.getLogger("sef.openadr")

SAMPLES_PER_EVENT = 20
"""Power samples taken over an event for the delivered figure."""
MIN_SAMPLE_REAL_S = 0.1
"""Shortest real time between two power samples, s."""


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
    task: asyncio.Task[None] | None = field(default=None, repr=False)

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


class PlanExecutor:
    """Schedules plans on ``ems``'s clock and keeps ``history``'s records up to date.

    Args:
        ems: the EMS whose calls, registry, clock and target board are used.
        history: where each event version's record is updated (status, dispatched,
            agents, delivered_kw).
        call_timeout_s: how long a call waits for its replies, real s.
    """

    def __init__(self, ems: EMS, history: DrHistory, *, call_timeout_s: float = 5.0) -> None:
        self.ems = ems
        self.history = history
        self.call_timeout_s = call_timeout_s
        self.calls_sent = 0
        """``EnergyMethod`` calls sent (dispatches and restores)."""
        self.calls_failed = 0
        """Calls refused or failed, and members that did not answer."""
        self._plans: dict[EventKey, ScheduledPlan] = {}

    # -- the board ---------------------------------------------------------------------
    def _put_on_board(self, s: ScheduledPlan) -> None:
        board = target_board(self.ems)
        for i, w in enumerate(s.plan.windows):
            key = f"{s.board_key}#{i}"
            board.put_window(
                key,
                w.start_s + s.offset_s,
                w.end_s + s.offset_s,
                limit_kw=w.limit_kw,
                target_kw=w.target_kw,
            )
            s.board_keys.append(key)
        start = min((d.start_s for d in s.plan.dispatches), default=s.end_s) + s.offset_s
        if s.agents and start < s.end_s:
            board.hold(s.board_key, sorted(s.agents), start, s.end_s)
            s.held = True

    def _clear_board(self, s: ScheduledPlan) -> None:
        board = target_board(self.ems)
        for key in s.board_keys:
            board.remove_window(key)
        s.board_keys.clear()
        if s.held:
            board.release(s.board_key)
            s.held = False

    # -- calls -------------------------------------------------------------------------
    def _group_for(self, agents: tuple[str, ...], groups: Iterable[str]) -> str | None:
        wanted = frozenset(agents)
        for group in groups:
            members = frozenset(a.agent_id for a in self.ems.registry.group_members(group))
            if members and members == wanted:
                return group
        return None

    async def _call(self, s: ScheduledPlan, target: str, expected: int, args: list[Any]) -> None:
        """One call; failures are logged and counted."""
        if s.first_sent_mono is None:
            s.first_sent_mono = time.monotonic()
            s.first_sent_s = self.ems.clock.now()
        s.dispatched += 1
        self.calls_sent += 1
        self.history.update(s.key, dispatched=s.dispatched, agents=len(s.commanded))
        try:
            replies = await self.ems.call(
                target,
                DEMO_INTERFACE,
                "EnergyMethod",
                args,
                timeout_s=self.call_timeout_s,
                sent_by=s.sent_by,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, bus down: counted, never raised
            log.warning("%s: EnergyMethod to %s failed: %s", s.key, target, exc)
            s.failures += expected
            self.calls_failed += expected
            return
        bad = [r for r in replies if not r.ok]
        missing = max(expected - len(replies), 0)
        for r in bad:
            log.warning("%s: %s refused EnergyMethod: %s %s", s.key, r.agent, r.error, r.message)
        if missing:
            log.warning("%s: %d of %d agents did not answer (%s)", s.key, missing, expected, target)
        s.failures += len(bad) + missing
        self.calls_failed += len(bad) + missing

    async def _send(self, s: ScheduledPlan, d: Dispatch, groups: Iterable[str]) -> None:
        """Send one dispatch: a group call when it fits a targeted group, else per agent."""
        args = [[list(c) for c in d.commands]]
        s.commanded.update(d.agents)
        group = self._group_for(d.agents, groups)
        if group is not None:
            await self._call(s, f"group:{group}", len(d.agents), args)
        else:
            await asyncio.gather(*(self._call(s, a, 1, args) for a in d.agents))

    def _power(self, s: ScheduledPlan) -> float | None:
        return agents_power_kw(self.ems.registry, s.measured or s.agents)

    # -- running -----------------------------------------------------------------------
    async def _run(self, s: ScheduledPlan) -> None:
        clock = self.ems.clock
        self._put_on_board(s)
        dispatches = sorted(s.plan.dispatches, key=lambda d: d.start_s)
        begin = min(
            [d.start_s for d in dispatches] + [w.start_s for w in s.plan.windows],
            default=s.end_s - s.offset_s,
        )
        await clock.sleep(begin + s.offset_s - clock.now())
        s.baseline_kw = self._power(s)
        self.history.update(s.key, status="active")
        for start, batch in itertools.groupby(dispatches, key=lambda d: d.start_s):
            await clock.sleep(start + s.offset_s - clock.now())
            await asyncio.gather(*(self._send(s, d, s.groups) for d in batch))
        step = max((s.end_s - clock.now()) / SAMPLES_PER_EVENT, clock.to_clock(MIN_SAMPLE_REAL_S))
        while (left := s.end_s - clock.now()) > 0:
            await clock.sleep(min(step, left))
            power = self._power(s)
            if power is not None:
                s.samples_kw.append(power)
                self.history.update(s.key, delivered_kw=s.delivered_kw)
        self._clear_board(s)
        self._plans.pop(s.key, None)
        self.history.update(s.key, status="completed", delivered_kw=s.delivered_kw)
        log.info(
            "%s: completed (%d calls, %d failed, delivered %s kW)",
            s.key,
            s.dispatched,
            s.failures,
            None if s.delivered_kw is None else round(s.delivered_kw, 3),
        )

    async def _guarded(self, s: ScheduledPlan) -> None:
        try:
            await self._run(s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: executing the plan failed", s.key)
            self._plans.pop(s.key, None)
            self.history.update(s.key, status="failed")

    def schedule(
        self,
        key: EventKey,
        plan: Plan,
        *,
        offset_s: float,
        end_s: float,
        groups: Iterable[str] = (),
        received_mono: float | None = None,
        measured: Iterable[str] = (),
    ) -> ScheduledPlan:
        """Start carrying out ``plan`` (a task on the running loop).

        Args:
            key: the event version.
            plan: the mapping's plan.
            offset_s: random start offset added to every time of the plan, s.
            end_s: the event's end without the offset, Unix s on the EMS clock.
            groups: the event's targeted groups (for group calls).
            received_mono: ``time.monotonic()`` at the event's arrival (latency figure).
            measured: agents whose power change is the delivered figure (default: the
                agents the plan commands).
        """
        source, event_id, _ = key
        s = ScheduledPlan(
            key,
            plan,
            offset_s,
            end_s + offset_s,
            tuple(groups),
            f"openadr:{source}:{event_id}",
            time.monotonic() if received_mono is None else received_mono,
            measured=frozenset(measured),
        )
        s.task = asyncio.get_running_loop().create_task(self._guarded(s), name=f"dr {key}")
        self._plans[key] = s
        return s

    def get(self, key: EventKey) -> ScheduledPlan | None:
        """The scheduled plan of an event version, if any."""
        return self._plans.get(key)

    def keys_of(self, source: str, event_id: str) -> list[EventKey]:
        """Every scheduled version of an event."""
        return [k for k in self._plans if k[0] == source and k[1] == event_id]

    async def cancel(
        self, key: EventKey, *, restore: bool = True, keep: frozenset[str] = frozenset()
    ) -> ScheduledPlan | None:
        """Stop an event version: pending dispatches dropped, windows and hold removed,
        and (``restore``) the plan's restore sequence sent to the agents already
        commanded, except ``keep`` (agents a newer version commands anyway)."""
        s = self._plans.pop(key, None)
        if s is None:
            return None
        if s.task is not None and not s.task.done():
            s.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await s.task
        self._clear_board(s)
        if restore:
            await self._restore(s, keep)
        return s

    async def _restore(self, s: ScheduledPlan, keep: frozenset[str]) -> None:
        sends = []
        for d in s.plan.restore:
            agents = tuple(a for a in d.agents if a in s.commanded and a not in keep)
            if agents:
                sends.append(self._send(s, Dispatch(agents, d.start_s, d.commands), s.groups))
        await asyncio.gather(*sends)

    async def close(self) -> None:
        """Stop every scheduled plan without restoring (the EMS is shutting down; the
        devices' timed sequences end by themselves)."""
        for key in list(self._plans):
            await self.cancel(key, restore=False)


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
