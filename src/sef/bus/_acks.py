"""Acknowledge a QoS 1 message only once its processing is done: the one place SEF relies on
gmqtt internals, fenced.

Why internals: gmqtt acknowledges late only through an ``async`` message handler, which
costs one asyncio Task per message (about 35 µs, a third of the EMS's ingest budget), and
no maintained client's public API reaches the ingest target: paho-mqtt 2's
``manual_ack_set`` + ``ack`` drained 12 500 to 23 600 msg/s doing nothing but
``json.loads`` and the ack (threaded and asyncio-driven loop, same machine and broker on
which bare gmqtt drained 46 000 to 72 000 msg/s), below the 20 000 msg/s the EMS must
*store*.

What the hook relies on (gmqtt 0.8.x, the range pinned in ``pyproject.toml``):

1. ``Client._package_handler``: the client's ``MqttPackageHandler``;
2. ``MqttPackageHandler._handle_publish_packet`` parses every PUBLISH and hands a QoS 1
   one to ``self._handle_qos_1_publish_packet(mid, packet, print_topic, properties)``
   (looked up on the instance, so an instance attribute replaces it), with
   ``properties["retain"]`` set; the replacement calls the handler synchronously;
3. ``MqttPackageHandler.current_connection``: the ``MQTTConnection`` that
   ``MQTTConnection.__init__`` registered (``set_connection``); a :class:`BusClient`
   connects each gmqtt client once, so it is the connection the message came on;
4. ``MQTTConnection.send_package(bytes)`` writes raw bytes; ``MQTTConnection.is_closing()``.

:func:`check_gmqtt` verifies all of it when a manually acknowledging client is created
(the members and signatures, and a QoS 1 PUBLISH fed through a fresh handler reaching a
replacement hook with the right arguments) and raises :class:`GmqttChanged` otherwise.
``tests/bus/test_bus_acks.py`` asserts the same members against the installed gmqtt, and
against Mosquitto that an acknowledged message is not delivered again while an
unacknowledged one (pending, failed) is.

The other direction, knowing that the broker acknowledged one of *our* QoS 1 publishes
(:class:`PubackTracker`), relies on gmqtt's in-flight store, which a client takes as its
``persistent_storage`` argument:

5. ``Client.publish`` builds the PUBLISH (its packet id, ``mid``) and, for QoS 1 and 2,
   calls ``persistent_storage.push_message(mid, package)`` before it returns;
6. the PUBACK (and PUBCOMP) handler calls ``persistent_storage.remove_message_by_mid(mid)``.

:func:`check_puback` verifies both on a fresh client (a publish through a stand-in
connection, then a PUBACK fed through its package handler) when a :class:`BusClient` is
created, and raises :class:`GmqttChanged` otherwise; ``tests/bus/test_puback.py`` checks
against Mosquitto that the futures resolve on PUBACK and fail when the connection ends.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, cast

import gmqtt
from gmqtt.storage import PersistentStorage

from sef.bus._message import BusError, Message

__all__ = [
    "TESTED_GMQTT",
    "Acknowledger",
    "GmqttChanged",
    "PubackTracker",
    "check_gmqtt",
    "check_puback",
]

log = logging.getLogger("sef.bus")

TESTED_GMQTT = "gmqtt>=0.8.0,<0.9"
"""The gmqtt versions the hook was tested with (the requirement in ``pyproject.toml``)."""

HOOK = "_handle_qos_1_publish_packet"
HOOK_PARAMETERS = ("self", "mid", "packet", "print_topic", "properties")
_PROBE_TOPIC = "sef/probe"


class GmqttChanged(BusError):
    """The gmqtt internals that the manual acknowledgement relies on are not as tested."""


class _Connection(Protocol):
    def send_package(self, package: bytes) -> None: ...
    def is_closing(self) -> bool: ...


def _fail(detail: str) -> NoReturn:
    raise GmqttChanged(
        f"gmqtt {getattr(gmqtt, '__version__', '?')}: {detail}. SEF acknowledges stored "
        f"messages through gmqtt internals, tested with {TESTED_GMQTT}: install such a "
        "version, or port sef/bus/_acks.py to this one (see its docstring)"
    )


def _parameters(function: object) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(cast(Callable[..., Any], function)).parameters)
    except (TypeError, ValueError):
        return ()


def _code_names(function: object) -> tuple[str, ...]:
    code = getattr(function, "__code__", None)
    return tuple(code.co_names) if code is not None else ()


@functools.cache
def check_gmqtt() -> None:
    """Verify every gmqtt internal the hook uses; raise :class:`GmqttChanged` if one changed.

    Runs once per process (cached)."""
    try:  # here, not at the top: a client without manual_ack needs none of this
        from gmqtt.mqtt.connection import MQTTConnection
        from gmqtt.mqtt.handler import MqttPackageHandler
        from gmqtt.mqtt.package import Package
    except ImportError as exc:
        _fail(f"module missing ({exc})")
    hook = getattr(MqttPackageHandler, HOOK, None)
    if _parameters(hook) != HOOK_PARAMETERS:
        _fail(
            f"MqttPackageHandler.{HOOK} is missing or its parameters are not "
            f"{HOOK_PARAMETERS} (got {_parameters(hook)})"
        )
    if HOOK not in _code_names(getattr(MqttPackageHandler, "_handle_publish_packet", None)):
        _fail(f"MqttPackageHandler._handle_publish_packet no longer calls {HOOK}")
    if not isinstance(
        inspect.getattr_static(MqttPackageHandler, "current_connection", None), property
    ):
        _fail("MqttPackageHandler.current_connection is no longer a property")
    if "set_connection" not in _code_names(MQTTConnection.__init__):
        _fail("MQTTConnection no longer registers itself with set_connection")
    send = getattr(MQTTConnection, "send_package", None)
    if _parameters(send) != ("self", "package") or not {"bytes", "write"} <= set(_code_names(send)):
        _fail("MQTTConnection.send_package(package) no longer writes raw bytes")
    if _parameters(getattr(MQTTConnection, "is_closing", None)) != ("self",):
        _fail("MQTTConnection.is_closing() is missing")
    _probe(MqttPackageHandler, Package)


def _probe(handler_class: Any, package_class: Any) -> None:
    """Feed one QoS 1 PUBLISH (MQTT 5 layout: a new client's default) through a fresh
    client's package handler and check that the replacement hook gets it."""
    client = gmqtt.Client(
        "sef-probe", optimistic_acknowledgement=False, logger=logging.getLogger("sef.bus.mqtt")
    )
    handler = getattr(client, "_package_handler", None)
    if not isinstance(handler, handler_class):
        _fail("Client._package_handler is no longer the client's MqttPackageHandler")
    got: list[tuple[Any, ...]] = []
    setattr(handler, HOOK, lambda *args: got.append(args))
    topic, mid, payload = _PROBE_TOPIC.encode(), 0x1234, b'{"probe":1}'
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + b"\x00" + payload
    handler(package_class(0x33, body))  # PUBLISH, QoS 1, retain
    if (
        len(got) != 1
        or len(got[0]) != 4
        or got[0][:3] != (mid, payload, _PROBE_TOPIC)
        or not isinstance(got[0][3], dict)
        or not got[0][3].get("retain")
    ):
        _fail(
            f"a QoS 1 PUBLISH did not reach {HOOK}(mid, payload, topic, properties with "
            f"retain) on the instance (got {got!r})"
        )
    marker = object()
    handler.set_connection(marker)
    if handler.current_connection is not marker:
        _fail("MqttPackageHandler.current_connection is not what set_connection stored")


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class Acknowledger:
    """Takes over the QoS 1 acknowledgement of each connection of one :class:`BusClient`.

    Each QoS 1 message is handed to ``on_message`` synchronously. If it returns a pending
    :class:`asyncio.Future` (e.g. the commit of the store batch holding the message's
    rows), the PUBACK is sent once that future succeeded, in one write with the other
    messages of the same future; if the future fails or is cancelled, the message is not
    acknowledged and the connection's ``redeliver`` is called (MQTT delivers an
    unacknowledged message again only on a new connection). A message for which
    ``on_message`` returns no pending future (or whose handler raised: logged) waits for
    the newest pending future, of this connection or an earlier one, or is acknowledged
    at once if there is none: a redelivered duplicate is thus not acknowledged before the
    commit of its first copy. PUBACKs that cannot be sent are
    logged at WARNING (at INFO when ``stopping()``).

    Raises :class:`GmqttChanged` if the installed gmqtt is not as tested.
    """

    def __init__(
        self, on_message: Callable[[Message], object], *, stopping: Callable[[], bool]
    ) -> None:
        check_gmqtt()
        self.on_message = on_message
        self.stopping = stopping
        self._newest: asyncio.Future[Any] | None = None
        """The newest future a message waits for (on any connection)."""

    def install(self, client: gmqtt.Client, redeliver: Callable[[], None]) -> None:
        """Take over the QoS 1 acknowledgement of a gmqtt ``client`` (before it connects)."""
        handler = client._package_handler
        waiting: dict[asyncio.Future[Any], list[int]] = {}  # this connection's messages
        on_message, stopping = self.on_message, self.stopping

        def ack(mids: list[int]) -> None:
            # PUBACK is 40 02 MID in MQTT 3.1.1 and 5 (no reason code = success): one write
            # for every message of a committed batch instead of one per message
            connection = cast("_Connection | None", handler.current_connection)
            level = logging.INFO if stopping() else logging.WARNING
            if connection is None or connection.is_closing():
                log.log(
                    level,
                    "%d PUBACKs not sent: the connection is closed (the broker "
                    "delivers those messages again on the next connection)",
                    len(mids),
                )
                return
            try:
                connection.send_package(
                    b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids)
                )
            except Exception as exc:
                log.log(
                    level,
                    "%d PUBACKs not sent (%s): the broker delivers those messages "
                    "again on the next connection",
                    len(mids),
                    exc,
                )

        def done(future: asyncio.Future[Any]) -> None:
            mids = waiting.pop(future, [])
            if _succeeded(future):
                ack(mids)
                return
            if not stopping():
                log.warning(
                    "%d messages not acknowledged: their processing failed (%s); "
                    "reconnecting so that the broker delivers them again",
                    len(mids),
                    "cancelled" if future.cancelled() else future.exception(),
                )
            redeliver()

        def qos1(mid: int, packet: bytes, topic: str, properties: dict[str, Any]) -> None:
            try:
                pending = on_message(Message(topic, packet, 1, bool(properties.get("retain"))))
            except Exception:
                log.exception("message handler failed for topic %s", topic)
                pending = None
            if isinstance(pending, asyncio.Future) and not _succeeded(pending):
                self._newest = pending
            else:
                pending = self._newest
                if pending is None or pending.done():
                    self._newest = None
                    ack([mid])
                    return
            mids = waiting.get(pending)
            if mids is None:
                mids = waiting[pending] = []
                pending.add_done_callback(done)
            mids.append(mid)

        setattr(handler, HOOK, qos1)


