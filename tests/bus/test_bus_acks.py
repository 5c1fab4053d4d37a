"""Manual acknowledgement (``BusClient(manual_ack=True)``) and its fence around gmqtt.

The hook in ``sef.bus._acks`` uses gmqtt internals. The first tests spell out every member
and signature it relies on, against the installed gmqtt, so that a gmqtt upgrade breaks
them here and not silently in production; then that a changed gmqtt makes a manually
acknowledging client fail at once. The rest run against a real Mosquitto: what is
acknowledged is not delivered again, what is not (pending, failed, a duplicate waiting for
its first copy) is delivered again to the next connection or session.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.handler import MqttPackageHandler
from packaging.requirements import Requirement
from packaging.version import Version

from sef.broker import Mosquitto
from sef.bus import BusClient, BusError, Message
from sef.bus._acks import HOOK, TESTED_GMQTT, GmqttChanged, check_gmqtt
from support import wait_for

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
TOPIC = "t/acks/x"


# -- the fence --------------------------------------------------------------------------


def test_gmqtt_is_the_pinned_and_tested_version() -> None:
    requirements = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    gmqtt_requirement = next(Requirement(r) for r in requirements if r.startswith("gmqtt"))
    assert gmqtt_requirement.specifier == Requirement(TESTED_GMQTT).specifier
    assert any(spec.operator == "<" for spec in gmqtt_requirement.specifier), (
        "the gmqtt requirement must have an upper bound"
    )
    assert Version(gmqtt.__version__) in gmqtt_requirement.specifier


def test_gmqtt_internals_used_by_the_ack_hook_are_there() -> None:
    """Exactly what ``sef.bus._acks`` touches; if this fails, gmqtt changed: port the hook
    (and its check) to the new gmqtt before widening the pin."""

    def params(function: Callable[..., Any]) -> tuple[str, ...]:
        return tuple(inspect.signature(function).parameters)

    # 1. the client's package handler
    client = gmqtt.Client("fence-test")
    assert isinstance(client._package_handler, MqttPackageHandler)
    # 2. QoS 1 PUBLISHes go through an instance-looked-up method with these parameters
    assert HOOK == "_handle_qos_1_publish_packet"
    assert params(MqttPackageHandler._handle_qos_1_publish_packet) == (
        "self",
        "mid",
        "packet",
        "print_topic",
        "properties",
    )
    assert HOOK in MqttPackageHandler._handle_publish_packet.__code__.co_names
    # 3. the connection a message came on, and writing raw bytes to it
    assert isinstance(inspect.getattr_static(MqttPackageHandler, "current_connection"), property)
    assert params(MqttPackageHandler.set_connection) == ("self", "connection")
    assert "set_connection" in MQTTConnection.__init__.__code__.co_names
    assert params(MQTTConnection.send_package) == ("self", "package")
    assert {"bytes", "write"} <= set(MQTTConnection.send_package.__code__.co_names)
    assert params(MQTTConnection.is_closing) == ("self",)
    # 4. non-optimistic acknowledgement is accepted (gmqtt's own QoS 1 path then waits)
    assert "optimistic_acknowledgement" in inspect.signature(gmqtt.Client).parameters
    # and the runtime check agrees
    check_gmqtt.cache_clear()
    check_gmqtt()


@pytest.fixture
def fresh_check() -> Iterator[None]:
    check_gmqtt.cache_clear()
    yield
    check_gmqtt.cache_clear()


def _hook_with_other_parameters(self: Any, mid: int, packet: bytes) -> None:
    return None


def _publish_handler_without_hook(self: Any, cmd: int, raw_packet: bytes) -> None:
    return None


def _hook_that_swallows(
    self: Any, mid: int, packet: bytes, print_topic: str, properties: dict[str, Any]
) -> None:
    return None


@pytest.mark.parametrize(
    "name, replacement",
    [
        (HOOK, _hook_with_other_parameters),
        ("_handle_publish_packet", _publish_handler_without_hook),
        ("current_connection", None),
        ("set_connection", lambda self, connection: None),
    ],
    ids=["hook-signature", "publish-dispatch", "current-connection", "set-connection"],
)
def test_a_changed_gmqtt_fails_loudly_at_start(
    monkeypatch: pytest.MonkeyPatch,
    fresh_check: None,
    name: str,
    replacement: Callable[..., Any] | None,
) -> None:
    monkeypatch.setattr(MqttPackageHandler, name, replacement)
    with pytest.raises(GmqttChanged, match="tested with gmqtt>="):
        BusClient("mqtt://127.0.0.1:1", manual_ack=True)
    BusClient("mqtt://127.0.0.1:1")  # a client without manual_ack does not need any of it


def test_a_gmqtt_whose_writes_changed_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, fresh_check: None
) -> None:
    def send_package(self: Any, package: Any) -> None:
        self._transport.write(package.encode())

    monkeypatch.setattr(MQTTConnection, "send_package", send_package)
    with pytest.raises(GmqttChanged, match="send_package"):
        check_gmqtt()


def test_manual_ack_subscribes_at_qos_0_or_1() -> None:
    client = BusClient("mqtt://127.0.0.1:1", manual_ack=True)
    with pytest.raises(BusError, match="QoS 0 or 1"):
        asyncio.run(client.subscribe("t/#", qos=2))


# -- against Mosquitto --------------------------------------------------------------------


class Consumer:
    """A manually acknowledging persistent session; ``replies[payload]()`` is what its
    handler returns for a message (nothing when absent)."""

    def __init__(self, url: str, client_id: str = "acks-consumer") -> None:
        self.got: list[bytes] = []
        self.replies: dict[bytes, Callable[[], object]] = {}
        self.bus = BusClient(
            url,
            client_id,
            on_message=self.handle,
            clean_session=False,
            manual_ack=True,
            keepalive_s=2,
        )

    def handle(self, message: Message) -> object:
        self.got.append(message.payload)
        reply = self.replies.get(message.payload)
        return reply() if reply is not None else None

    async def start(self) -> Consumer:
        await self.bus.subscribe(TOPIC, qos=1)
        await self.bus.start()
        return self


async def publish(url: str, *payloads: bytes) -> None:
    publisher = BusClient(url)
    await publisher.start()
    for payload in payloads:
        publisher.publish(TOPIC, payload, qos=1)
    await asyncio.sleep(0.1)
    await publisher.stop()


async def next_session(url: str, settle_s: float = 0.5) -> list[bytes]:
    """What a new connection of the consumer's session is delivered (then it acknowledges
    everything)."""
    consumer = await Consumer(url).start()
    await asyncio.sleep(settle_s)
    await consumer.bus.stop()
    return consumer.got


async def test_a_message_is_acknowledged_only_once_its_future_succeeded(broker_url: str) -> None:
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[None] = loop.create_future()
    failed: asyncio.Future[None] = loop.create_future()
    pending: asyncio.Future[None] = loop.create_future()
    consumer = await Consumer(broker_url).start()
    consumer.replies = {b"ok": lambda: ok, b"failed": lambda: failed, b"pending": lambda: pending}
    await publish(broker_url, b"ok", b"failed", b"pending")
    await wait_for(lambda: len(consumer.got) == 3, 5.0)
    ok.set_result(None)
    await asyncio.sleep(0.2)
    assert consumer.bus.connections == 1
    # a failed future: not acknowledged; the client reconnects and gets it again, with
    # the still pending one (the acknowledged one is not delivered again)
    del consumer.replies[b"failed"], consumer.replies[b"pending"]
    failed.set_exception(RuntimeError("commit failed"))
    await wait_for(lambda: len(consumer.got) == 5, 5.0)
    # the session's messages can arrive before the client counts its new connection
    await wait_for(lambda: consumer.bus.connections == 2, 5.0)
    assert sorted(consumer.got[3:]) == [b"failed", b"pending"]
    # the copies got no future of their own: they wait for the newest pending one, which
    # came with the first connection
    await asyncio.sleep(0.2)
    pending.set_result(None)
    await asyncio.sleep(0.2)
    await consumer.bus.stop()
    assert await next_session(broker_url) == []  # everything acknowledged


async def test_pending_and_cancelled_futures_are_not_acknowledged(broker_url: str) -> None:
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] = loop.create_future()
    cancelled: asyncio.Future[None] = loop.create_future()
    consumer = await Consumer(broker_url).start()
    consumer.replies = {b"pending": lambda: pending, b"cancelled": lambda: cancelled}
    await publish(broker_url, b"pending", b"cancelled")
    await wait_for(lambda: len(consumer.got) == 2, 5.0)
    del consumer.replies[b"cancelled"]
    cancelled.cancel()  # delivered again on the next connection, which follows at once
    # the resumed session may deliver before the supervisor counts the new connection
    await wait_for(lambda: consumer.got.count(b"cancelled") == 2, 5.0)
    await wait_for(lambda: consumer.bus.connections == 2, 5.0)
    await consumer.bus.stop()  # with the pending future still pending
    assert sorted(await next_session(broker_url)) == [b"cancelled", b"pending"]


async def test_a_message_without_future_waits_for_the_newest_pending_one(broker_url: str) -> None:
    """A redelivered duplicate (the EMS returns no future for it: its rows are already in
    a batch) must not be acknowledged before the commit of its first copy."""
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    consumer = await Consumer(broker_url).start()
    consumer.replies = {b"first": lambda: commit}
    await publish(broker_url, b"first", b"duplicate")
    await wait_for(lambda: len(consumer.got) == 2, 5.0)
    await consumer.bus.stop()  # the commit never happened
    assert sorted(await next_session(broker_url)) == [b"duplicate", b"first"]
    # and once the pending future succeeds, both are acknowledged
    commit2: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    consumer = await Consumer(broker_url).start()
    consumer.replies = {b"first": lambda: commit2}
    await publish(broker_url, b"first", b"duplicate")
    await wait_for(lambda: len(consumer.got) == 2, 5.0)
    commit2.set_result(None)
    await asyncio.sleep(0.2)
    await consumer.bus.stop()
    assert await next_session(broker_url) == []


async def test_acknowledgements_that_cannot_be_sent_are_warnings(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    consumer = await Consumer(mosquitto.url).start()
    consumer.replies = {b"m": lambda: commit}
    await publish(mosquitto.url, b"m")
    await wait_for(lambda: len(consumer.got) == 1, 5.0)
    mosquitto.stop()
    await wait_for(lambda: not consumer.bus.connected, 5.0)
    with caplog.at_level(logging.WARNING, logger="sef.bus"):
        commit.set_result(None)
        await asyncio.sleep(0.05)
    assert [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "1 PUBACKs not sent" in r.getMessage()
    ]
    await consumer.bus.stop()
