"""Agent base: implement a DER interface on the SEF bus by declaring it and writing methods.

Example::

    class Heater(Agent):
        interfaces = ("edu.pdx.powerlab.demo",)

        @method("edu.pdx.powerlab.demo", "EnergyMethod")
        async def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
            ...

    await Heater("wh1", "mqtt://localhost").run()

Incoming arguments are validated against the method's D-Bus signature before user code
runs. A bad call is logged and, when the caller asked for a reply, answered with an
error; the agent keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from sef.agents._backfill import BACKFILL_LIMIT, Backfill, BufferedUpdate
from sef.agents._blobs import InterfaceBlobs
from sef.agents._calls import CallServer
from sef.agents._declare import AboutInfo, AgentError
from sef.agents._sealing import TelemetrySeals, make_sealer
from sef.bus import (
    About,
    BrokerURL,
    BusClient,
    BusError,
    InterfaceRef,
    Message,
    PayloadError,
    PropertyUpdate,
    Session,
    SignalEmission,
    Status,
    TopicKind,
    Topics,
    Will,
    bdseq_problem,
    check_id,
    decode_object,
)
from sef.clock import Clock, default_clock
from sef.interface import (
    AGENT_INTERFACE,
    Interface,
    args_to_json,
    builtin_xml,
    load_xml,
    to_json,
    validate,
)
from sef.logthrottle import LogThrottle
from sef.security import WINDOW_MESSAGES, WINDOW_S, Security

__all__ = ["Agent"]

log = logging.getLogger("sef.agent")


class Agent:
    """Base class of every agent (BIS, UCM, ...).

    Subclasses set :attr:`interfaces` (names of shipped interfaces, or pass XML texts in
    ``interface_xml``) and mark handlers with :func:`method`. Properties are set with
    :meth:`set_property`; each change is one retained publish.

    Args:
        agent_id: unique id on the bus (also the MQTT client id).
        broker: broker URL.
        clock: clock for timestamps and expiry checks (default: ``SEF_CLOCK`` or real).
        groups: groups whose calls this agent obeys.
        about: About fields.
        interface_xml: extra interface XML texts by interface name.
        keepalive_s: MQTT keepalive, s; a dead agent is reported offline by the broker
            within 1.5 × this.
        security: this agent's certificate, key and trust store: connects over mutual
            TLS, executes only calls signed by an EMS of the deployment CA and signs its
            replies (``None``: plaintext and unsigned, for ``--insecure`` deployments).
        sign_telemetry: seal the telemetry (property updates and signals) in signed
            windows for an EMS that does not trust the broker (``docs/protocol.md``,
            "Signed telemetry"): ``True`` signs with ``security``, or pass the
            credentials to sign with. Off by default: the broker's ACL authenticates
            telemetry.
        seal_window_s: a telemetry window is sealed at the latest this long after its
            first message, real s.
        seal_window_messages: most messages in one sealed window.
        backfill_limit: property updates kept while disconnected (and those whose PUBACK
            never came), published again after the next birth (``docs/protocol.md``
            §4.7); past it the oldest are dropped and counted (:attr:`backfill`).
        interface_topics: where the interface XML goes (``docs/protocol.md`` §4.2):
            ``"v2"`` once per hash on ``{root}/interfaces/{sha256}``, published only
            when the broker does not retain it yet; ``"v1"`` on the agent's own
            ``{root}/agents/{id}/interfaces/{name}`` at every birth (for an EMS of SEF
            0.1, protocol version 1, which reads no hash topic and then knows only the
            shipped interfaces); ``"both"`` both (:class:`~sef.agents._blobs.
            InterfaceBlobs`). Default: the environment variable ``SEF_INTERFACE_TOPICS``
            (for agents started by the CLI), else :attr:`default_interface_topics`.
    """

    interfaces: ClassVar[Sequence[str]] = ()
    default_interface_topics: ClassVar[str] = "v2"
    """Where the interface XML goes when neither ``interface_topics`` nor the environment
    says (``"v2"``, ``"v1"`` or ``"both"``)."""
    max_seen_calls: ClassVar[int] = 4096

    def __init__(
        self,
        agent_id: str,
        broker: BrokerURL | str,
        *,
        clock: Clock | None = None,
        groups: Sequence[str] = (),
        about: AboutInfo | None = None,
        interface_xml: dict[str, str] | None = None,
        keepalive_s: int = 10,
        topics: Topics | None = None,
        security: Security | None = None,
        sign_telemetry: bool | Security = False,
        seal_window_s: float = WINDOW_S,
        seal_window_messages: int = WINDOW_MESSAGES,
        backfill_limit: int = BACKFILL_LIMIT,
        interface_topics: str | None = None,
    ) -> None:
        self.agent_id = check_id("agent", agent_id)
        self.security = security
        self.sealer = make_sealer(
            self.agent_id, security, sign_telemetry, seal_window_s, seal_window_messages
        )
        self._seal_task: asyncio.Task[None] | None = None
        self._seals: TelemetrySeals | None = None
        self.backfill = Backfill(self.agent_id, backfill_limit)
        self._flush_task: asyncio.Task[int] | None = None
        self.groups = [check_id("group", g) for g in groups]
        self.clock = clock or default_clock()
        self.topics = topics or Topics()
        self.about = about or AboutInfo()
        self.session = Session()
        self.host_online: dict[str, bool] = {}
        self.host_bdseq: dict[str, int] = {}
        self._bad_host_status = LogThrottle(log, "bad host statuses")
        self._xml: dict[str, str] = {}
        self._interfaces: dict[str, Interface] = {}
        for name in (*self.interfaces, AGENT_INTERFACE):
            self._add_interface(
                name,
                builtin_xml(name)
                if name not in (interface_xml or {})
                else (interface_xml or {})[name],
            )
        for name, xml in (interface_xml or {}).items():
            if name not in self._interfaces:
                self._add_interface(name, xml)
        self._handlers = self._collect_handlers()
        self._worker: asyncio.Task[None] | None = None
        self._properties: dict[tuple[str, str], Any] = {}
        self._prefix = self.topics.agent_prefix(self.agent_id)
        self.bus = BusClient(
            broker,
            self.agent_id,
            on_message=self._on_message,
            will=self._make_will,
            on_connect=self._on_connect,
            keepalive_s=keepalive_s,
            tls=security.client_tls() if security is not None else None,
        )
        self.blobs = InterfaceBlobs(
            self.agent_id,
            self.bus,
            self.topics,
            self._xml,
            interface_topics
            or os.environ.get("SEF_INTERFACE_TOPICS")
            or self.default_interface_topics,
        )
        if self.sealer is not None:
            self._seals = TelemetrySeals(
                self.sealer, self.bus, self.topics.seal(self.agent_id), self.agent_id
            )
        self.calls = CallServer(
            self.agent_id,
            self.bus,
            self.topics,
            self.clock,
            self._interfaces,
            self._handlers,
            max_seen_calls=self.max_seen_calls,
            security=security,
            on_arrival=self._call_arriving,
        )

    def _call_arriving(self, interface: str, method: str) -> bool:
        """A call of ``interface.method`` arrived, not yet checked: start the reads it
        will need, if any (:meth:`sef.agents.DeviceAdapter.prepare`); returns whether
        any started. The base agent starts none."""
        return False

    @property
    def calls_rejected(self) -> int:
        """Calls refused so far (unreadable, invalid, expired, unknown, refused)."""
        return self.calls.rejected

    # -- declaration --------------------------------------------------------------
    def _add_interface(self, name: str, xml: str) -> None:
        node = load_xml(xml, source=f"<interface {name}>")
        if name not in node.interfaces:
            raise AgentError(f"interface XML for {name!r} does not define {name!r}")
        self._interfaces[name] = node.interfaces[name]
        self._xml[name] = xml

    def _collect_handlers(self) -> dict[tuple[str, str], Callable[..., Any]]:
        handlers: dict[tuple[str, str], Callable[..., Any]] = {}
        for attr in dir(type(self)):
            func = getattr(type(self), attr, None)
            key = getattr(func, "_sef_method", None)
            if key is not None:
                handlers[key] = getattr(self, attr)
        handlers[(AGENT_INTERFACE, "Rebirth")] = self._rebirth
        handlers[(AGENT_INTERFACE, "Ping")] = self._ping
        for declared, name in handlers:
            if declared not in self._interfaces:
                raise AgentError(
                    f"handler for {declared}.{name}: agent does not declare {declared}"
                )
            if name not in self._interfaces[declared].methods:
                raise AgentError(f"handler for {declared}.{name}: no such method in the interface")
        for iface_name, iface in self._interfaces.items():
            for method_name in iface.methods:
                if (iface_name, method_name) not in handlers:
                    raise AgentError(
                        f"agent declares {iface_name} but has no handler for {method_name}"
                    )
        return handlers

    def interface(self, name: str) -> Interface:
        return self._interfaces[name]

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Connect, announce, and start serving calls."""
        for pattern in (
            f"{self._prefix}/call/+/+",
            f"{self._prefix}/status",
            self.topics.all_hosts(),
            *(f"{self.topics.root}/groups/{g}/call/+/+" for g in self.groups),
        ):
            await self.bus.subscribe(pattern, qos=1)
        self._worker = asyncio.create_task(self.calls.serve(), name=f"agent:{self.agent_id}")
        if self._seals is not None:
            self._seal_task = asyncio.create_task(self._seals.run(), name=f"seal:{self.agent_id}")
        await self.on_start()
        await self.bus.start()

    async def stop(self) -> None:
        """Announce a clean shutdown (offline, reason ``shutdown``) and disconnect."""
        await self.on_stop()
        self.blobs.cancel()
        for task in (self._worker, self._seal_task, self._flush_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._seals is not None:
            self._seals.publish()  # the last window, before the goodbye

        async def goodbye() -> None:
            status = Status(
                False,
                self.session.bdseq,
                self.clock.now(),
                None,
                self.session.next_seq(),
                "shutdown",
            )
            self.bus.publish(self.topics.status(self.agent_id), status.to_payload(), retain=True)
            await asyncio.sleep(0.05)

        await self.bus.stop(before_disconnect=goodbye)
        self.backfill.discard()

    async def run(self) -> None:
        """Run until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())

    async def on_start(self) -> None:
        """Hook: called once before the first connection (set initial properties here)."""

    async def on_stop(self) -> None:
        """Hook: called once on shutdown."""

    def on_host_status(self, host_id: str, online: bool) -> None:
        """Hook: an EMS (primary host) went online or offline."""

    # -- properties and signals ---------------------------------------------------
    def set_property(self, interface: str, name: str, value: Any) -> bool:
        """Set a property; publish it (retained) if it changed. Returns whether it changed.

        While disconnected (after the first connection) the update is buffered and
        published after the next birth (:class:`~sef.agents._backfill.Backfill`).

        Raises :class:`AgentError` for an unknown property and
        :class:`~sef.interface.TypeMismatch` for a value that does not fit its type.
        """
        iface = self._interfaces.get(interface)
        if iface is None or name not in iface.properties:
            raise AgentError(f"agent {self.agent_id} has no property {interface}.{name}")
        prop = iface.properties[name]
        value = validate(prop.type, value, path=name)
        key = (interface, name)
        if self._properties.get(key, _MISSING) == value:
            return False
        self._properties[key] = value
        if prop.emits_changed in ("true", "invalidates"):
            self._publish_property(interface, name)
        return True

    def get_property(self, interface: str, name: str) -> Any:
        return self._properties[(interface, name)]

    def emit_signal(self, interface: str, name: str, *args: Any) -> None:
        """Publish a signal (not retained)."""
        signal = self._interfaces[interface].signals[name]
        emission = SignalEmission(
            args_to_json(signal.args, list(args)), self.clock.now(), self.session.next_seq()
        )
        topic, payload = self.topics.signal(self.agent_id, interface, name), emission.to_payload()
        self.bus.publish(topic, payload)
        self._seal_add(topic, emission.seq, payload)

    def _publish_property(self, interface: str, name: str) -> None:
        """Publish the property's value now, or buffer it while disconnected."""
        prop = self._interfaces[interface].properties[name]
        value = to_json(prop.type, self._properties[(interface, name)])
        topic = self.topics.prop(self.agent_id, interface, name)
        update = BufferedUpdate(topic, interface, name, value, self.clock.now())
        if not self._send_update(update) and self.bus.connections:  # not before the first birth
            self.backfill.keep(update)

    def _send_update(self, update: BufferedUpdate) -> bool:
        """Publish one update with the session's next seq (a backfilled one not retained,
        §4.7), seal it and follow its PUBACK. Returns whether it was published."""
        if not self.bus.connected:
            return False
        message = PropertyUpdate(update.value, update.ts, self.session.next_seq(), update.backfill)
        payload = message.to_payload()
        try:
            acked = self.bus.publish_acked(update.topic, payload, retain=not update.backfill)
        except BusError as exc:
            log.debug("property %s.%s not published: %s", update.interface, update.name, exc)
            return False
        self.backfill.sent(acked, update)
        self._seal_add(update.topic, message.seq, payload)
        return True

    def _seal_add(self, topic: str, seq: int | None, payload: bytes) -> None:
        if self._seals is not None and seq is not None:
            self._seals.add(topic, seq, payload)

    # -- birth --------------------------------------------------------------------
    def _make_will(self) -> Will:
        bdseq = self.session.new_session()
        return Will(
            self.topics.status(self.agent_id), Status(False, bdseq, reason="will").to_payload()
        )

    async def _on_connect(self) -> None:
        self.backfill.reconnected()  # the updates the last connection lost join the buffer
        self._publish_birth(check_blobs=True)
        if len(self.backfill):
            self._start_flush()

    def _start_flush(self) -> None:
        """Publish the buffered updates after the birth, paced, on this connection only."""
        if self._flush_task is not None:
            self._flush_task.cancel()
        connection = self.bus.connections
        log.info("agent %s: backfilling %d property updates", self.agent_id, len(self.backfill))
        self._flush_task = asyncio.create_task(
            self.backfill.flush(
                self._send_update,
                lambda: self.bus.connected and self.bus.connections == connection,
            ),
            name=f"backfill:{self.agent_id}",
        )

    def _publish_birth(self, *, check_blobs: bool = False) -> None:
        """Birth sequence: status online (seq 0), About, interface XML, every property.

        The XML goes per agent (protocol version 1) and/or once per hash (version 2;
        with ``check_blobs`` only the XML the broker does not retain yet, a little after
        the rest of the birth), as ``interface_topics`` says."""
        now = self.clock.now()
        if self._seals is not None:  # the window of the previous birth, then a new chain
            self._seals.new_session(self.session.bdseq)
        self.session.seq = 0
        status = Status(
            True, self.session.bdseq, now, self.bus.keepalive_s, self.session.next_seq()
        )
        self.bus.publish(self.topics.status(self.agent_id), status.to_payload(), retain=True)
        refs = [
            InterfaceRef(name, hashlib.sha256(xml.encode()).hexdigest())
            for name, xml in self._xml.items()
        ]
        about = About(
            self.about.fields(self.agent_id),
            refs,
            list(self.groups),
            self.session.bdseq,
            now,
            self.session.next_seq(),
        )
        self.bus.publish(self.topics.about(self.agent_id), about.to_payload(), retain=True)
        if self.blobs.per_agent:
            for name, xml in self._xml.items():
                self.bus.publish(
                    self.topics.interface_xml(self.agent_id, name), xml.encode(), retain=True
                )
        if self.blobs.per_hash:
            if check_blobs:
                self.blobs.check_and_publish()
            else:  # a Rebirth: the EMS may be missing one, or the broker's copy be altered
                self.blobs.publish_all()
        for interface, name in list(self._properties):
            self._publish_property(interface, name)
        log.info("agent %s born (bdseq %d)", self.agent_id, self.session.bdseq)

    # -- incoming messages --------------------------------------------------------
    def _on_message(self, message: Message) -> None:
        parsed = self.topics.parse(message.topic)
        if parsed is None:
            return
        if parsed.kind is TopicKind.STATUS:
            self._check_own_status(message)
        elif parsed.kind is TopicKind.HOST_STATUS:
            self._host_status(parsed.owner, message)
        elif parsed.kind is TopicKind.INTERFACE_BLOB:
            self.blobs.receive(parsed.owner, message)
        elif parsed.kind in (TopicKind.CALL, TopicKind.GROUP_CALL):
            assert parsed.interface is not None and parsed.member is not None
            self.calls.receive(parsed.interface, parsed.member, message)

    def _check_own_status(self, message: Message) -> None:
        """Repair a stale death: a will of an older session overwrote our retained birth.

        Only a live delivery counts. The retained status that the subscription brings back
        at each reconnection (the previous connection's will) was retained before this
        session's birth, which supersedes it (``docs/protocol.md`` §4.3).
        """
        if message.retain:
            return
        try:
            status = Status.from_object(decode_object(message.payload))
        except PayloadError:
            return
        if not status.online and status.bdseq < self.session.bdseq and self.bus.connected:
            log.info(
                "agent %s: stale death (bdseq %d) replaced by status of session %d",
                self.agent_id,
                status.bdseq,
                self.session.bdseq,
            )
            repair = Status(
                True,
                self.session.bdseq,
                self.clock.now(),
                self.bus.keepalive_s,
                self.session.next_seq(),
            )
            self.bus.publish(message.topic, repair.to_payload(), retain=True)

    def _host_status(self, host_id: str, message: Message) -> None:
        try:
            status = Status.from_object(decode_object(message.payload))
        except PayloadError as exc:
            self._bad_host_status.warn(
                host_id, "unreadable", "agent %s: bad host status from %s: %s", self.agent_id,
                host_id, exc,
            )  # fmt: skip
            return
        problem = bdseq_problem(status.bdseq, time.time())
        if problem is not None:  # forged: it would make the host's real sessions look stale
            self._bad_host_status.warn(
                host_id, "bdseq", "agent %s: host %s status ignored: %s", self.agent_id,
                host_id, problem,
            )  # fmt: skip
            return
        last = self.host_bdseq.get(host_id)
        if last is not None and status.bdseq < last:
            log.info(
                "agent %s: stale status of host %s ignored (bdseq %d < %d)",
                self.agent_id,
                host_id,
                status.bdseq,
                last,
            )
            return
        if not status.online and self.host_online.get(host_id) and status.bdseq > (last or 0):
            # a death of a session that never announced itself while we see the host
            # online: forged (a real will follows its own session's birth)
            self._bad_host_status.warn(
                host_id, "unannounced session", "agent %s: offline status of host %s ignored: "
                "session %d never announced itself (host online in session %s)", self.agent_id,
                host_id, status.bdseq, last,
            )  # fmt: skip
            return
        self.host_bdseq[host_id] = status.bdseq
        if self.host_online.get(host_id) != status.online:
            self.host_online[host_id] = status.online
            log.info(
                "agent %s: host %s is %s",
                self.agent_id,
                host_id,
                "online" if status.online else "offline",
            )
            self.on_host_status(host_id, status.online)

    # -- built-in sef.Agent methods ------------------------------------------------
    def _rebirth(self) -> None:
        log.info("agent %s: rebirth requested", self.agent_id)
        self._publish_birth()

    def _ping(self) -> float:
        return self.clock.now()


_MISSING = object()
