"""The MQTT connection every SEF process uses, behind a small interface of our own.

The MQTT library (gmqtt) stays inside this module. :class:`BusClient` owns one
connection at a time and a supervisor task that reconnects with exponential backoff
(which starts again from its shortest delay only after a connection that held 10 s);
each new connection may carry a new last will (a new birth/death sequence number), then
the client resubscribes and calls ``on_connect`` so the owner re-announces itself.

A comma-separated list of URLs (or a sequence of them) is a list of brokers, e.g. the
nodes of a clustered broker (:mod:`sef.bus._url_list`): the client starts at a node
chosen by its client id (so a fleet spreads evenly) and moves on to the next one after a
failed attempt or a lost connection, one warning per move; :attr:`BusClient.url` is the
node in use. A refused subscription (SUBACK 0x80) is asked for again with backoff, then
the connection is dropped (:mod:`sef.bus._suback`).

Instead of a fixed URL the client may be given a *resolver*, an async callable returning
the broker's URL. It is awaited before the first connection and again after every failed
attempt or lost connection, so a client follows a broker that comes back at another
address or port. Layers above the bus register resolvers for URL schemes with
:meth:`BusClient.register_scheme` (importing :mod:`sef.discovery` registers ``mdns://``);
the bus itself imports none of them.

With ``manual_ack`` a QoS 1 message is acknowledged only once the future its handler
returned succeeded (:mod:`sef.bus._acks`, the one place that uses gmqtt internals).
:meth:`BusClient.publish_acked` is the other direction: a QoS 1 publish whose future says
whether the broker acknowledged it (PUBACK) before its connection ended.

A connection's writes are coalesced (:mod:`sef.bus._coalesce`; on by default, off with
``coalesce_writes=False`` or ``SEF_BUS_COALESCE=0``): what gmqtt writes within one event-loop
iteration (e.g. the PUBACKs of a burst of QoS 1 messages) reaches the socket as one write,
the same bytes in the same order (1.4-1.85x the messages per CPU second of a QoS 1 drain,
``bench/bus_write_coalescing.py``). A clean :meth:`BusClient.stop` first waits until the
broker has read everything written (an UNSUBSCRIBE and its UNSUBACK): a burst of PUBACKs
in one write is many packets, which Mosquitto reads one per pass over its sockets, and a
restart that connected again at once with the same client id used to get the messages of
the PUBACKs not read yet a second time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from sef.bus._acks import Acknowledger, PubackTracker, check_puback
from sef.bus._coalesce import WriteStats
from sef.bus._coalesce import install as install_coalescing
from sef.bus._message import BusError, Message
from sef.bus._suback import SubackRetry, subscribe_with_retry
from sef.bus._url_list import UrlListResolver, is_url_list, start_index

__all__ = [
    "SESSION_TAKEN_OVER",
    "BrokerResolver",
    "BrokerURL",
    "BusClient",
    "BusError",
    "ConnectionLost",
    "Message",
    "Will",
]

log = logging.getLogger("sef.bus")

COALESCE_ENV = "SEF_BUS_COALESCE"
"""Environment variable: ``0`` (or ``off``/``false``/``no``) turns write coalescing off for
clients that do not choose (``coalesce_writes=None``); on by default (module docstring)."""

STOP_BARRIER_TOPIC = "sef/_stop-barrier"
"""A filter no SEF client subscribes: :meth:`BusClient.stop` unsubscribes from it and waits
for the UNSUBACK, to know that the broker read everything written before."""
STOP_BARRIER_S = 2.0
"""How long :meth:`BusClient.stop` waits for that UNSUBACK, s."""

SESSION_TAKEN_OVER = 0x8E
"""MQTT 5 DISCONNECT reason code: another client connected with this client id."""
BACKOFF_RESET_AFTER_S = 10.0
"""A connection must stay up this long (real s) before the reconnection backoff starts
again from its shortest delay (``docs/protocol.md`` §1)."""


@dataclass(frozen=True)
class ConnectionLost:
    """How a connection ended, for :class:`BusClient`'s ``on_lost`` hook.

    ``reason_code`` is the reason code of the broker's MQTT 5 DISCONNECT (e.g.
    :data:`SESSION_TAKEN_OVER`), ``None`` when the broker sent none (MQTT 3.1.1 brokers
    just close the socket); ``lasted_s`` how long the connection had been up (real s).
    """

    reason_code: int | None
    lasted_s: float

    @property
    def taken_over(self) -> bool:
        """Whether the broker said another client took the session over (MQTT 5 only)."""
        return self.reason_code == SESSION_TAKEN_OVER


@dataclass(frozen=True)
class BrokerURL:
    """Where the broker is: ``mqtt[s]://[user[:password]@]host[:port][?version=3.1.1|5]``.

    ``mqtts://`` is MQTT over TLS (default port 8883): the :class:`BusClient` then needs
    a TLS context (its ``tls`` argument)."""

    host: str = "127.0.0.1"
    port: int = 1883
    version: int = 4  # 4 = MQTT 3.1.1, 5 = MQTT 5
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        if "," in url:
            raise BusError(
                f"{url!r} is a list of brokers: one broker URL is expected here "
                "(a comma in a user name or password is written %2C)"
            )
        text = url if "://" in url else f"mqtt://{url}"
        parts = urlsplit(text)
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise BusError(
                f"unsupported broker URL scheme {parts.scheme!r} in {url!r}: use "
                "mqtt://, mqtts://, or a scheme registered with BusClient.register_scheme "
                "(importing sef.discovery registers mdns://)"
            )
        try:
            tls = parts.scheme in ("mqtts", "ssl")
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise BusError(f"bad port in broker URL {url!r}: {exc}") from None
        if not parts.hostname:
            raise BusError(f"broker URL {url!r} has no host")
        version_text = parse_qs(parts.query).get("version", ["3.1.1"])[-1]
        versions = {"3.1.1": 4, "311": 4, "4": 4, "5": 5, "5.0": 5}
        if version_text not in versions:
            raise BusError(f"unsupported MQTT version {version_text!r}: use 3.1.1 or 5")
        return cls(
            parts.hostname,
            port,
            versions[version_text],
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            tls,
        )

    def __str__(self) -> str:
        version = "5" if self.version == 5 else "3.1.1"
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}?version={version}"


@dataclass(frozen=True)
class _Unresolved(BrokerURL):
    """Placeholder :attr:`BusClient.url` until a resolver found the broker."""

    label: str = ""

    def __str__(self) -> str:
        return self.label


BrokerResolver = Callable[[], Awaitable[BrokerURL]]
"""Finds the broker: awaited before each connection attempt that follows a failure."""


@dataclass(frozen=True)
class Will:
    """Last will: published by the broker when the connection dies uncleanly."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class _OneShotClient(gmqtt.Client):  # type: ignore[misc]
    """A gmqtt client that never reconnects by itself: :class:`BusClient` does that.

    With ``write_stats`` set, each connection's writes are coalesced into one transport
    write per event-loop iteration (:mod:`sef.bus._coalesce`), counted there."""

    write_stats: WriteStats | None = None

    async def reconnect(self, delay: bool = False) -> None:
        return None

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super()._create_connection(*args, **kwargs)
        if self.write_stats is not None:
            try:
                install_coalescing(connection, self.write_stats)
            except TypeError as exc:  # a changed gmqtt: keep its plain writes
                log.warning("write coalescing off for %s: %s", self._client_id, exc)
        return connection


