"""The DR bridge: implements :class:`~sef.openadr.DrSink` on top of the EMS.

For each event version an adapter hands over, the bridge reads the fleet from the registry
(:func:`~sef.openadr._fleet.fleet_members`), has the mapping make a plan
(``sef.openadr._mapping.plan_event``), has the policy decide the opt
(``sef.openadr._policy.OptPolicy``), records the outcome in the :class:`DrHistory`, and
for an opt-in that is not a test event has the :class:`~sef.openadr._executor.PlanExecutor`
carry the plan out after a random start offset ``U(0, randomize_s)`` (drawn once per
event version from a seeded :class:`random.Random`, kept in the record).

* The same version again (a redelivery) gets the same answer; nothing is sent again.
* A newer modification of a known event stops the older one's schedule; the older one's
  restore sequence goes only to agents the new plan does not command.
* A cancellation stops pending dispatches, restores the agents already commanded, removes
  the windows and holds; the record's status becomes ``cancelled``.
* Events overlapping on a device are arbitrated by the executor (priority, then the newer
  event; the bridge numbers events by arrival): a device left by its holder resumes the
  next event's remaining sequence, and is restored only when no other event is on.
* Nothing here raises into the adapter: a failure is an opt-out ``internal error: …``,
  logged with its traceback. Every decision is logged at INFO on ``sef.openadr``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sef.ems import EMS
from sef.openadr._adapter import AdapterStatus, VenAdapter
from sef.openadr._executor import PlanExecutor, ScheduledPlan, measured_agents, plan_end
from sef.openadr._fleet import fleet_members
from sef.openadr._history import DrHistory, EventRecord
from sef.openadr._mapping import plan_event
from sef.openadr._mapping_tables import MappingTable, load_mapping
from sef.openadr._model import DrEvent, EventKey, EventStatus, Opt, OptDecision, TelemetrySample
from sef.openadr._overlap import rank
from sef.openadr._plan import FleetMember, Plan, Unsupported
from sef.openadr._policy import OptPolicy
from sef.openadr._telemetry import group_telemetry

__all__ = ["DrBridge", "Planner", "Policy"]

log = logging.getLogger("sef.openadr")

Planner = Callable[[DrEvent, Sequence[FleetMember]], Plan | Unsupported]
"""Event × fleet → plan; the default is the mapping's ``plan_event`` with its tables."""

_LIVE = ("received", "scheduled", "active")


class Policy(Protocol):
    """What decides the opt (:class:`~sef.openadr.OptPolicy`)."""

    def decide(
        self, event: DrEvent, plan: Plan | Unsupported, fleet: Sequence[FleetMember]
    ) -> OptDecision:
        """OptIn or optOut, with the reason."""
        ...


