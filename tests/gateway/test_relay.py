"""The gateway's uplink relay (:class:`~sef.gateway.UplinkRelay`) between two real
Mosquitto brokers, its uplink through a :class:`CuttableLink`: what the home publishes
during a cut arrives once, in order, with its retain flag; calls and the EMS's status come
down; reconnection attempts re-send no retained state; the queue limit drops and counts.

The test clients are paho-mqtt MQTT 5 clients; at the control broker they subscribe with
``retainAsPublished``, so they see the retain flag the relay published with.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from sef.broker import Mosquitto
from sef.bus import BrokerURL
from sef.gateway import UplinkRelay
from support import wait_for
from tcp_cut import CuttableLink

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.monotonic()


class Peer:
    """A paho MQTT 5 client that records what it receives."""

    def __init__(self, port: int, client_id: str, subscribe: Iterable[str] = ()) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        patterns = [(pattern, options) for pattern in subscribe]
        if patterns:
            subscribed = threading.Event()
            self.client.on_subscribe = lambda *args: subscribed.set()
            self.client.subscribe(patterns)
            assert subscribed.wait(5.0), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen.append(Seen(m.topic, bytes(m.payload), bool(m.retain), time.monotonic()))

    def on(self, topic: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.topic == topic]

    def payloads(self, topic: str) -> list[bytes]:
        return [s.payload for s in self.on(topic)]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5.0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Rig:
    control: Mosquitto
    home: Mosquitto
    link: CuttableLink
    relay: UplinkRelay
    home_id: str

    @property
    def status_topic(self) -> str:
        return f"sef/gateways/{self.home_id}/status"


@asynccontextmanager
async def relay_rig(
    control: Mosquitto,
    tmp_path: Path,
    version: int = 4,
    home_id: str | None = None,
    **relay_args: object,
) -> AsyncIterator[Rig]:
    """A new home broker and a relay from it to ``control`` through a cuttable link."""
    home_id = home_id or f"home-{uuid.uuid4().hex[:6]}"
    home = Mosquitto(workdir=tmp_path / f"home-{uuid.uuid4().hex[:6]}")
    home.workdir.mkdir()  # type: ignore[union-attr]
    await asyncio.to_thread(home.start)
    link = CuttableLink(BrokerURL.parse(control.url).port)
    await link.restore()
    relay = UplinkRelay(
        BrokerURL("127.0.0.1", link.port, version=version),
        home_id,
        local_host="127.0.0.1",
        local_port=home.port,
        keepalive_s=2,
        restart_s=(1, 2),
        **relay_args,  # type: ignore[arg-type]
    )
    try:
        await asyncio.to_thread(relay.start)
        await wait_for(lambda: relay.connected, 5.0)
        yield Rig(control, home, link, relay, home_id)
    finally:
        await asyncio.to_thread(relay.stop)
        await link.cut()
        await asyncio.to_thread(home.stop)


async def cut(rig: Rig, watcher: Peer) -> float:
    """Cut the uplink; seconds until the control broker published the relay's will."""
    wills = len(rig_payloads(watcher, rig.status_topic, b"0"))
    await rig.link.cut()
    cut_at = time.monotonic()
    await wait_for(lambda: len(rig_payloads(watcher, rig.status_topic, b"0")) > wills, 5.0)
    await wait_for(lambda: not rig.relay.connected, 5.0)
    return watcher.on(rig.status_topic)[-1].at - cut_at


def rig_payloads(peer: Peer, topic: str, payload: bytes) -> list[Seen]:
    return [s for s in peer.on(topic) if s.payload == payload]


