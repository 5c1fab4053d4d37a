"""``BusClient.publish_acked``: a QoS 1 publish whose future says whether the broker
acknowledged it (PUBACK) before its connection ended, and the fence around the gmqtt
internals it relies on (``sef.bus._acks.check_puback``)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gmqtt
import pytest

from sef.broker import Mosquitto
from sef.bus import BusClient, BusError, Message
from sef.bus._acks import GmqttChanged, check_puback
from support import wait_for

TOPIC = "t/puback/x"


@contextmanager
def frozen(broker: Mosquitto) -> Iterator[None]:
    """The broker process stopped (SIGSTOP) inside the block: it reads nothing, answers
    nothing, but its sockets stay open."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


def test_the_probe_passes_on_the_installed_gmqtt() -> None:
    check_puback.__wrapped__()


def test_the_probe_fails_loudly_when_publish_no_longer_stores_its_mid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def publish(self: Any, topic: str, payload: bytes = b"", qos: int = 0, **kw: Any) -> None:
        self._connection.publish(gmqtt.Message(topic, payload, qos=qos))  # no push_message

    monkeypatch.setattr(gmqtt.Client, "publish", publish)
    with pytest.raises(GmqttChanged, match="push_message"):
        check_puback.__wrapped__()


def test_the_probe_fails_loudly_when_puback_no_longer_reaches_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gmqtt.mqtt.handler import MqttPackageHandler

    monkeypatch.setattr(MqttPackageHandler, "_handle_puback_packet", lambda self, cmd, pkt: None)
    with pytest.raises(GmqttChanged, match="PUBACK"):
        check_puback.__wrapped__()


async def test_resolved_on_puback_and_delivered(broker_url: str) -> None:
    got: list[Message] = []
    watcher = BusClient(broker_url, "watcher", on_message=got.append)
    await watcher.subscribe(TOPIC)
    await watcher.start()
    client = BusClient(broker_url, "publisher")
    await client.start()
    try:
        acked = [client.publish_acked(TOPIC, f"{n}".encode()) for n in range(50)]
        await asyncio.wait_for(asyncio.gather(*acked), 5.0)
        assert client.unacknowledged == 0
        client.publish(TOPIC, b"plain")  # the plain publish is unchanged
        await wait_for(lambda: len(got) == 51, 5.0)
        assert [m.payload for m in got] == [f"{n}".encode() for n in range(50)] + [b"plain"]
    finally:
        await client.stop()
        await watcher.stop()


async def test_fails_when_the_connection_ends_before_the_puback(mosquitto: Mosquitto) -> None:
    """A frozen broker acknowledges nothing: the futures wait, then fail with BusError when
    the client gives the connection up (keepalive 1 s: about 2 s later)."""
    client = BusClient(mosquitto.url, "publisher", keepalive_s=1)
    await client.start()
    try:
        with frozen(mosquitto):
            acked = [client.publish_acked(TOPIC, b"x", retain=True) for _ in range(5)]
            await asyncio.sleep(0.5)
            assert not any(f.done() for f in acked) and client.unacknowledged == 5
            started = time.monotonic()
            await wait_for(lambda: all(f.done() for f in acked), 5.0)
            print(f"PUBACKs failed {time.monotonic() - started + 0.5:.2f} s into the freeze")
            for future in acked:
                with pytest.raises(BusError, match="lost before the PUBACK"):
                    future.result()
            assert not client.connected
            with pytest.raises(BusError, match="not connected"):
                client.publish_acked(TOPIC, b"y")
        await wait_for(lambda: client.connected, 10.0)
        await asyncio.wait_for(client.publish_acked(TOPIC, b"z"), 5.0)  # a new connection
    finally:
        await client.stop()


async def test_stop_fails_what_is_still_waiting(mosquitto: Mosquitto) -> None:
    client = BusClient(mosquitto.url, "publisher", keepalive_s=5)
    await client.start()
    with frozen(mosquitto):
        future = client.publish_acked(TOPIC, b"x")
        await client.stop()  # the DISCONNECT goes nowhere either
    assert future.done()
    with pytest.raises(BusError, match="stopped before the PUBACK"):
        future.result()