class DrBridge:
    """The EMS side of every VEN adapter.

    Args:
        ems: the EMS (calls, registry, clock, target board).
        mapping: the mapping tables (default: :func:`~sef.openadr.load_mapping`, read on
            the first event).
        policy: the opt policy (default: an :class:`~sef.openadr.OptPolicy`).
        history: where event versions are recorded (a new one when ``None``).
        rng_seed: seed of the random start offsets (``None``: from the OS).
        live_control: a live controller runs beside the EMS (the mapping may then route
            fleet-wide targets to the target board).
        planner: replaces the mapping altogether (tests, other mappings).
    """

    def __init__(
        self,
        ems: EMS,
        *,
        mapping: MappingTable | None = None,
        policy: Policy | None = None,
        history: DrHistory | None = None,
        rng_seed: int | None = None,
        live_control: bool = False,
        planner: Planner | None = None,
    ) -> None:
        self.ems = ems
        self.history = history if history is not None else DrHistory()
        self.live_control = live_control
        self.executor = PlanExecutor(ems, self.history)
        self._mapping = mapping
        self.policy: Policy = policy if policy is not None else OptPolicy()
        self._planner = planner
        self._rng = random.Random(rng_seed)
        self._answers: dict[EventKey, OptDecision] = {}
        self._offsets: dict[EventKey, float] = {}
        self._scheduled: dict[EventKey, ScheduledPlan] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._events: dict[EventKey, DrEvent] = {}
        self._overrides: dict[tuple[str, str], OptDecision] = {}
        self._arrivals: dict[tuple[str, str], int] = {}
        self._arrival_count = itertools.count(1)
        self.adapters: list[VenAdapter] = []
        """The adapters started with :meth:`attach`."""

    def _arrival(self, event: DrEvent) -> int:
        """The event's arrival number (its first version's; later ones keep it): on equal
        priority the event received later holds a device."""
        return self._arrivals.setdefault((event.source, event.event_id), next(self._arrival_count))

    def _lock(self, source: str, event_id: str) -> asyncio.Lock:
        """One lock per event: its versions and its cancellation are handled in turn."""
        return self._locks.setdefault((source, event_id), asyncio.Lock())

    # -- mapping and policy ---------------------------------------------------------
    def _plan(self, event: DrEvent, fleet: list[FleetMember]) -> Plan | Unsupported:
        if self._planner is not None:
            return self._planner(event, fleet)
        if self._mapping is None:
            self._mapping = load_mapping()
        return plan_event(
            event, fleet, self._mapping, live_control=self.live_control, now_s=self.ems.clock.now()
        )

    def offset_s(self, key: EventKey, randomize_s: float) -> float:
        """The random start offset of an event version, s: drawn once, then kept."""
        if key not in self._offsets:
            window = randomize_s if randomize_s > 0 else 0.0
            self._offsets[key] = self._rng.uniform(0.0, window) if window else 0.0
        return self._offsets[key]

    def scheduled(self, key: EventKey) -> ScheduledPlan | None:
        """What the executor was given for an event version (kept after it ended)."""
        return self._scheduled.get(key)

    def latency_s(self, key: EventKey) -> float | None:
        """Real seconds from an event version's arrival to its first device command."""
        s = self._scheduled.get(key)
        return None if s is None else s.latency_s

    # -- DrSink ------------------------------------------------------------------------
    async def on_event(self, event: DrEvent) -> OptDecision:
        """Decide, act and answer (see the module docstring). Never raises."""
        received = time.monotonic()
        key = event.key
        try:
            async with self._lock(event.source, event.event_id):
                return await self._on_event(event, key, received)
        except Exception as exc:  # the lock itself cannot fail; kept for safety
            log.exception("%s: internal error", key)
            return OptDecision.opt_out(f"internal error: {type(exc).__name__}: {exc}")

    async def _on_event(self, event: DrEvent, key: EventKey, received: float) -> OptDecision:
        try:
            known = self._answers.get(key)
            if known is not None:
                log.info("%s: redelivered, answered %s again", key, known.opt)
                return known
            newest = self.history.latest(event.source, event.event_id)
            if newest is not None and newest.modification > event.modification:
                decision = self._answers.get(newest.key) or OptDecision.opt_out("superseded")
                log.info("%s: older than modification %d: ignored", key, newest.modification)
                return decision
            if event.status is EventStatus.CANCELLED:
                await self._cancel(event.source, event.event_id, event.modification)
                return OptDecision.opt_in("cancelled")
            decision = await self._handle(event, received)
        except Exception as exc:
            log.exception("%s: internal error", key)
            decision = OptDecision.opt_out(f"internal error: {type(exc).__name__}: {exc}")
            self._record_failure(event, decision)
        self._answers[key] = decision
        self._trim()
        return decision

    def _trim(self) -> None:
        """Forget the oldest versions beyond the history's limit (answers, offsets, plans),
        so a long run does not grow the bridge."""
        limit = max(self.history.limit, 1)
        for table in (self._answers, self._offsets, self._scheduled, self._events):
            while len(table) > limit:
                del table[next(iter(table))]
        while len(self._arrivals) > limit:
            del self._arrivals[next(iter(self._arrivals))]
        for name in list(self._locks)[: max(len(self._locks) - limit, 0)]:
            if not self._locks[name].locked():
                del self._locks[name]

    async def _handle(self, event: DrEvent, received: float) -> OptDecision:
        key = event.key
        fleet = fleet_members(self.ems.registry)
        result = self._plan(event, fleet)
        self._events[key] = event
        decision = self.policy.decide(event, result, fleet)
        override = self._overrides.get((event.source, event.event_id))
        if override is not None and (override.opt is Opt.OUT or isinstance(result, Plan)):
            decision = override  # an operator's answer holds for later modifications too
        plan = result if isinstance(result, Plan) else None
        acting = decision.opt is Opt.IN and not event.test and plan is not None
        offset = self.offset_s(key, event.randomize_s)
        status = "scheduled" if acting else "opted_out" if decision.opt is Opt.OUT else "received"
        reason = decision.reason
        if event.test and decision.opt is Opt.IN and "nothing sent" not in reason:
            reason += " (test event: nothing sent)"
        record = EventRecord(
            source=event.source,
            event_id=event.event_id,
            modification=event.modification,
            program=event.program,
            signal=plan.signal if plan is not None else "",
            status=status,
            opt=str(decision.opt),
            reason=reason,
            received_s=self.ems.clock.now(),
            start_s=event.start_s,
            end_s=event.end_s,
            offset_s=offset,
            requested_kw=plan.requested_kw if plan is not None else None,
            raw=dict(event.raw),
        )
        keep: frozenset[str] = frozenset()
        if acting and plan is not None:
            keep = frozenset(a for d in plan.dispatches for a in d.agents)
        arrival = self._arrival(event)
        continued = await self._supersede(event, keep, rank(event.priority, arrival))
        self.history.add(record)
        if acting and plan is not None:
            self._scheduled[key] = self.executor.schedule(
                key,
                plan,
                offset_s=offset,
                end_s=plan_end(event, plan),
                groups=self._groups(event),
                received_mono=received,
                measured=measured_agents(event, plan, fleet),
                priority=event.priority,
                arrival=arrival,
                on_agents=continued,
            )
        log.info(
            "event %s/%s mod %d: %s (%s)%s",
            event.source,
            event.event_id,
            event.modification,
            decision.opt,
            reason,
            f", start offset {offset:.1f} s" if acting else "",
        )
        return decision

    async def _supersede(
        self, event: DrEvent, keep: frozenset[str], keep_rank: tuple[float, int]
    ) -> frozenset[str]:
        """Stop older versions of ``event``: restore (or hand over to another event) only
        agents the new one (ranked ``keep_rank``) does not take. Returns the agents of
        ``keep`` an older version was on (the new one continues there)."""
        continued: set[str] = set()
        for old in self.executor.keys_of(event.source, event.event_id):
            if old != event.key:
                s = await self.executor.cancel(old, restore=True, keep=keep, keep_rank=keep_rank)
                if s is not None:
                    continued.update(s.reached & keep)
                self.history.update(
                    old,
                    status="cancelled",
                    reason=f"superseded by modification {event.modification}",
                )
        return frozenset(continued)

    def _groups(self, event: DrEvent) -> tuple[str, ...]:
        registry = self.ems.registry
        named = [*event.targets.groups, *event.targets.resources]
        return tuple(dict.fromkeys(g for g in named if registry.group_members(g)))

    def _record_failure(self, event: DrEvent, decision: OptDecision) -> None:
        try:
            self.history.add(
                EventRecord(
                    source=event.source,
                    event_id=event.event_id,
                    modification=event.modification,
                    program=event.program,
                    signal="",
                    status="failed",
                    opt=str(decision.opt),
                    reason=decision.reason,
                    received_s=self.ems.clock.now(),
                    start_s=event.start_s,
                    end_s=event.end_s,
                )
            )
        except Exception:  # the history itself failing must not raise either
            log.exception("%s: could not record the failure", event.key)

    async def on_cancel(self, source: str, event_id: str, modification: int) -> None:
        """Stop every version of the event and return its devices to normal. Never raises."""
        try:
            async with self._lock(source, event_id):
                await self._cancel(source, event_id, modification)
        except Exception:
            log.exception("%s/%s: cancelling failed", source, event_id)

    async def _cancel(self, source: str, event_id: str, modification: int) -> None:
        try:
            for key in self.executor.keys_of(source, event_id):
                await self.executor.cancel(key, restore=True)
            for record in self.history.versions(source, event_id):  # indexed: no scan
                if record.status in _LIVE:
                    self.history.update(record.key, status="cancelled")
            log.info("event %s/%s mod %d: cancelled", source, event_id, modification)
        except Exception:
            log.exception("%s/%s: cancelling failed", source, event_id)

    def telemetry(self, group: str) -> TelemetrySample | None:
        """The group's aggregated telemetry now (``"*"``: the whole fleet)."""
        try:
            return group_telemetry(self.ems.registry, group)
        except Exception:
            log.exception("telemetry of %s failed", group)
            return None

    # -- operators (sef.openadr._operator.DrOperator) ----------------------------------
    async def attach(self, adapter: VenAdapter) -> None:
        """Start ``adapter`` with this bridge as its sink and keep it (for :meth:`statuses`
        and opt overrides). Raises what ``adapter.start`` raises."""
        await adapter.start(self)
        self.adapters.append(adapter)

    def statuses(self) -> list[AdapterStatus]:
        """Every attached adapter's health, now."""
        return [a.status() for a in self.adapters]

    def policy_json(self) -> dict[str, Any]:
        """The opt policy as JSON (``{}`` for a policy that is not an :class:`OptPolicy`)."""
        return self.policy.as_json() if isinstance(self.policy, OptPolicy) else {}

    def set_policy_json(self, data: dict[str, Any]) -> None:
        """Replace the policy (:meth:`OptPolicy.from_json`; ``ValueError`` leaves it)."""
        self.policy = OptPolicy.from_json(data)

    async def set_opt(self, source: str, event_id: str, opt: Opt, reason: str) -> EventRecord:
        """An operator's answer to the newest version of an event (it holds for later
        modifications): ``optOut`` stops and restores what was sent, ``optIn`` plans and
        schedules it again; the adapter re-answers the VTN where it can (``send_opt``).

        Raises:
            KeyError: no such event.
            ValueError: the event is over, or cannot be carried out (opt in).
        """
        async with self._lock(source, event_id):
            record = self.history.latest(source, event_id)
            if record is None:
                raise KeyError(f"no event {source}/{event_id}")
            if record.status in ("completed", "cancelled") or (
                record.end_s + record.offset_s <= self.ems.clock.now()
            ):
                raise ValueError(f"event {source}/{event_id} is over")
            decision = OptDecision(Opt(opt), f"operator: {reason}" if reason else "operator")
            if decision.opt is Opt.OUT:
                for key in self.executor.keys_of(source, event_id):
                    await self.executor.cancel(key, restore=True)
                self.history.update(record.key, status="opted_out")
            elif self.executor.get(record.key) is None:
                await self._opt_in_again(record, decision)
            self._overrides[(source, event_id)] = decision
            self._answers[record.key] = decision
            self.history.update(record.key, opt=str(decision.opt), reason=decision.reason)
            log.info("event %s/%s: %s by the operator (%s)", source, event_id, opt, reason)
            await self._tell_adapter(record, decision)
            return record

    async def _opt_in_again(self, record: EventRecord, decision: OptDecision) -> None:
        event = self._events.get(record.key)
        if event is None:
            raise ValueError(f"event {record.event_id} is no longer kept: cannot opt in")
        fleet = fleet_members(self.ems.registry)
        result = self._plan(event, fleet)
        if isinstance(result, Unsupported):
            raise ValueError(f"cannot opt in: {result.reason}")
        status = "received"
        if not event.test:
            self._scheduled[record.key] = self.executor.schedule(
                record.key,
                result,
                offset_s=self.offset_s(record.key, event.randomize_s),
                end_s=plan_end(event, result),
                groups=self._groups(event),
                measured=measured_agents(event, result, fleet),
                priority=event.priority,
                arrival=self._arrival(event),
            )
            status = "scheduled"
        self.history.update(
            record.key, status=status, signal=result.signal, requested_kw=result.requested_kw
        )

    async def _tell_adapter(self, record: EventRecord, decision: OptDecision) -> None:
        for adapter in self.adapters:
            if adapter.source != record.source:
                continue
            send = getattr(adapter, "send_opt", None)
            if send is None:
                log.warning(
                    "%s cannot answer again: the VTN keeps the earlier answer", record.source
                )
                continue
            try:
                await send(record.event_id, record.modification, decision)
            except Exception:
                log.exception("%s: the new answer did not reach the VTN", record.key)

    async def close(self) -> None:
        """Stop the attached adapters and every scheduled plan (no restore: the devices'
        sequences are timed)."""
        for adapter in self.adapters:
            try:
                await adapter.stop()
            except Exception:
                log.exception("stopping %s failed", adapter.source)
        await self.executor.close()
