"""The EMS process: registry on the bus, primary-host status, rebirth requests, calls."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sef.bus import (
    BrokerURL,
    BusClient,
    Message,
    ParsedTopic,
    Reply,
    Session,
    Status,
    TopicKind,
    Topics,
    Will,
    check_id,
)
from sef.clock import Clock, default_clock
from sef.ems._admission import Admission
from sef.ems._births import GRACE_S, REBIRTH_RATE, BirthTracker
from sef.ems._caller import (
    LATE_GRACE_S,
    Caller,
    CallRefused,
    CallTarget,
    CheckedArgs,
    OpenCall,
    check_args,
    command_status,
    reply_record,
)
from sef.ems._events import (
    AgentEvent,
    Discovered,
    Event,
    Gap,
    GatewayDown,
    GatewayUp,
    Offline,
    Online,
    PropertyChanged,
    SessionReset,
    StaleStatus,
)
from sef.ems._homes import HomeBook, HomeRefused
from sef.ems._host_guard import HostGuard
from sef.ems._leader import AlwaysLeader, Leadership
from sef.ems._reconcile import METHOD as RECONCILE_METHOD
from sef.ems._reconcile import RECONCILE_PREFIX, RESTORE_WINDOW_S, Reconciler
from sef.ems._records import AgentRecord
from sef.ems._registry import BDSEQ_AHEAD_S, Registry
from sef.ems._seals import SealChecker
from sef.interface import AGENT_INTERFACE, DEMO_INTERFACE, Interface, builtin_interface
from sef.logthrottle import LogThrottle
from sef.security import Security, TrustStore
from sef.tasks import TaskSet

if TYPE_CHECKING:  # the store (SQLAlchemy, Alembic) loads only when an EMS uses one
    from sef.ems._recorder import Recorder
    from sef.ems.store import Store

__all__ = ["EMS", "snapshot"]

log = logging.getLogger("sef.ems")

REBIRTH_INTERVAL_S = 5.0
"""Least time between two rebirth requests to one agent, real s."""
SWEEP_INTERVAL_S = 1.0
"""How often the EMS closes expired calls and checks for the end of a takeover, real s."""
BIRTH_SWEEP_S = 0.25
"""How often the EMS looks for incomplete births to ask a rebirth of, real s."""
FREEZE_MIN_AGENTS = 10_000
"""Fleet size from which the EMS freezes its registry out of the garbage collector's
generations after the store restore and after the first drain of retained births."""
REBIRTH_REASONS = ("gap", "incomplete", "gateway", "refused", "operator")
"""Why the EMS asked an agent for a rebirth (``EMS.rebirths_by_reason``): a sequence gap,
an incomplete birth (:mod:`sef.ems._births`), its home gateway's uplink came back, its
birth was refused by admission, an operator's reset or approval."""


@functools.cache
def _rebirth() -> CheckedArgs:
    """``sef.Agent.Rebirth()``, checked once."""
    return check_args(builtin_interface(AGENT_INTERFACE), AGENT_INTERFACE, "Rebirth", [])


