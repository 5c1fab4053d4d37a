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
* **Overlapping events** (:mod:`sef.openadr._overlap`): a version is on an agent from
  the time its first dispatch to it comes up (in sending order) to ``end_s``; of the
  versions on an agent, the best-ranked holds it (priority 1 highest, 0 = none = lowest;
  equal priority: the newer event). A dispatch goes only to the agents its version holds
  (the record stays ``scheduled`` until something is sent). When a holder ends or is
  cancelled, each agent it held gets the next version's remaining sequence from now; only
  when no other version is on does a cancelled one send its restore.
* At the end (``end_s``) the record becomes ``completed``; devices fall back by
  themselves since every sequence is timed (``docs/openadr.md``), or resume the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable
from typing import Any

from sef.ems import EMS
from sef.ems._target_board import target_board
from sef.interface import DEMO_INTERFACE
from sef.openadr._history import DrHistory
from sef.openadr._model import EventKey
from sef.openadr._overlap import Rank, rank, remaining_commands
from sef.openadr._plan import Command, Dispatch, Plan
from sef.openadr._scheduled import ScheduledPlan, measured_agents, plan_end
from sef.openadr._telemetry import agents_power_kw

__all__ = ["PlanExecutor", "ScheduledPlan", "measured_agents", "plan_end"]

log = logging.getLogger("sef.openadr")

