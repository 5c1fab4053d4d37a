"""The swarm's parts without a broker: the MQTT codec, one agent's call handling (§6) on
a fake transport, the stats merge and the process plan."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from typing import Any

import pytest

from sef.bus import ErrorName
from sef.swarm import SwarmAgent, SwarmShared, SwarmStats, WorkerStats, percentile, plan_processes
from sef.swarm._mqtt import MqttConnection, connect_packet, publish_packet, subscribe_packet
from sef.swarm._runner import SwarmConfig, SwarmError, SwarmRunner
from sef.swarm._worker import source_address

DEMO = "edu.pdx.powerlab.demo"


class FakeTransport(asyncio.Transport):
    """Collects what a connection writes."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """Split raw MQTT bytes into (first byte, body)."""
    out, pos = [], 0
    while pos < len(data):
        header, length, mult, i = data[pos], 0, 1, pos + 1
        while True:
            byte = data[i]
            i += 1
            length += (byte & 0x7F) * mult
            mult *= 128
            if byte < 0x80:
                break
        out.append((header, bytes(data[i : i + length])))
        pos = i + length
    return out


def publishes(data: bytes) -> list[tuple[str, Any, bool]]:
    """The PUBLISH packets in ``data``: (topic, JSON payload or raw bytes, retain)."""
    found = []
    for header, body in packets(data):
        if header >> 4 != 3:
            continue
        tlen = int.from_bytes(body[:2], "big")
        topic = body[2 : 2 + tlen].decode()
        payload = body[2 + tlen + (2 if header & 0x06 else 0) :]
        try:
            found.append((topic, json.loads(payload), bool(header & 1)))
        except ValueError:
            found.append((topic, payload, bool(header & 1)))
    return found


def connected_agent(**shared: Any) -> tuple[SwarmAgent, FakeTransport]:
    agent = SwarmAgent(SwarmShared(WorkerStats(0), groups=["g1"], **shared), "sw-000001", 1)
    agent.new_session()
    transport = FakeTransport()
    agent.connection_made(transport)
    agent.data_received(b"\x20\x02\x00\x00")  # CONNACK accepted
    (header, body), *_ = packets(bytes(transport.data))[1:]
    assert header == 0x82  # SUBSCRIBE after the CONNACK, not before
    agent.data_received(b"\x90\x07" + body[:2] + b"\x01\x01\x01\x01\x01")  # SUBACK
    return agent, transport


def deliver(agent: SwarmAgent, topic: str, payload: bytes, qos: int = 1) -> None:
    agent.data_received(publish_packet(topic.encode(), payload, qos, False, 7 if qos else 0))


def call(call_id: str, args: list[Any], **extra: Any) -> bytes:
    now = time.time()
    obj = {"v": 1, "id": call_id, "ts": now, "exp": now + 30, "args": args,
           "reply_to": "sef/clients/ems/reply", "sender": "ems", **extra}  # fmt: skip
    return json.dumps(obj).encode()


def test_connect_packet_carries_the_will_and_a_clean_session() -> None:
    agent, transport = connected_agent()
    header, body = packets(bytes(transport.data))[0]
    assert header == 0x10
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0x2E  # clean session, will, will QoS 1, will retain
    assert b'"state":"offline"' in body and b'"reason":"will"' in body
    assert f'"bdseq":{agent.bdseq}'.encode() in body


def test_birth_follows_the_suback_in_protocol_order() -> None:
    agent, transport = connected_agent()
    sent = publishes(bytes(transport.data))
    topics = [t for t, _, _ in sent]
    blob_topics = [t for t in topics if t.startswith("sef/interfaces/")]
    assert len(blob_topics) == 2  # the demo interface and sef.Agent, once per process
    own = [(t, p, r) for t, p, r in sent if t.startswith("sef/agents/sw-000001/")]
    assert [t.rsplit("/", 1)[-1] for t, _, _ in own] == [
        "status", "about", "AssetName", "Telemetry", "Nameplate",
    ]  # fmt: skip
    assert all(r for _, _, r in own)  # retained
    seqs = [p["seq"] for _, p, _ in own]
    assert seqs == [0, 1, 2, 3, 4]
    status, about = own[0][1], own[1][1]
    assert isinstance(status, dict) and isinstance(about, dict)
    assert status["state"] == "online" and status["bdseq"] == agent.bdseq
    assert about["groups"] == ["g1"]
    assert {i["name"] for i in about["interfaces"]} == {DEMO, "sef.Agent"}
    # a second agent of the process does not publish the blobs again
    other = SwarmAgent(agent.shared, "sw-000002", 2)
    other.new_session()
    other_transport = FakeTransport()
    other.connection_made(other_transport)
    other.data_received(b"\x20\x02\x00\x00")
    pid = packets(bytes(other_transport.data))[1][1][:2]
    other.data_received(b"\x90\x03" + pid + b"\x01")
    assert not [t for t, _, _ in publishes(bytes(other_transport.data)) if "interfaces" in t]


def test_per_agent_interface_topics_with_v1() -> None:
    _, transport = connected_agent(interface_topics="v1")
    topics = [t for t, _, _ in publishes(bytes(transport.data))]
    assert f"sef/agents/sw-000001/interfaces/{DEMO}" in topics
    assert not [t for t in topics if t.startswith("sef/interfaces/")]


def test_calls_follow_section_6() -> None:
    agent, transport = connected_agent()
    transport.data.clear()
    group = f"sef/groups/g1/call/{DEMO}/EnergyMethod"
    deliver(agent, group, call("c1", [[["discharge", 3, 60]]]))
    deliver(agent, group, call("c1", [[["discharge", 3, 60]]]))  # duplicate: dropped
    deliver(agent, f"sef/agents/sw-000001/call/{DEMO}/Nope", call("c2", []))
    deliver(agent, group, call("c3", [[["boost", 3, 60]]]))
    deliver(agent, "sef/agents/sw-000001/call/sef.Agent/Ping", call("c4", [], exp=1.0))
    deliver(agent, "sef/agents/sw-000001/call/sef.Agent/Ping", call("c5", [], v=2))
    deliver(agent, "sef/agents/sw-000001/call/sef.Agent/Ping", b"[1, 2]")  # never answered
    deliver(agent, "sef/agents/sw-000001/call/sef.Agent/Ping", call("c6", [], reply_to="x/#"))
    deliver(agent, "sef/agents/sw-000001/call/sef.Agent/Ping", call("c7", []), qos=0)
    sent = publishes(bytes(transport.data))
    replies = {p["id"]: p for t, p, _ in sent if t == "sef/clients/ems/reply"}
    assert set(replies) == {"c1", "c2", "c3", "c4", "c5", "c7"}
    assert replies["c1"]["ok"] is True and replies["c1"]["applied"] is True
    assert replies["c2"]["error"]["name"] == ErrorName.UNKNOWN_METHOD
    assert replies["c3"]["error"]["name"] == ErrorName.INVALID_ARGS
    assert replies["c3"]["error"]["message"].startswith("cmds[0][0]")
    assert replies["c4"]["error"]["name"] == ErrorName.EXPIRED
    assert replies["c5"]["error"]["name"] == ErrorName.UNSUPPORTED_VERSION
    assert replies["c7"]["ok"] is True and abs(replies["c7"]["result"][0] - time.time()) < 5
    assert agent.event == "discharge" and agent.rate_kw == 3
    stats = agent.shared.stats
    assert stats.receipts["c1"].agents == 1 and stats.receipts["c1"].duplicates == 1
    assert stats.counts["duplicates"] == 1
    # every QoS 1 delivery was acknowledged
    pubacks = [body for header, body in packets(bytes(transport.data)) if header == 0x40]
    assert len(pubacks) == 8


def test_a_stale_death_is_repaired_and_a_retained_one_ignored() -> None:
    agent, transport = connected_agent()
    transport.data.clear()
    old = json.dumps({"v": 1, "state": "offline", "bdseq": agent.bdseq - 5, "reason": "will"})
    agent.data_received(publish_packet(b"sef/agents/sw-000001/status", old.encode(), 1, True, 3))
    assert not publishes(bytes(transport.data))  # retained: the birth already replaced it
    deliver(agent, "sef/agents/sw-000001/status", old.encode())
    (topic, status, retain), = publishes(bytes(transport.data))  # fmt: skip
    assert topic == "sef/agents/sw-000001/status" and retain
    assert isinstance(status, dict)
    assert status["state"] == "online" and status["bdseq"] == agent.bdseq and status["seq"] == 5


def test_rebirth_republishes_from_seq_0() -> None:
    agent, transport = connected_agent()
    agent.send_telemetry()
    transport.data.clear()
    deliver(agent, "sef/agents/sw-000001/call/sef.Agent/Rebirth", call("r1", []))
    sent = publishes(bytes(transport.data))
    own = [p for t, p, _ in sent if t.startswith("sef/agents/sw-000001/")]
    assert [p["seq"] for p in own] == [0, 1, 2, 3, 4]
    assert any(t == "sef/clients/ems/reply" for t, _, _ in sent)


def test_packets_split_anywhere_are_reassembled() -> None:
    received: list[tuple[str, bytes]] = []

    class Sink(MqttConnection):
        def on_publish(self, topic: str, payload: bytes, retain: bool) -> None:
            received.append((topic, payload))

    sink = Sink()
    sink.connection_made(FakeTransport())
    big = b"x" * 20000  # a 3-byte remaining length
    stream = b"".join(
        publish_packet(f"t/{i}".encode(), big if i == 2 else b"p%d" % i, 1, False, i + 1)
        for i in range(4)
    )
    for cut in (1, 2, 3, 7, 1000, 20001):
        received.clear()
        for pos in range(0, len(stream), cut):
            sink.data_received(stream[pos : pos + cut])
        assert [t for t, _ in received] == ["t/0", "t/1", "t/2", "t/3"], cut
        assert received[2][1] == big


def test_a_garbage_packet_drops_the_connection() -> None:
    lost: list[Exception | None] = []

    class Conn(MqttConnection):
        def on_lost(self, exc: Exception | None) -> None:
            lost.append(exc)

    conn = Conn()
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"\xf0\x00")  # reserved packet type
    assert transport.closed and lost


def test_packet_builders() -> None:
    assert subscribe_packet(1, ["a/b"]) == b"\x82\x08\x00\x01\x00\x03a/b\x01"
    assert publish_packet(b"t", b"x", 0) == b"\x30\x04\x00\x01tx"
    assert connect_packet("c", 10)[:2] == b"\x10\x0d"


def test_stats_merge_and_percentiles() -> None:
    a, b = WorkerStats(0), WorkerStats(1)
    for i in range(90):
        a.received("g", "x.Y", 100.0 + i / 1000, 100.0)
    for _ in range(10):
        b.received("g", "x.Y", 101.0, 100.0)
    a.bump("connected", 90)
    b.bump("connected", 10)
    merged = SwarmStats()
    merged.update(a.line(0.0))
    merged.update(b.line(0.0))
    out = merged.to_json(0.0)
    assert out["connected"] == 100
    assert out["calls"]["g"]["agents"] == 100
    assert out["calls"]["g"]["p50_ms"] == 49.0
    assert out["calls"]["g"]["p99_ms"] == 1000.0
    assert percentile({}, 0.5) is None
    with pytest.raises(ValueError):
        merged.update("[1]")


def test_process_plan_and_config_checks() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert plan_processes(100) == 1
    if hard != resource.RLIM_INFINITY:
        assert plan_processes(hard * 2) >= 3
        with pytest.raises(SwarmError, match="file descriptor"):
            plan_processes(hard * 2, 1)
    for bad in (
        SwarmConfig(0, "mqtt://127.0.0.1:1"),
        SwarmConfig(1, "mqtts://127.0.0.1:1"),
        SwarmConfig(1, "mqtt://127.0.0.1:1", groups=["bad/group"]),
        SwarmConfig(1, "mqtt://127.0.0.1:1", interface_topics="v3"),
        SwarmConfig(1, "mqtt://127.0.0.1:1", telemetry_s=0),
        SwarmConfig(1, "foo://127.0.0.1:1"),
        SwarmConfig(1, "mqtt://127.0.0.1:1", processes=0),
    ):
        with pytest.raises(SwarmError):
            SwarmRunner(bad)
    runner = SwarmRunner(SwarmConfig(10, "mqtt://127.0.0.1:1", processes=3))
    configs = runner.worker_configs()
    assert [c.count for c in configs] == [4, 3, 3] and [c.first for c in configs] == [0, 4, 7]


def test_source_addresses_spread_over_loopback_only() -> None:
    assert source_address("127.0.0.1", 0) == "127.0.0.2"
    assert source_address("127.0.0.1", 25_000) == "127.0.0.4"
    assert source_address("localhost", 10_000) == "127.0.0.3"
    assert source_address("192.0.2.1", 0) is None
    assert source_address("broker.example", 0) is None


def test_an_unexpected_error_in_a_handler_is_counted_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent, transport = connected_agent()

    def broken(*_: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(agent.shared, "entry", broken)
    deliver(agent, "sef/agents/sw-000001/call/sef.Agent/Ping", call("x1", []))
    assert agent.shared.stats.counts["rejected"] == 1
    assert agent.transport is not None and not transport.closed  # still connected