class EMS:
    """The control server's bus side.

    Args:
        broker: broker URL.
        host_id: id of this EMS (primary host) on the bus.
        clock: clock for timestamps and command expiry.
        on_event: called with every registry event (for displays, stores, control apps).
        announce: publish the retained primary-host status (off for read-only tools).
        request_rebirth: ask an agent to re-announce when its message sequence has a gap.
        store: database for telemetry history, the registry and the command log. With a
            store the EMS keeps a persistent MQTT session and acknowledges each message
            only once it is committed (see :mod:`sef.ems._recorder`), so nothing
            published while the EMS is down or crashing is lost.
        admission: which new agent ids the registry takes in (allow-list, approval, rate,
            cap; default :class:`~sef.ems.Admission`).
        pinned_interfaces: interface definitions no agent may redefine (besides the shipped
            ones).
        bdseq_ahead_s: how far an agent's bdseq may run ahead of the wall clock, s.
        security: this EMS's certificate, key and trust store: connects over mutual TLS,
            signs every call and accepts only replies signed by the agent it addressed
            (``None``: plaintext and unsigned, for ``--insecure`` deployments).
        require_signed_telemetry: check every agent's telemetry against its signed seals
            (:mod:`sef.ems._seals`; for deployments that do not trust the broker):
            ``True`` verifies them with ``security``'s trust store, or pass the trust
            store. Verdicts are counted (``ems.seals``), logged (ERROR for a failed
            window) and stored as agent events; telemetry is stored as received.
        rebirth_rate: rebirth requests per second to agents whose birth is incomplete
            (:mod:`sef.ems._births`; 0: count them, never ask).
        birth_grace_s: time a birth may take to complete before its agent counts as
            incomplete, real s.
    """

    def __init__(
        self,
        broker: BrokerURL | str,
        host_id: str = "ems",
        *,
        clock: Clock | None = None,
        topics: Topics | None = None,
        on_event: Callable[[Event], None] | None = None,
        announce: bool = True,
        request_rebirth: bool = True,
        keepalive_s: int = 10,
        store: Store | None = None,
        admission: Admission | None = None,
        pinned_interfaces: Sequence[Interface] = (),
        bdseq_ahead_s: float = BDSEQ_AHEAD_S,
        security: Security | None = None,
        require_signed_telemetry: bool | TrustStore = False,
        rebirth_rate: float = REBIRTH_RATE,
        birth_grace_s: float = GRACE_S,
    ) -> None:
        self.host_id = check_id("host", host_id)
        self.security = security
        self.store = store
        self.recorder: Recorder | None = None
        if store is not None:
            from sef.ems._recorder import Recorder

            self.recorder = Recorder(store)
        self.clock = clock or default_clock()
        self.topics = topics or Topics()
        self.seals: SealChecker | None = None
        """Signed-telemetry checks (``require_signed_telemetry``), else ``None``."""
        if require_signed_telemetry is not False:
            trust = (
                require_signed_telemetry
                if isinstance(require_signed_telemetry, TrustStore)
                else security.trust
                if security is not None
                else None
            )
            if trust is None:
                raise ValueError("require_signed_telemetry needs security= (or a TrustStore)")
            self.seals = SealChecker(trust, self.topics, recorder=self.recorder, now=self.clock.now)
        self.registry = Registry(
            self.topics,
            admission=admission,
            pinned=pinned_interfaces,
            bdseq_ahead_s=bdseq_ahead_s,
        )
        self._log_presence = LogThrottle(log, "presence changes", level=logging.INFO, burst=100)
        self._log_gaps = LogThrottle(log, "sequence gaps")
        self.homes = HomeBook()
        """Homes (gateways): uplink state, agents behind each, relay stats (``_homes``)."""
        self._gateways_prefix = f"{self.topics.root}/gateways/"
        self._log_homes = LogThrottle(log, "refused home messages")
        self.session = Session()
        self.announce = announce
        self.request_rebirth = request_rebirth
        self.on_event = on_event
        self.rebirths_requested = 0
        """Rebirth requests sent, all reasons."""
        self.rebirths_by_reason: dict[str, int] = dict.fromkeys(REBIRTH_REASONS, 0)
        """Rebirth requests sent, by reason (:data:`REBIRTH_REASONS`)."""
        self._last_rebirth: dict[str, float] = {}
        self.births = BirthTracker(
            self.registry, rate=rebirth_rate if request_rebirth else 0.0, grace_s=birth_grace_s
        )
        """Agents whose birth the EMS holds only part of, and the rebirths asked of them."""
        self.bus = BusClient(
            broker,
            f"{self.host_id}-{id(self):x}" if not announce else self.host_id,
            on_message=self._on_message,
            will=self._make_will if announce else None,
            on_connect=self._on_connect,
            on_lost=lambda lost: self.guard.connection_lost(lost),
            keepalive_s=keepalive_s,
            clean_session=store is None,
            manual_ack=store is not None,
            tls=security.client_tls() if security is not None else None,
        )
        # puts back an interface XML someone overwrote on its hash topic (protocol.md §4.2.1)
        self.registry.blob_book.repair = lambda t, xml: self.bus.publish(t, xml, retain=True)
        self.caller = Caller(
            self.bus,
            self.clock,
            self.topics,
            sender=self.bus.client_id,
            track_late=True,
            on_late=self._late_reply,
            security=security,
        )
        self.commands_expired = 0
        """Commands whose expiry passed without any reply (counted with or without a store)."""
        self._log_lock = asyncio.Lock()
        self._late_write: asyncio.Future[None] | None = None
        self.guard = HostGuard(
            self.host_id, self.bus, self.session, self.topics, self.clock, announce=announce
        )
        """The host's own status (repairs) and takeovers of its client id."""
        self.reconciler = Reconciler(self.clock)
        self._reconcile_after_restart: set[str] = set()
        self._tasks = TaskSet(self.host_id)
        self._last_message = 0.0
        self.control_series: dict[str, list[float]] = {}
        """Net load vs target of a running control app (t: Unix s; kW), for displays."""
        self.leadership: Leadership = AlwaysLeader(self.host_id)
        """Leader election among EMS workers on one store (:mod:`sef.ems._leader`); only
        the leader re-sends intents to agents that come back (``sef ems`` sets it)."""

    @property
    def takeovers(self) -> int:
        """Signs that another client used this EMS's client id."""
        return self.guard.takeovers

    @property
    def takeover_active(self) -> bool:
        """A takeover episode is going on."""
        return self.guard.takeover_active

    @property
    def host_status_repairs(self) -> int:
        """Republications of this EMS's own status over a stale or forged one."""
        return self.guard.repairs

    # -- lifecycle ----------------------------------------------------------------
    async def start(self, *, timeout_s: float | None = 10.0) -> None:
        if self.store is not None and self.recorder is not None:
            from sef.ems._recorder import agent_record
            from sef.ems.store._reads import _gc_paused

            rows = await asyncio.to_thread(self.store.load_agents)
            props = await asyncio.to_thread(self.store.load_property_texts)
            with _gc_paused():  # the fleet's records stay: frozen below (bench/ems_restore.py)
                for row in rows:
                    record = agent_record(row, props.get(row.agent_id, ()))
                    self.registry.restore(record)
                    self.births.restored(record)
            log.info("EMS %s: %d agents restored from the store", self.host_id, len(rows))
            del rows, props
            self._freeze()  # the restored fleet leaves the GC's generations
            self.recorder.start()
        if self.store is not None:
            await self._reopen_commands()
            await self._restore_intents()
        for pattern in self._ingest_patterns():
            await self.bus.subscribe(pattern, qos=1)
        if self.seals is not None:
            await self.bus.subscribe(self.topics.all_seals(), qos=1)
        if self.announce:  # to repair a stale or forged status of our own (§4.4)
            await self.bus.subscribe(self.topics.host_status(self.host_id), qos=1)
        await self.caller.start()
        self._tasks.spawn(self._sweep(), name=f"{self.host_id} sweep")
        self._tasks.spawn(self._birth_sweep(), name=f"{self.host_id} birth sweep")
        await self.bus.start(timeout_s=timeout_s)

    def _ingest_patterns(self) -> list[str]:
        """What the EMS subscribes to over MQTT for agents' and homes' messages (a worker
        on a NATS cluster, :class:`sef.cluster.WorkerEMS`, reads them from JetStream)."""
        return [
            *self.topics.all_agents(),
            *self.topics.all_gateways(),
            self.topics.all_gateway_stats(),
        ]

    async def stop(self) -> None:
        async def goodbye() -> None:
            if self.announce:
                status = Status(False, self.session.bdseq, self.clock.now(), reason="shutdown")
                self.bus.publish(
                    self.topics.host_status(self.host_id), status.to_payload(), retain=True
                )
                await asyncio.sleep(0.05)

        self.guard.stop()  # our own shutdown status must not be "repaired"
        await self._tasks.close()
        self.registry.flush_logs()
        if self.recorder is not None:  # commit first, so that its acks still reach the broker
            await self.recorder.stop()
        await self.bus.stop(before_disconnect=goodbye)

    async def __aenter__(self) -> EMS:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Run until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())

    def _make_will(self) -> Will:
        bdseq = self.session.new_session()
        return Will(
            self.topics.host_status(self.host_id), Status(False, bdseq, reason="will").to_payload()
        )

    async def _on_connect(self) -> None:
        # (re)subscribed: the agents' retained births drain from now on
        self.births.subscribed(asyncio.get_running_loop().time())
        self.guard.connected(persistent=self.store is not None)

    async def _birth_sweep(self) -> None:
        """Every :data:`BIRTH_SWEEP_S`: count the agents whose birth stayed incomplete and
        ask the due ones for a rebirth (rate-limited, backoff: :mod:`sef.ems._births`)."""
        loop = asyncio.get_running_loop()
        drained = False
        while True:
            await asyncio.sleep(BIRTH_SWEEP_S)
            try:
                now = loop.time()
                self.births.sweep(now, self._ask_rebirth)
                if not drained and not self.births.draining(now):
                    drained = True  # the fleet's retained births are in: freeze them
                    self._freeze()
            except Exception:
                log.exception("EMS %s: birth sweep failed", self.host_id)

    def _freeze(self) -> None:
        """:meth:`Registry.freeze` (``gc.freeze``) for a fleet of :data:`FREEZE_MIN_AGENTS`
        or more (below that the collector's walks cost little, and a frozen object that
        later becomes cyclic garbage is never collected)."""
        if len(self.registry.agents) >= FREEZE_MIN_AGENTS:
            self.registry.freeze(count=False)  # counting walks every frozen object
            log.info(
                "EMS %s: %d agents, objects frozen (gc.freeze)",
                self.host_id,
                len(self.registry.agents),
            )

    def _ask_rebirth(self, agent_id: str, reason: str) -> bool:
        return self.rebirth(agent_id, reason=reason)

    async def _sweep(self) -> None:
        """Every :data:`SWEEP_INTERVAL_S`: close expired calls (unanswered ones become
        ``expired`` in the command log), flush the rejected-replies log, end a takeover
        episode."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                self.guard.check_quiet(loop.time())
                if self.seals is not None:
                    self.seals.sweep()
                self.caller.rejected.tick(loop.time())
                unanswered = [c.call_id for c in self.caller.expire() if not c.replies]
                if unanswered:
                    self.commands_expired += len(unanswered)
                    log.info("%d command(s) expired without a reply", len(unanswered))
                    if self.store is not None:
                        async with self._log_lock:
                            await asyncio.to_thread(
                                self.store.expire_commands, self.clock.now(), call_ids=unanswered
                            )
            except Exception:
                log.exception("EMS %s: sweep failed", self.host_id)

    # -- command log --------------------------------------------------------------
    async def _reopen_commands(self) -> None:
        """At start: mark ``expired`` the commands a previous run left waiting whose
        expiry passed; take replies (as late) for those still open, which the broker
        kept for us in the persistent session."""
        assert self.store is not None
        now = self.clock.now()
        expired = await asyncio.to_thread(
            self.store.expire_commands, now - self.clock.to_clock(LATE_GRACE_S)
        )
        if expired:
            self.commands_expired += expired
            log.info(
                "EMS %s: %d command(s) of an earlier run expired unanswered", self.host_id, expired
            )
        for row in await asyncio.to_thread(self.store.open_commands, now):
            try:
                target = CallTarget.parse(row["target"])
            except CallRefused:
                continue
            members = self._members(target)
            open_call = self.caller.open_call(row["call_id"], target, members, row["expires"])
            for record in row["replies"] or []:
                open_call.add(_reply_from_record(row["call_id"], record))
                if record.get("late"):
                    open_call.late_agents.add(str(record.get("agent")))

    def _members(self, target: CallTarget) -> frozenset[str] | None:
        """Who may answer a call to ``target``: the agent, or the group's known members
        (``None``: a group with no known member, whose replies then all count once)."""
        if not target.group:
            return frozenset((target.name,))
        members = frozenset(a.agent_id for a in self.registry.group_members(target.name))
        return members or None

    def _late_reply(self, open_call: OpenCall, reply: Reply) -> None:
        if self.store is not None:
            self._late_write = self._tasks.spawn(
                self._write_outcome(open_call), name=f"late reply {open_call.call_id}"
            )

    async def _write_outcome(self, open_call: OpenCall) -> None:
        """Write a command's status and replies (late ones marked) from its open call."""
        if self.store is None:
            return
        async with self._log_lock:
            status = command_status(open_call.replies, open_call.expected)
            records = [
                reply_record(r, late=r.agent in open_call.late_agents) for r in open_call.replies
            ]
            await asyncio.to_thread(
                self.store.update_command,
                open_call.call_id,
                status,
                records,
                only_if=["sent", "ok", "error", "not_applied", "partial", "timeout"],
            )

    # -- incoming -----------------------------------------------------------------
    def _on_message(self, message: Message) -> asyncio.Future[None] | None:
        if self.caller.handle(message):
            # a late reply is acknowledged once the command log holds it
            late, self._late_write = self._late_write, None
            return late
        if self.announce and message.topic == self.topics.host_status(self.host_id):
            self.guard.status_message(message)
            return None
        self._last_message = asyncio.get_running_loop().time()
        if message.retain:
            self.births.retained(self._last_message)
        pending: asyncio.Future[None] | None = None
        if self.seals is not None:
            consumed, pending = self.seals.handle(message)
            if consumed:  # a seal: nothing for the registry
                return pending
        now = self.clock.now()
        home = None
        if message.topic.startswith(self._gateways_prefix):  # (a cheap test per message)
            parsed = self.topics.parse(message.topic)
            if message.topic.endswith("/stats"):
                self._home_stats(message.topic, parsed, message.payload, now)
                return pending
            home = parsed.owner if parsed is not None else None
        listed_before = None if home is None else self.registry.gateway_agents.get(home)
        events = self.registry.handle(message, now)
        if home is not None:
            listed = self.registry.gateway_agents.get(home)
            if listed is not None and listed is not listed_before:  # a list it took
                self._home_update(home, self.homes.agent_list, home, listed, now)
        for event in events:
            if self.recorder is not None and isinstance(event, AgentEvent):
                record = self.registry.get(event.agent_id)
                if record is not None:
                    pending = self.recorder.record(event, record, now) or pending
            self._react(event)
        return pending

    def _home_stats(
        self, topic: str, parsed: ParsedTopic | None, payload: bytes, now: float
    ) -> None:
        """A home relay's statistics: into the home book; a bad one is counted and logged."""
        if parsed is None or parsed.kind is not TopicKind.GATEWAY_STATS:
            self._home_refused(topic.split("/")[-2], "stats on a topic of no valid home id")
        elif payload:  # an empty payload clears the retained stats: nothing to take
            self._home_update(parsed.owner, self.homes.stats, parsed.owner, payload, now)

    def _home_update(self, home: str, update: Callable[..., object], *args: object) -> None:
        """Apply ``update(*args)`` to the home book; a refusal is counted and logged."""
        try:
            update(*args)
        except HomeRefused as exc:
            self._home_refused(home, str(exc))

    def _home_refused(self, home: str, reason: str) -> None:
        self.registry.bad_messages += 1
        kind = reason.split(":", 1)[0][:60]
        self._log_homes.warn(home[:64], kind, "home %s: message refused: %s", home, reason)

    def _react(self, event: Event) -> None:
        if type(event) is PropertyChanged:  # the most frequent kind, none of the cases below
            self.births.observe(event, asyncio.get_running_loop().time())
            if event.agent_id in self._reconcile_after_restart:
                self._reconcile(event.agent_id)
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("event handler failed for %s", event)
            return
        self.births.observe(event, asyncio.get_running_loop().time())
        if isinstance(event, GatewayUp | GatewayDown):
            up = isinstance(event, GatewayUp)
            self._home_update(event.home, self.homes.uplink, event.home, up, self.clock.now())
        if isinstance(event, Online) or (
            isinstance(event, AgentEvent) and event.agent_id in self._reconcile_after_restart
        ):
            self._reconcile(event.agent_id)
        match event:
            case Online() | Offline() | Discovered() | StaleStatus() | SessionReset():
                if log.isEnabledFor(logging.INFO):  # (~5 µs an event: 1 M births, 10 s)
                    self._log_presence.warn(
                        event.agent_id,
                        event.kind,
                        "agent %s: %s %s",
                        event.agent_id,
                        event.kind,
                        "" if event.detail is None else event.detail,
                    )
                if isinstance(event, Discovered) and event.missed:
                    # its birth was refused: ask for it again
                    self.births.request(event.agent_id, "refused")
            case GatewayUp(home, agents):
                self._log_presence.warn(
                    home,
                    "gateway up",
                    "gateway %s: uplink up again; asking its agents to re-announce",
                    home,
                )
                for agent_id in agents:
                    if agent_id in self.registry.agents:  # not ids the EMS never admitted
                        self.births.request(agent_id, "gateway")
            case Gap(agent_id, expected, got):
                self._log_gaps.warn(
                    agent_id,
                    "gap",
                    "agent %s: message sequence gap (expected %d, got %d)",
                    agent_id,
                    expected,
                    got,
                )
                self.births.request(agent_id, "gap")  # (rate-limited, next sweep)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("event handler failed for %s", event)

    def _reconcile(self, agent_id: str) -> None:
        """An agent came (back) online, or is heard from for the first time since this EMS
        restarted: send it what it should be running now, if anything."""
        record = self.registry.get(agent_id)
        if record is None or record.online is not True:
            return
        if not self.leadership.is_leader:  # the leader's duty (kept for its next message)
            return
        self._reconcile_after_restart.discard(agent_id)
        due = self.reconciler.due(agent_id)
        if not due:
            return
        log.info("agent %s is back: re-sending %s", agent_id, [e.as_tuple() for e in due])
        self.reconciler.sent += 1
        try:
            checked = self.check(DEMO_INTERFACE, RECONCILE_METHOD, Reconciler.args(due))
        except CallRefused as exc:  # an interface the EMS no longer knows: nothing to send
            log.warning("agent %s: cannot reconcile: %s", agent_id, exc)
            return
        self._tasks.spawn(
            self.send(CallTarget(agent_id), checked, call_id=RECONCILE_PREFIX + uuid.uuid4().hex),
            name=f"reconcile {agent_id}",
        )

    async def _restore_intents(self) -> None:
        """Rebuild what each agent should run from the recent command log."""
        assert self.store is not None
        since = self.clock.now() - RESTORE_WINDOW_S
        rows = await asyncio.to_thread(self.store.commands, since=since, limit=100_000)
        used = self.reconciler.restore(rows, self._members)
        if used:
            log.info("EMS %s: %d sequences restored from the command log", self.host_id, used)
        # an agent that stayed online meanwhile sends no new birth: reconcile it at its
        # next message
        self._reconcile_after_restart = {
            agent_id for agent_id in self.registry.agents if self.reconciler.due(agent_id)
        }

    def rebirth(self, agent_id: str, *, reason: str = "operator") -> bool:
        """Ask an agent to re-announce everything (at most once per 5 s), counted under
        ``reason`` (:data:`REBIRTH_REASONS`). Returns if sent."""
        if not self.request_rebirth or not self.bus.connected:
            return False
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_rebirth.get(agent_id, -1e9) < REBIRTH_INTERVAL_S:
            return False
        try:
            target = CallTarget(agent_id)
        except CallRefused:  # an id from a gateway's agent list that is no agent id
            self._log_gaps.warn(
                agent_id, "bad id", "no rebirth request to %r: not a valid agent id", agent_id
            )
            return False
        self._last_rebirth[agent_id] = loop_now
        self.rebirths_requested += 1
        self.rebirths_by_reason[reason] = self.rebirths_by_reason.get(reason, 0) + 1
        self._tasks.spawn(
            self.caller.call(target, _rebirth(), reply=False), name=f"rebirth {agent_id}"
        )
        return True

    async def settle(self, quiet_s: float = 0.3, max_s: float = 3.0) -> None:
        """Wait until no message arrived for ``quiet_s`` (real s), at most ``max_s``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        self._last_message = max(self._last_message, start)
        while loop.time() - start < max_s:
            idle = loop.time() - self._last_message
            if idle >= quiet_s:
                return
            await asyncio.sleep(quiet_s - idle)

    # -- queries and commands -----------------------------------------------------
    def agents(self) -> list[AgentRecord]:
        """Every known agent, by id."""
        agents = self.registry.agents
        return [agents[agent_id] for agent_id in self.registry.sorted_ids()]

    def reset_agent(self, agent_id: str) -> AgentRecord:
        """Operator action: forget an agent's session state (a forged or broken status
        that locked it out), save that, and ask the agent to re-announce. ``KeyError`` for
        an unknown agent."""
        events = self.registry.reset(agent_id)
        record = self.registry.agents[agent_id]
        if self.recorder is not None:
            from sef.ems._recorder import agent_row

            self.recorder.agent(agent_row(record))
            for event in events:
                self.recorder.event(agent_id, self.clock.now(), event.kind, str(event.detail))
        for event in events:
            self._react(event)
        self._last_rebirth.pop(agent_id, None)
        self.rebirth(agent_id)
        return record

    def approve_agent(self, agent_id: str) -> bool:
        """Operator action: admit ``agent_id`` (waiting for approval, or not seen yet) and
        ask it to re-announce. Returns whether it was waiting."""
        check_id("agent", agent_id)
        waiting = self.registry.approve(agent_id)
        self._last_rebirth.pop(agent_id, None)
        self.rebirth(agent_id)
        return waiting

    def interface_for(self, name: str) -> Interface | None:
        """The definition of interface ``name``: learned from agents, else a shipped one."""
        iface = self.registry.interface(name)
        if iface is not None:
            return iface
        try:
            return builtin_interface(name)
        except KeyError:
            return None

    def check(self, interface: str, method: str, args: Any) -> CheckedArgs:
        """Check a call of ``interface.method`` with ``args`` (a JSON array) against the
        interface known here (learned from agents, else shipped); :class:`CallRefused` if
        the interface is unknown or the arguments do not fit."""
        iface = self.interface_for(interface)
        if iface is None:
            raise CallRefused(f"unknown interface {interface!r}: no agent announced it")
        return check_args(iface, interface, method, args)

    async def call(
        self,
        target: str | CallTarget,
        interface: str,
        method: str,
        args: Sequence[Any],
        *,
        reply: bool = True,
        timeout_s: float = 5.0,
        ttl_s: float | None = None,
        call_id: str | None = None,
        sent_by: str | None = None,
    ) -> list[Reply]:
        """Call a method on an agent or a group (``group:NAME``).

        Target and arguments are validated (:meth:`check`) before anything is sent
        (:class:`CallRefused` otherwise; the refusal is logged). See :meth:`send` for the
        rest.
        """
        call_id = call_id or uuid.uuid4().hex
        try:
            dest = target if isinstance(target, CallTarget) else CallTarget.parse(target)
            checked = self.check(interface, method, args)
        except CallRefused as exc:
            await self._log_command(
                call_id, str(target), interface, method, args, "refused", str(exc), sent_by=sent_by
            )
            raise
        return await self.send(
            dest,
            checked,
            reply=reply,
            timeout_s=timeout_s,
            ttl_s=ttl_s,
            call_id=call_id,
            sent_by=sent_by,
        )

    async def send(
        self,
        target: CallTarget,
        call: CheckedArgs,
        *,
        reply: bool = True,
        timeout_s: float = 5.0,
        ttl_s: float | None = None,
        call_id: str | None = None,
        sent_by: str | None = None,
    ) -> list[Reply]:
        """Send a checked call (:meth:`check`) to an agent or a group; nothing is checked
        again.

        A group call waits for one reply per known member, or until ``timeout_s``.
        ``call_id`` (default: a new UUID) is the correlation id on the bus and the key of
        the command log entry; ``sent_by`` (default: this EMS's id) names who sent it in
        the log (the API passes its caller's token name).
        """
        call_id = call_id or uuid.uuid4().hex
        members = self._members(target)
        ttl = ttl_s if ttl_s is not None else self.clock.to_clock(self.caller.default_ttl_s)
        self.reconciler.note(members or (), call, self.clock.now(), call_id)
        await self._log_command(
            call_id,
            str(target),
            call.interface,
            call.method,
            call.args,
            "sent",
            expires=self.clock.now() + ttl if reply else None,
            sent_by=sent_by,
        )
        replies = await self.caller.call(
            target,
            call,
            reply=reply,
            timeout_s=timeout_s,
            members=members,
            ttl_s=ttl,
            call_id=call_id,
        )
        open_call = self.caller.get(call_id)
        if self.store is not None and reply and open_call is not None:
            await self._write_outcome(open_call)
        return replies

    async def _log_command(
        self,
        call_id: str,
        target: str,
        interface: str,
        method: str,
        args: Sequence[Any],
        status: str,
        error: str | None = None,
        *,
        expires: float | None = None,
        sent_by: str | None = None,
    ) -> None:
        if self.store is not None:
            await asyncio.to_thread(
                self.store.log_command,
                call_id,
                self.clock.now(),
                self.bus.client_id,
                target,
                interface,
                method,
                list(args),
                status,
                error,
                expires,
                sent_by or self.bus.client_id,
            )


def _reply_from_record(call_id: str, record: dict[str, Any]) -> Reply:
    """A reply as the command log keeps it (:func:`~sef.ems._caller.reply_record`), back."""
    outcome = record.get("outcome")
    return Reply(
        call_id,
        str(record.get("agent")),
        bool(record.get("ok")),
        list(record.get("result") or []),
        record.get("error"),
        record.get("message"),
        applied={"applied": True, "not_applied": False}.get(str(outcome)),
        fault=record.get("fault"),
        fault_message=record.get("fault_message"),
    )


async def snapshot(
    broker: BrokerURL | str,
    *,
    clock: Clock | None = None,
    topics: Topics | None = None,
    quiet_s: float = 0.3,
    max_s: float = 3.0,
) -> list[AgentRecord]:
    """Read the agents' retained state from the broker without announcing an EMS."""
    ems = EMS(
        broker,
        "snapshot",
        clock=clock,
        topics=topics,
        announce=False,
        request_rebirth=False,
        admission=Admission.open(),
    )
    await ems.start()
    try:
        await ems.settle(quiet_s, max_s)
        return ems.agents()
    finally:
        await ems.stop()