SAMPLES_PER_EVENT = 20
"""Power samples taken over an event for the delivered figure."""
MIN_SAMPLE_REAL_S = 0.1
"""Shortest real time between two power samples, s."""


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
        self._arrivals = itertools.count(1)
        self._successors: dict[tuple[str, str], tuple[Rank, frozenset[str]]] = {}
        """(source, event id) -> the rank of a newer version and the agents it continues
        on, from when :meth:`cancel` stops the older one until :meth:`schedule` puts the
        newer one on: a dispatch of another event arbitrated in between must not find
        those agents free (there are awaits between the two)."""

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
        if not s.active and d.agents and s.key in self._plans:
            s.active = True
            self.history.update(s.key, status="active")
        group = self._group_for(d.agents, groups)
        if group is not None:
            await self._call(s, f"group:{group}", len(d.agents), args)
        else:
            await asyncio.gather(*(self._call(s, a, 1, args) for a in d.agents))

    def _power(self, s: ScheduledPlan) -> float | None:
        return agents_power_kw(self.ems.registry, s.measured or s.agents)

    # -- overlapping events (sef.openadr._overlap) -------------------------------------
    def _outranked(self, s: ScheduledPlan, agent: str, now_s: float) -> bool:
        """Whether another version on ``agent`` now ranks above ``s`` (or a newer version
        about to continue a better-ranked one there)."""
        if any(
            key != s.key[:2] and rank_ < s.rank and agent in agents
            for key, (rank_, agents) in self._successors.items()
        ):
            return True
        return any(
            o is not s and o.rank < s.rank and o.covers(agent, now_s) for o in self._plans.values()
        )

    def _next_holders(
        self, agent: str, now_s: float
    ) -> list[tuple[Rank, ScheduledPlan, tuple[Command, ...]]]:
        """The versions on ``agent`` now with something left, best first."""
        found = []
        for o in self._plans.values():
            if o.covers(agent, now_s):
                left = remaining_commands(o.plan, agent, o.offset_s, now_s)
                if left:
                    found.append((o.rank, o, left))
        found.sort(key=lambda item: item[0])
        return found

    async def _send_held(self, s: ScheduledPlan, d: Dispatch) -> None:
        """Send a dispatch of ``s`` to the agents no better-ranked version holds now."""
        # decided as of the dispatch's due time, not of when this task woke: the outcome
        # must not depend on the loop's lag (a version due a moment later is not on yet)
        now = d.start_s + s.offset_s
        s.reached.update(d.agents)
        agents = tuple(a for a in d.agents if not self._outranked(s, a, now))
        if len(agents) < len(d.agents):
            log.info(
                "%s: %s held by a higher-ranked event: not commanded",
                s.key,
                ", ".join(a for a in d.agents if a not in agents),
            )
        if agents:
            await self._send(s, Dispatch(agents, d.start_s, d.commands), s.groups)

    async def _hand_over(
        self,
        s: ScheduledPlan,
        *,
        restore: bool,
        keep: frozenset[str] = frozenset(),
        keep_rank: Rank | None = None,
    ) -> None:
        """``s`` has left (it is no longer in ``_plans``): every agent it held gets the
        next version's remaining sequence; with ``restore``, agents no version is on get
        the plan's restore. Agents in ``keep`` are left alone unless a version that ranks
        above ``keep_rank`` (the successor's) is on."""
        now = self.ems.clock.now()
        resume: dict[tuple[EventKey, tuple[Command, ...]], list[str]] = {}
        plans: dict[EventKey, ScheduledPlan] = {}
        bare: set[str] = set()
        for agent in sorted(s.commanded):
            if self._outranked(s, agent, now):
                continue  # s did not hold it: nothing changes at the device
            nexts = self._next_holders(agent, now)
            if agent in keep and (keep_rank is None or not nexts or keep_rank < nexts[0][0]):
                continue  # the successor takes it
            if nexts:
                _, o, left = nexts[0]
                plans[o.key] = o
                resume.setdefault((o.key, left), []).append(agent)
            elif restore and agent not in keep:
                bare.add(agent)
        sends = []
        for (key, left), agents in resume.items():
            o = plans[key]
            log.info(
                "%s: %s resume %s (%d commands left)", s.key, ", ".join(agents), key, len(left)
            )
            sends.append(self._send(o, Dispatch(tuple(agents), now, left), o.groups))
        for d in s.plan.restore:
            agents_ = tuple(a for a in d.agents if a in bare)
            if agents_:
                sends.append(self._send(s, Dispatch(agents_, d.start_s, d.commands), s.groups))
        await asyncio.gather(*sends)

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
        if not dispatches:
            s.active = True
            self.history.update(s.key, status="active")
        for start, batch in itertools.groupby(dispatches, key=lambda d: d.start_s):
            await clock.sleep(start + s.offset_s - clock.now())
            await asyncio.gather(*(self._send_held(s, d) for d in batch))
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
        await self._hand_over(s, restore=False)
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
        priority: int = 0,
        arrival: int | None = None,
        on_agents: Iterable[str] = (),
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
            priority: the event's priority (1 highest, 0: none given = lowest).
            arrival: the event's arrival number (higher: received later; default: the
                next of the executor's own count).
            on_agents: agents the version is on from now, before its first dispatch to
                them (a modification continuing its predecessor there).
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
            rank=rank(priority, next(self._arrivals) if arrival is None else arrival),
        )
        s.reached.update(on_agents)
        s.task = asyncio.get_running_loop().create_task(self._guarded(s), name=f"dr {key}")
        self._plans[key] = s
        self._successors.pop((source, event_id), None)
        return s

    def get(self, key: EventKey) -> ScheduledPlan | None:
        """The scheduled plan of an event version, if any."""
        return self._plans.get(key)

    def keys_of(self, source: str, event_id: str) -> list[EventKey]:
        """Every scheduled version of an event."""
        return [k for k in self._plans if k[0] == source and k[1] == event_id]

    async def cancel(
        self,
        key: EventKey,
        *,
        restore: bool = True,
        keep: frozenset[str] = frozenset(),
        keep_rank: Rank | None = None,
    ) -> ScheduledPlan | None:
        """Stop an event version: pending dispatches dropped, windows and hold removed,
        and (``restore``) each agent it held handed over to the next version on it (its
        remaining sequence), or, with none, sent the plan's restore sequence; agents in
        ``keep`` (a newer version of ranked ``keep_rank`` commands them) are left alone
        unless a version ranked above it is on."""
        s = self._plans.pop(key, None)
        if s is None:
            return None
        if keep and keep_rank is not None:
            now = self.ems.clock.now()
            held = frozenset(a for a in keep if s.covers(a, now))
            if held:  # until schedule() puts the successor on (see _successors)
                self._successors[key[:2]] = (keep_rank, held)
        if s.task is not None and not s.task.done():
            s.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await s.task
        self._clear_board(s)
        if restore:
            await self._hand_over(s, restore=True, keep=keep, keep_rank=keep_rank)
        return s

    async def close(self) -> None:
        """Stop every scheduled plan without restoring (the EMS is shutting down; the
        devices' timed sequences end by themselves)."""
        for key in list(self._plans):
            await self.cancel(key, restore=False)
        self._successors.clear()