MessageHandler = Callable[[Message], object]
"""Called for every received message; with ``manual_ack`` it may return an
:class:`asyncio.Future` that the acknowledgement of a QoS 1 message waits for."""


@dataclass
class _Backoff:
    initial_s: float = 0.1
    maximum_s: float = 10.0
    current_s: float = field(init=False, default=0.0)

    def reset(self) -> None:
        self.current_s = 0.0

    def next(self) -> float:
        self.current_s = min(self.maximum_s, max(self.initial_s, self.current_s * 2))
        return self.current_s * random.uniform(0.8, 1.2)


class BusClient:
    """One MQTT session, kept alive across broker restarts.

    Args:
        url: the broker: a URL (``mqtt://...``, or one of a scheme registered with
            :meth:`register_scheme`, e.g. ``mdns://[NAME]`` once :mod:`sef.discovery` is
            imported), a list of brokers (``"mqtt://a:1883,mqtt://b:1883"`` or a
            sequence; failover, same scheme for all; ``tls`` and credentials apply to
            every node), or a :data:`BrokerResolver`, re-run after every failed attempt
            or lost connection.
        client_id: MQTT client id (unique per process; a random one if ``None``).
        on_message: called for every received message, in the event loop.
        will: returns the last will for the next connection, or ``None`` for no will.
        on_connect: awaited after every (re)connection and resubscription.
        on_lost: called with a :class:`ConnectionLost` when an established connection
            ends (not on :meth:`stop`); when it returns ``True`` the reconnection backoff
            keeps growing even after a connection that lasted ``backoff_reset_after_s``
            (e.g. while another client keeps taking this client id over).
        keepalive_s: MQTT keepalive, s.
        clean_session: start each connection with a clean session. ``False`` keeps a
            persistent session in the broker (subscriptions and unacknowledged QoS 1
            messages survive a disconnect; MQTT 5 sessions never expire).
        manual_ack: acknowledge a QoS 1 message only once the :class:`asyncio.Future`
            that ``on_message`` returns for it succeeded (e.g. the commit of its rows);
            a failed or cancelled future is never acknowledged: the client reconnects
            and the broker delivers the message again (see :class:`sef.bus._acks.
            Acknowledger`). Raises :class:`sef.bus._acks.GmqttChanged` if the installed
            gmqtt is not one this was tested with. Subscriptions are QoS 0 or 1.
        tls: connect over TLS with this context (client certificate and trusted CA, see
            :meth:`sef.security.Security.client_tls`); required for ``mqtts://`` URLs,
            and used for any other URL when given.
        backoff_reset_after_s: the reconnection backoff starts again from its shortest
            delay only after a connection that stayed up at least this long (real s).
            A connection lost sooner (e.g. two processes sharing a client id take the
            session from each other) lets the backoff keep growing to its maximum, so
            they reconnect every few seconds instead of ten times a second.
        coalesce_writes: hand the writes gmqtt makes within one event-loop iteration
            (e.g. the PUBACKs of a burst of QoS 1 messages) to the socket as one write
            (:mod:`sef.bus._coalesce`; same bytes in the same order, fewer system
            calls). ``None``: on unless the environment sets ``SEF_BUS_COALESCE=0``.
    """

    _schemes: ClassVar[dict[str, Callable[[str], BrokerResolver]]] = {}

    @classmethod
    def register_scheme(cls, scheme: str, resolver: Callable[[str], BrokerResolver]) -> None:
        """Let broker URLs ``SCHEME://...`` (and a bare ``SCHEME`` or ``SCHEME:``) select a
        resolver: ``resolver(url)`` returns the :data:`BrokerResolver` to use. Layers above
        the bus register theirs (:mod:`sef.discovery`: ``mdns``); registering a scheme
        again replaces its resolver."""
        cls._schemes[scheme.lower()] = resolver

    @classmethod
    def _registered(cls, url: str) -> Callable[[str], BrokerResolver] | None:
        text = url.strip().lower()
        return cls._schemes.get(text.split("://", 1)[0] if "://" in text else text.rstrip(":"))

    def __init__(
        self,
        url: BrokerURL | str | Sequence[str] | BrokerResolver,
        client_id: str | None = None,
        *,
        on_message: MessageHandler | None = None,
        will: Callable[[], Will | None] | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[ConnectionLost], bool | None] | None = None,
        keepalive_s: int = 10,
        clean_session: bool = True,
        manual_ack: bool = False,
        tls: ssl.SSLContext | None = None,
        backoff_reset_after_s: float = BACKOFF_RESET_AFTER_S,
        coalesce_writes: bool | None = None,
    ) -> None:
        self.tls = tls
        if coalesce_writes is None:
            setting = os.environ.get(COALESCE_ENV, "1").strip().lower()
            coalesce_writes = setting not in ("0", "off", "false", "no")
        self.write_stats: WriteStats | None = WriteStats() if coalesce_writes else None
        """Counters of the coalesced writes over all connections (``None`` when off)."""
        self.backoff_reset_after_s = backoff_reset_after_s
        self.resolver: BrokerResolver | None = None
        self.client_id = client_id or f"sef-{uuid.uuid4().hex[:12]}"
        if is_url_list(url):
            nodes = UrlListResolver(url)
            url = nodes.nodes[0] if len(nodes.nodes) == 1 else nodes
            if isinstance(url, UrlListResolver):
                url.position = start_index(self.client_id, len(url.nodes))
        if isinstance(url, str) and (scheme_resolver := self._registered(url)) is not None:
            url = scheme_resolver(url)
        if isinstance(url, BrokerURL):
            self.url: BrokerURL = url
        elif isinstance(url, str):
            self.url = BrokerURL.parse(url)
        elif isinstance(url, UrlListResolver):
            self.resolver = url
            self.url = url.next_node  # the node tried first
        else:
            self.resolver = url  # type: ignore[assignment]
            self.url = _Unresolved(label=str(url))
        self._resolved: BrokerURL | None = None
        self._why_moving = ""
        """Why the next connection attempt is made (for the failover log line)."""
        self.suback_retry = SubackRetry()
        """How a refused subscription is asked for again before the connection is dropped."""
        self.keepalive_s = keepalive_s
        self.clean_session = clean_session
        self.manual_ack = manual_ack
        self._on_message = on_message or (lambda message: None)
        # checks gmqtt's internals now: fail here, loudly, not by stalling ingest later
        self._acks = (
            Acknowledger(self._on_message, stopping=lambda: self._stopping) if manual_ack else None
        )
        check_puback()  # every connection follows its PUBACKs (publish_acked)
        self._pubacks = PubackTracker()
        self._will = will or (lambda: None)
        self._on_connect = on_connect
        self._on_lost = on_lost
        self._disconnect_reason: int | None = None
        self._subscriptions: dict[str, int] = {}
        self._subacks: dict[int, asyncio.Future[int]] = {}
        self._unsubacks: dict[int, asyncio.Future[None]] = {}
        self._client: _OneShotClient | None = None
        self._lost = asyncio.Event()
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._backoff = _Backoff()
        self.connections = 0
        self.session_present: bool | None = None
        """The broker's CONNACK flag of the current connection: it still had this client's
        session (only meaningful without ``clean_session``)."""
        self.failed_attempts = 0
        """Connection attempts that failed before the current connection was made."""
        self._failures = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def mqtt5(self) -> bool:
        return self.url.version == 5

    async def start(self, *, wait: bool = True, timeout_s: float | None = 10.0) -> None:
        """Start the connection supervisor; with ``wait``, return once connected."""
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name=f"bus:{self.client_id}")
        if wait:
            try:
                await asyncio.wait_for(self._connected.wait(), timeout_s)
            except TimeoutError:
                raise BusError(f"could not connect to {self.url} within {timeout_s} s") from None

    async def stop(self, *, before_disconnect: Callable[[], Awaitable[None]] | None = None) -> None:
        """Disconnect cleanly (the broker then discards the will) and stop reconnecting."""
        self._stopping = True
        self._lost.set()  # ends the supervisor even if a cancellation gets lost (see below)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            try:
                await supervisor
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our caller is being cancelled, not just the supervisor
        client = self._client
        if client is not None:
            try:
                if before_disconnect is not None and self._connected.is_set():
                    await before_disconnect()
                if self._connected.is_set():
                    await self._read_by_broker(client)
                await asyncio.wait_for(client.disconnect(), 2.0)
            except (TimeoutError, OSError, RuntimeError) as exc:
                log.warning("clean disconnect of %s failed: %s", self.client_id, exc)
        self._client = None
        self._connected.clear()
        self._pubacks.fail_all(f"{self.client_id} stopped before the PUBACK")

    async def _read_by_broker(self, client: _OneShotClient) -> None:
        """Return once the broker has read everything written so far on ``client``'s
        connection (at most :data:`STOP_BARRIER_S`): an UNSUBSCRIBE of a filter this
        client never subscribed, and its UNSUBACK. A broker handles one connection's
        packets in order, so the UNSUBACK comes after it processed every PUBACK and
        PUBLISH written before. Without it a clean stop followed at once by a new
        connection with the same client id (a restart) could have the broker take the
        session over before it read the last PUBACKs (Mosquitto 2.0 reads one packet per
        pass over its sockets; a coalesced burst of PUBACKs is many packets in one write),
        and the new connection got those messages again (QoS 1 duplicates)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        try:
            mid = client.unsubscribe(STOP_BARRIER_TOPIC)
        except Exception as exc:  # the connection is already going: nothing to wait for
            log.debug("%s: no stop barrier: %s", self.client_id, exc)
            return
        self._unsubacks[mid] = future
        try:
            await asyncio.wait_for(asyncio.shield(future), STOP_BARRIER_S)
        except TimeoutError:
            log.warning(
                "%s: no UNSUBACK within %.1f s before disconnecting: the broker may not "
                "have read the last acknowledgements (they would come again)",
                self.client_id,
                STOP_BARRIER_S,
            )
        finally:
            self._unsubacks.pop(mid, None)

    def _handle_unsuback(self, client: Any, mid: int, *args: Any) -> None:
        future = self._unsubacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> None:
        """Queue a publish on the current connection; raise :class:`BusError` if offline."""
        client = self._client
        if client is None or not self._connected.is_set():
            raise BusError(f"not connected to {self.url}")
        props: dict[str, Any] = {}
        if expiry_s is not None and self.mqtt5:
            props["message_expiry_interval"] = max(1, int(expiry_s + 0.999))
        client.publish(topic, payload, qos=qos, retain=retain, **props)

    def publish_acked(
        self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: float | None = None
    ) -> asyncio.Future[None]:
        """Publish at QoS 1 like :meth:`publish`; the returned future is resolved when the
        broker acknowledged the message (PUBACK) and fails with :class:`BusError` when the
        connection that carried it ended first (the broker may or may not have it).

        Raises :class:`BusError` at once if offline. The caller must consume a failed
        future's exception (asyncio logs the ones never retrieved)."""
        client = self._client
        if client is None or not self._connected.is_set():
            raise BusError(f"not connected to {self.url}")
        props: dict[str, Any] = {}
        if expiry_s is not None and self.mqtt5:
            props["message_expiry_interval"] = max(1, int(expiry_s + 0.999))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tracker = self._pubacks
        tracker.expect = future
        try:
            client.publish(topic, payload, qos=1, retain=retain, **props)
        finally:
            tracker.expect = None
        return future

    @property
    def unacknowledged(self) -> int:
        """QoS 1 publishes of :meth:`publish_acked` on this connection still without PUBACK."""
        return self._pubacks.waiting

    async def subscribe(self, pattern: str, qos: int = 1) -> None:
        """Subscribe now (if connected; returns once the broker acknowledged it) and again
        after every reconnection."""
        if self.manual_ack and qos > 1:
            raise BusError(
                f"subscription {pattern!r} at QoS {qos}: a client with manual "
                "acknowledgement subscribes at QoS 0 or 1"
            )
        self._subscriptions[pattern] = qos
        client = self._client
        if client is None or not self._connected.is_set():
            return
        if not await self._subscribe_all(client, {pattern: qos}) and client is self._client:
            self._why_moving = f"subscription {pattern!r} refused"
            self._lost.set()  # the supervisor reconnects and resubscribes

    def unsubscribe(self, pattern: str) -> None:
        """End a subscription of :meth:`subscribe`: now (if connected; UNSUBSCRIBE is sent,
        its acknowledgement not awaited) and for later reconnections."""
        self._subscriptions.pop(pattern, None)
        client = self._client
        if client is not None and self._connected.is_set():
            client.unsubscribe(pattern)

    async def _subscribe_all(self, client: _OneShotClient, patterns: dict[str, int]) -> bool:
        """Subscribe to ``patterns`` on ``client``'s connection, asking again for refused
        ones (:attr:`suback_retry`); ``False`` when some stayed refused (the caller drops
        the connection), ``True`` otherwise (also when the connection ended meanwhile)."""

        def alive() -> bool:
            return client is self._client and not self._lost.is_set() and not self._stopping

        refused = await subscribe_with_retry(
            lambda todo: self._send_subscribes(client, todo),
            patterns,
            self.suback_retry,
            alive=alive,
            client_id=self.client_id,
        )
        if refused:
            log.error(
                "%s: the broker at %s keeps refusing %s: dropping the connection",
                self.client_id, self.url,
                ", ".join(f"{p!r} (SUBACK 0x{c:02x})" for p, c in refused.items()),
            )  # fmt: skip
        return not refused

    async def _send_subscribes(
        self, client: _OneShotClient, patterns: dict[str, int]
    ) -> dict[str, int | None]:
        """Send SUBSCRIBE for each pattern and wait (at most 5 s) for the SUBACKs; returns
        each pattern's return code (``None``: no SUBACK in time)."""
        loop = asyncio.get_running_loop()
        pending: dict[str, asyncio.Future[int]] = {}
        for pattern, qos in patterns.items():
            mid = client.subscribe(pattern, qos=qos)
            future: asyncio.Future[int] = loop.create_future()
            self._subacks[mid] = future
            pending[pattern] = future
        if not pending:
            return {}
        # asyncio.wait, not wait_for(gather(...)): a caller cancelled while it waits must
        # not leave a cancelled gather whose exception nobody retrieves (asyncio logs it)
        _, late = await asyncio.wait(pending.values(), timeout=5.0)
        if late:
            log.warning("%s: no SUBACK within 5 s for %s", self.client_id, list(patterns))
        return {p: f.result() if f.done() else None for p, f in pending.items()}

    def _handle_suback(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        # gmqtt 0.8: ``qos`` is the tuple of the SUBACK's return codes, one per filter of
        # the SUBSCRIBE (always one here); 0x80 and above: refused
        future = self._subacks.pop(mid, None)
        if future is not None and not future.done():
            codes = tuple(qos) if isinstance(qos, tuple | list) else (qos,)
            future.set_result(max((int(c) for c in codes), default=0))

    # -- internals ----------------------------------------------------------------
    def _handle(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        try:
            self._on_message(Message(topic, payload, qos, bool(properties.get("retain"))))
        except Exception:  # a handler bug must not kill the connection
            log.exception("message handler failed for topic %s", topic)
        return 0

    def _redeliver(self, client: _OneShotClient) -> None:
        """A message of ``client``'s connection was not acknowledged: MQTT delivers it
        again only on a new connection, so drop this one (the supervisor reconnects)."""
        if client is self._client and not self._stopping:
            self._lost.set()

    def _handle_connack(self, client: Any, flags: Any, rc: Any, properties: Any) -> None:
        if client is self._client:
            self.session_present = bool(flags)

    def _handle_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        if client is self._client:
            # an MQTT 5 DISCONNECT from the broker starts with its reason code; a lost
            # socket arrives as an empty packet
            if isinstance(packet, bytes | bytearray) and packet and self._disconnect_reason is None:
                self._disconnect_reason = packet[0]
            self._lost.set()

    async def _resolve(self) -> None:
        """Ask the resolver where the broker is; keep the last answer if it fails."""
        assert self.resolver is not None
        try:
            url = await self.resolver()
            if isinstance(self.resolver, UrlListResolver) and self._resolved not in (None, url):
                log.warning(
                    "%s fails over from %s to %s (%s)",
                    self.client_id, self._resolved, url, self._why_moving or "reconnecting",
                )  # fmt: skip
            self.url = url
            self._resolved = self.url
        except Exception as exc:
            if self._resolved is None:
                raise BusError(f"broker not found: {exc}") from exc
            log.info("%s: %s; trying the last known broker %s", self.client_id, exc, self._resolved)
            self.url = self._resolved

    async def _connect_once(self) -> None:
        if self.resolver is not None:
            await self._resolve()
        will = self._will()
        gmqtt_will = None
        if will is not None:
            gmqtt_will = gmqtt.Message(will.topic, will.payload, qos=will.qos, retain=will.retain)
        extra: dict[str, Any] = {}
        if not self.clean_session and self.mqtt5:
            extra["session_expiry_interval"] = 0xFFFFFFFF
        self._pubacks = PubackTracker()
        client = _OneShotClient(
            self.client_id,
            clean_session=self.clean_session,
            persistent_storage=self._pubacks,
            optimistic_acknowledgement=not self.manual_ack,
            will_message=gmqtt_will,
            logger=logging.getLogger("sef.bus.mqtt"),
            **extra,
        )
        client.write_stats = self.write_stats
        if self.url.username:
            client.set_auth_credentials(self.url.username, self.url.password)
        client.on_message = self._handle  # QoS 0 (and QoS 1 without manual_ack)
        if self._acks is not None:
            self._acks.install(client, redeliver=lambda: self._redeliver(client))
        client.on_subscribe = self._handle_suback
        client.on_unsubscribe = self._handle_unsuback
        client.on_connect = self._handle_connack
        client.on_disconnect = self._handle_disconnect
        self._lost.clear()
        self._disconnect_reason = None
        self.session_present = None
        self._client = client
        version = MQTTv50 if self.mqtt5 else MQTTv311
        if self.url.tls and self.tls is None:
            self._client = None
            raise BusError(f"{self.url} is a TLS broker: give the client a TLS context")
        try:
            await asyncio.wait_for(
                client.connect(
                    self.url.host,
                    self.url.port,
                    ssl=self.tls if self.tls is not None else False,
                    keepalive=self.keepalive_s,
                    version=version,
                ),
                timeout=max(5.0, self.keepalive_s),
            )
        except BaseException:
            self._client = None
            raise

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                await self._connect_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                self._why_moving = f"cannot connect: {exc or type(exc).__name__}"
                delay = self._backoff.next()
                log.warning(
                    "cannot connect %s to %s (%s); retrying in %.1f s",
                    self.client_id,
                    self.url,
                    exc or type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            # Python 3.11's wait_for can swallow a cancellation that meets a completion:
            # the supervisor then checks _stopping itself (stop() disconnects the client)
            if self._stopping:
                return
            self.failed_attempts, self._failures = self._failures, 0
            self.connections += 1
            client = self._client
            assert client is not None
            if not await self._subscribe_all(client, dict(self._subscriptions)):
                self._failures += 1
                self._why_moving = "subscriptions refused"
                self._client = None
                try:
                    await client.disconnect()  # before the birth: nothing to take back
                except Exception as exc:
                    log.debug("closing the refusing connection: %s", exc)
                await asyncio.sleep(self._backoff.next())
                continue
            if self._stopping:
                return
            self._connected.set()
            self._why_moving = ""
            log.info(
                "%s connected to %s (connection %d)", self.client_id, self.url, self.connections
            )
            connected_at = asyncio.get_running_loop().time()
            if self._on_connect is not None:
                try:
                    await self._on_connect()
                except Exception:
                    log.exception("on_connect hook of %s failed", self.client_id)
            await self._lost.wait()
            if self._stopping:
                return
            self._connected.clear()
            self._client = None
            lost = ConnectionLost(
                self._disconnect_reason, asyncio.get_running_loop().time() - connected_at
            )
            if lost.taken_over:
                log.warning(
                    "%s: the broker says another client took this client id over", self.client_id
                )
            keep_growing = False
            if self._on_lost is not None:
                try:
                    keep_growing = bool(self._on_lost(lost))
                except Exception:
                    log.exception("on_lost hook of %s failed", self.client_id)
            if not self._why_moving.startswith("subscription"):
                self._why_moving = f"connection lost after {lost.lasted_s:.1f} s"
            if lost.lasted_s >= self.backoff_reset_after_s and not keep_growing:
                self._backoff.reset()  # a connection that held: start again from 0.1 s
            delay = self._backoff.next()
            log.warning(
                "%s lost its connection to %s; reconnecting in %.1f s",
                self.client_id,
                self.url,
                delay,
            )
            try:
                await client.disconnect()
            except Exception as exc:  # the socket is usually gone already
                log.debug("closing dead connection: %s", exc)
            self._pubacks.fail_all(f"connection to {self.url} lost before the PUBACK")
            await asyncio.sleep(delay)