@pytest.mark.parametrize("version", [4, 5], ids=["mqtt3.1.1", "mqtt5"])
async def test_cut_uplink_messages_arrive_once_in_order_with_retain_and_calls_come_down(
    mosquitto: Mosquitto, tmp_path: Path, version: int
) -> None:
    cport = BrokerURL.parse(mosquitto.url).port
    watcher = Peer(cport, f"watch-{uuid.uuid4().hex[:6]}", ["sef/#"])
    async with relay_rig(mosquitto, tmp_path, version) as rig:
        agent = Peer(rig.home.port, "a1")
        status, prop, signal = (
            "sef/agents/a1/status",
            "sef/agents/a1/props/x.y/P",
            "sef/agents/a1/signals/x.y/S",
        )
        await wait_for(lambda: watcher.payloads(rig.status_topic) == [b"1"], 5.0)
        agent.publish(status, b"online", retain=True)
        await wait_for(lambda: watcher.payloads(status) == [b"online"], 5.0)

        noticed_s = await cut(rig, watcher)
        for i in range(20):
            agent.publish(prop, str(i).encode(), retain=True)
        agent.publish(signal, b"event")
        await wait_for(lambda: rig.relay.queued == 21, 5.0)
        await asyncio.sleep(1.5)  # a reconnection attempt fails meanwhile
        await rig.link.restore()
        restored = time.monotonic()
        await wait_for(lambda: len(watcher.on(signal)) == 1, 10.0)
        delivered_s = time.monotonic() - restored
        await asyncio.sleep(0.5)  # late copies would show now

        assert watcher.payloads(prop) == [str(i).encode() for i in range(20)]
        assert all(s.retain for s in watcher.on(prop))
        assert [s.retain for s in watcher.on(signal)] == [False]
        assert watcher.payloads(status) == [b"online"], "no replay of the retained status"
        assert watcher.payloads(rig.status_topic) == [b"1", b"0", b"1"]
        assert (rig.relay.queued, rig.relay.dropped) == (0, 0)
        assert rig.relay.forwarded == 22

        # a late subscriber at the control broker gets the retained state, not the signal
        late = Peer(cport, "late", ["sef/agents/a1/#"])
        await wait_for(lambda: len(late.seen) == 2, 5.0)
        await asyncio.sleep(0.2)
        assert {(s.topic, s.payload, s.retain) for s in late.seen} == {
            (status, b"online", True),
            (prop, b"19", True),
        }

        # down: a call (not retained) and the EMS's status (retained at the home broker)
        home_side = Peer(rig.home.port, "a1-sub", ["sef/agents/a1/call/#", "sef/hosts/+/status"])
        ems = Peer(cport, "ems-1")
        ems.publish("sef/hosts/ems-1/status", b"up", retain=True)
        ems.publish("sef/agents/a1/call/x.y/M", b"call")
        await wait_for(lambda: len(home_side.seen) == 2, 5.0)
        assert [s.retain for s in home_side.on("sef/agents/a1/call/x.y/M")] == [False]
        home_late = Peer(rig.home.port, "a1-late", ["sef/hosts/+/status"])
        await wait_for(lambda: len(home_late.seen) == 1, 5.0)
        assert home_late.seen[0].payload == b"up" and home_late.seen[0].retain
        print(
            f"MQTT {'5' if version == 5 else '3.1.1'}: cut noticed (will) after "
            f"{noticed_s:.3f} s; backlog delivered {delivered_s:.2f} s after the restore"
        )
        for peer in (agent, late, home_side, ems, home_late):
            peer.close()

    # a clean stop: the home goes offline at once (retained 0), no will needed
    await wait_for(lambda: watcher.payloads(rig.status_topic)[-1:] == [b"0"], 3.0)
    assert watcher.on(rig.status_topic)[-1].retain
    watcher.close()