class PubackTracker(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of one connection's in-flight QoS 1 publishes (a client's
    ``persistent_storage``) that also resolves a future per publish on its PUBACK.

    :class:`BusClient` sets :attr:`expect` to a future just before it publishes; gmqtt's
    ``publish`` pushes the message (its ``mid``) here synchronously, which binds the future
    to that mid; the PUBACK removes the mid and resolves the future. :meth:`fail_all` fails
    the futures still waiting when the connection is gone (a new connection is a new
    gmqtt client with a new tracker: a mid is never reused across connections).
    """

    def __init__(self) -> None:
        super().__init__()
        self.expect: asyncio.Future[None] | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        future = self.expect
        if future is not None:
            self.expect = None
            self._waiting[mid] = future

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        future = self._waiting.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    @property
    def waiting(self) -> int:
        """Publishes whose PUBACK has not come yet."""
        return len(self._waiting)

    def fail_all(self, reason: str) -> None:
        """Fail every future still waiting with :class:`BusError` ``reason``."""
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(BusError(reason))


class _ProbeConnection:
    """Stands in for a connection in :func:`check_puback`: returns a known mid."""

    mid = 0x2345

    def publish(self, message: Any) -> tuple[int, bytes]:
        return self.mid, b"probe"

    def is_closing(self) -> bool:
        return False


@functools.cache
def check_puback() -> None:
    """Verify that a :class:`PubackTracker` learns each QoS 1 publish's mid and its PUBACK;
    raise :class:`GmqttChanged` if not. Runs once per process (cached)."""
    try:
        from gmqtt.mqtt.package import Package
    except ImportError as exc:
        _fail(f"module missing ({exc})")
    if "persistent_storage" not in _parameters(gmqtt.Client.__init__):
        _fail("Client() no longer takes a persistent_storage")
    if "push_message" not in _code_names(gmqtt.Client.publish):
        _fail("Client.publish no longer stores QoS 1 messages with push_message")
    tracker = PubackTracker()
    client = gmqtt.Client(
        "sef-probe", persistent_storage=tracker, logger=logging.getLogger("sef.bus.mqtt")
    )
    if not hasattr(client, "_connection"):
        _fail("Client._connection is gone")
    client._connection = _ProbeConnection()
    loop = asyncio.new_event_loop()
    try:
        future: asyncio.Future[None] = loop.create_future()
        tracker.expect = future
        client.publish(_PROBE_TOPIC, b"probe", qos=1)
        if tracker.expect is not None or tracker._waiting.get(_ProbeConnection.mid) is not future:
            _fail("Client.publish did not push its QoS 1 message's mid to persistent_storage")
        handler = getattr(client, "_package_handler", None)
        if handler is None:
            _fail("Client._package_handler is gone")
        handler(Package(0x40, _ProbeConnection.mid.to_bytes(2, "big")))  # PUBACK
        if not future.done() or tracker.waiting:
            _fail("a PUBACK no longer reaches persistent_storage.remove_message_by_mid(mid)")
    finally:
        loop.close()