async def test_reconnect_attempts_replay_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The Mosquitto 2.0.11 bridge queued a copy of the retained state per failed attempt."""
    cport = BrokerURL.parse(mosquitto.url).port
    watcher = Peer(cport, f"watch-{uuid.uuid4().hex[:6]}", ["sef/#"])
    async with relay_rig(mosquitto, tmp_path) as rig:
        agent = Peer(rig.home.port, "a1")
        state = {
            "sef/agents/a1/status": b"online",
            "sef/agents/a1/about": b"about",
            "sef/agents/a1/interfaces/x.y": b"<xml/>",
            "sef/agents/a1/props/x.y/A": b"a0",
            "sef/agents/a1/props/x.y/B": b"b0",
        }
        for topic, payload in state.items():
            agent.publish(topic, payload, retain=True)
        await wait_for(lambda: all(watcher.on(t) for t in state), 5.0)

        await cut(rig, watcher)
        during = [f"a{i}".encode() for i in range(1, 6)]
        for payload in during:
            agent.publish("sef/agents/a1/props/x.y/A", payload, retain=True)
            await asyncio.sleep(1.6)  # 8 s of cut, attempts at backoff 1, 2, 2, 2 s
        await rig.link.restore()
        await wait_for(lambda: len(watcher.on("sef/agents/a1/props/x.y/A")) >= 6, 10.0)
        await asyncio.sleep(2.0)  # late copies would show now

        assert rig.relay.connect_failures >= 3, "several reconnection attempts failed"
        counts = {t: len(watcher.on(t)) for t in state}
        assert counts == {t: 1 for t in state} | {"sef/agents/a1/props/x.y/A": 6}
        assert watcher.payloads("sef/agents/a1/props/x.y/A") == [b"a0", *during]
        assert watcher.payloads(rig.status_topic) == [b"1", b"0", b"1"]
        agent.close()
    watcher.close()


async def test_queue_limit_drops_new_messages_and_says_so(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cport = BrokerURL.parse(mosquitto.url).port
    watcher = Peer(cport, f"watch-{uuid.uuid4().hex[:6]}", ["sef/#"])
    async with relay_rig(mosquitto, tmp_path, queue_limit=50) as rig:
        agent = Peer(rig.home.port, "a1")
        stats_topic = f"sef/gateways/{rig.home_id}/stats"
        topic = "sef/agents/a1/signals/x.y/S"
        await cut(rig, watcher)
        for i in range(200):
            agent.publish(topic, str(i).encode())
        await wait_for(lambda: rig.relay.queued + rig.relay.dropped == 200, 5.0)
        assert (rig.relay.queued, rig.relay.dropped, rig.relay.high_water) == (50, 150, 50)
        stats_before = len(watcher.on(stats_topic))
        await asyncio.sleep(1.0)
        await rig.link.restore()
        await wait_for(lambda: len(watcher.on(topic)) == 50, 10.0)
        await wait_for(lambda: len(watcher.on(stats_topic)) > stats_before, 5.0)

        # the first 50 were kept, in order; the 150 that found the queue full are gone
        assert watcher.payloads(topic) == [str(i).encode() for i in range(50)]
        stats = json.loads(watcher.on(stats_topic)[-1].payload)
        assert watcher.on(stats_topic)[-1].retain
        assert set(stats) == {
            "v", "home", "ts", "queued", "queue_limit", "dropped", "forwarded", "high_water",
            "uplink_down_s",
        }  # fmt: skip
        assert (stats["v"], stats["home"], stats["queue_limit"]) == (1, rig.home_id, 50)
        assert (stats["dropped"], stats["high_water"]) == (150, 50)
        assert stats["uplink_down_s"] >= 1.0
        assert abs(stats["ts"] - time.time()) < 5.0
        await wait_for(lambda: rig.relay.forwarded == 50, 5.0)
        agent.close()
    watcher.close()


async def test_a_restarted_gateway_brings_the_retained_host_status_home(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The control broker kept the relay's session (same client id), but the restarted
    gateway's home broker is new: the relay subscribes again, so the EMS's retained status
    reaches the home without the EMS publishing it again."""
    cport = BrokerURL.parse(mosquitto.url).port
    ems = Peer(cport, f"ems-{uuid.uuid4().hex[:6]}")
    ems.publish("sef/hosts/ems-1/status", b"up", retain=True)
    home_id = f"home-{uuid.uuid4().hex[:6]}"
    for run in range(2):
        async with relay_rig(mosquitto, tmp_path, home_id=home_id) as rig:
            agent = Peer(rig.home.port, f"a1-{run}", ["sef/hosts/+/status"])
            await wait_for(lambda: agent.payloads("sef/hosts/ems-1/status") == [b"up"], 5.0)  # noqa: B023
            assert agent.on("sef/hosts/ems-1/status")[0].retain
            agent.close()
    ems.close()
