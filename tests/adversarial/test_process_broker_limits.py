"""Defects 12 and 20 of issue 11: the shipped broker's limits.

12. The broker started by ``sef.broker`` refuses a 1 MiB publish (``max_packet_size``
    near the bus's 256 KiB payload limit) and disconnects the sender, while a real EMS and
    a real agent (their own processes) keep working.
20. The shipped queue is sized for the outage budget, and ``sef ems --broker-config``
    refuses to start against a broker whose queue for the EMS cannot hold
    ``--expected-rate`` × ``--outage-budget-s`` messages, saying the numbers.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from proc_support import Retained, SefProcess, is_online, stop_all
from sef.broker import DEFAULT_BUDGET, MAX_PACKET_BYTES, BrokerLimits, Mosquitto, QueueBudget
from sef.bus import MAX_PAYLOAD_BYTES

DEMO = "edu.pdx.powerlab.demo"


@pytest.fixture
def procs() -> Iterator[list[SefProcess]]:
    started: list[SefProcess] = []
    yield started
    stop_all(started)


class Sizes:
    """A subscriber to ``sef/#`` that records the size of every payload it receives."""

    def __init__(self, port: int) -> None:
        self.sizes: list[int] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
        self.client.on_message = lambda _c, _u, m: self.sizes.append(len(m.payload))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("sef/#", qos=1)
        assert subscribed.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rogue_publish(port: int, topic: str, size: int) -> bool:
    """Publish ``size`` bytes from a fresh client; whether the broker disconnected it."""
    dropped = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"rogue-{uuid.uuid4().hex[:6]}")
    client.on_disconnect = lambda *a: dropped.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, b"x" * size, qos=1)
        return dropped.wait(3.0)
    finally:
        client.disconnect()
        client.loop_stop()


def last_seen(api: str, agent: str) -> float:
    detail = httpx.get(f"{api}/agents/{agent}", timeout=5).json()
    assert detail["status"] == "online", detail
    return float(detail["last_seen"])


@pytest.mark.timeout(90)
def test_a_1_mib_publish_is_refused_while_ems_and_agent_keep_working(
    mosquitto: Mosquitto, procs: list[SefProcess], tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:6]
    agent, host = f"vb-{uid}", f"ems-{uid}"
    ems = SefProcess(
        "ems",
        "--insecure",
        "--broker",
        mosquitto.url,
        "--id",
        host,
        "--db",
        f"sqlite:///{tmp_path / 'ems.db'}",
        "--api",
        "127.0.0.1:0",
    )
    procs.append(ems)
    api = ems.wait_line(r"API on (http://\S+)").group(1)
    watch = Retained(mosquitto.port, f"sef/agents/{agent}/status")
    sizes = Sizes(mosquitto.port)
    try:
        procs.append(
            SefProcess(
                "agent",
                "virtual-battery",
                "--insecure",
                "--id",
                agent,
                "--broker",
                mosquitto.url,
                "--step",
                "0.2",
            )
        )
        watch.wait(f"sef/agents/{agent}/status", is_online)
        deadline = time.monotonic() + 20
        while True:  # the EMS knows the agent
            try:
                before = last_seen(api, agent)
                break
            except (AssertionError, KeyError):
                assert time.monotonic() < deadline, "EMS never saw the agent online"
                time.sleep(0.2)

        telemetry = f"sef/agents/{agent}/props/{DEMO}/Telemetry"
        group_call = f"sef/groups/g-{uid}/call/{DEMO}/EnergyMethod"
        for topic in (telemetry, group_call):
            assert rogue_publish(mosquitto.port, topic, 1 << 20), "1 MiB publish not refused"
        # a payload at the bus's own limit still passes: the broker's limit is not lower
        assert not rogue_publish(mosquitto.port, f"sef/clients/r-{uid}/reply", MAX_PAYLOAD_BYTES)
        time.sleep(1.0)
        assert max(sizes.sizes) == MAX_PAYLOAD_BYTES, "the 256 KiB publish did not arrive"
        assert all(size <= MAX_PACKET_BYTES for size in sizes.sizes)

        # the EMS keeps receiving the agent's telemetry, and a command reaches the agent
        time.sleep(1.0)
        assert last_seen(api, agent) > before
        reply = httpx.post(
            f"{api}/agents/{agent}/commands",
            json={"cmds": [["idle", 0, 0]], "timeout_s": 5},
            timeout=10,
        ).json()
        assert reply["status"] == "ok", reply
        assert ems.process.poll() is None and procs[-1].process.poll() is None
    finally:
        sizes.close()
        watch.close()
    assert ems.signal_and_wait(signal.SIGTERM) == 0


def test_the_shipped_queue_holds_the_default_outage_budget(mosquitto: Mosquitto) -> None:
    limits = mosquitto.limits
    assert limits.shortfall(DEFAULT_BUDGET) is None
    assert limits.max_queued_messages >= DEFAULT_BUDGET.rate_per_s * DEFAULT_BUDGET.outage_s
    assert "message_size_limit" not in mosquitto.config_path.read_text()
    assert f"max_packet_size {MAX_PACKET_BYTES}" in mosquitto.config_path.read_text()


def test_ems_refuses_a_broker_whose_queue_cannot_hold_the_budget(
    mosquitto: Mosquitto, procs: list[SefProcess], tmp_path: Path
) -> None:
    stock = tmp_path / "stock.conf"  # Mosquitto's defaults: 1000 queued, 20 in flight
    stock.write_text(f"listener {mosquitto.port} 127.0.0.1\nallow_anonymous true\n")
    ems = SefProcess(
        "ems",
        "--insecure",
        "--broker",
        mosquitto.url,
        "--id",
        f"ems-{uuid.uuid4().hex[:6]}",
        "--broker-config",
        str(stock),
        "--outage-budget-s",
        "10",
        "--expected-rate",
        "1000",
    )
    procs.append(ems)
    assert ems.process.wait(30) == 2, ems.output()
    text = " ".join(ems.output().split())
    assert "refusing to start" in text, text
    assert "1020 messages" in text and "1000 msg/s x 10 s = 10000 messages" in text, text
    assert "drops" in text, text


def test_ems_starts_against_the_shipped_broker_config(
    mosquitto: Mosquitto, procs: list[SefProcess]
) -> None:
    host = f"ems-{uuid.uuid4().hex[:6]}"
    ems = SefProcess(
        "ems",
        "--insecure",
        "--broker",
        mosquitto.url,
        "--id",
        host,
        "--broker-config",
        str(mosquitto.config_path),
    )
    procs.append(ems)
    budget = QueueBudget()
    held = BrokerLimits.read(mosquitto.config_path).holds(budget)
    ems.wait_line(rf"broker queue holds {held:g} messages")
    ems.wait_line(rf"EMS {host} running")
    assert ems.signal_and_wait(signal.SIGTERM) == 0, ems.output()


@pytest.mark.timeout(90)
def test_messages_the_broker_drops_show_as_counted_gaps(
    procs: list[SefProcess], tmp_path: Path
) -> None:
    """A queue too small for an outage (the EMS frozen with SIGSTOP) loses messages; the
    loss is visible: /metrics counts a sequence gap, and so does the agent's record.

    (A check that the documented alert has something to fire on, not a defect fix: the
    counter existed before.)
    """
    workdir = tmp_path / "small-queue"
    workdir.mkdir()
    small = QueueBudget(rate_per_s=1, outage_s=1)  # 1 message
    with Mosquitto(workdir=workdir, budget=small, extra_config="max_inflight_messages 1\n") as mq:
        uid = uuid.uuid4().hex[:6]
        agent, host = f"vb-{uid}", f"ems-{uid}"
        ems = SefProcess(
            "ems",
            "--insecure",
            "--broker",
            mq.url,
            "--id",
            host,
            "--db",
            f"sqlite:///{tmp_path / 'ems.db'}",
            "--api",
            "127.0.0.1:0",
        )
        procs.append(ems)
        api = ems.wait_line(r"API on (http://\S+)").group(1)
        procs.append(
            SefProcess(
                "agent",
                "virtual-battery",
                "--insecure",
                "--id",
                agent,
                "--broker",
                mq.url,
                "--step",
                "0.02",
            )
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                last_seen(api, agent)
                break
            except (AssertionError, KeyError):
                assert time.monotonic() < deadline, "EMS never saw the agent online"
                time.sleep(0.2)
        ems.process.send_signal(signal.SIGSTOP)  # an outage: nothing is acknowledged
        time.sleep(4.0)  # telemetry (~2/s) against 1 in flight + 1 queued
        ems.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 15
        while True:
            metrics = httpx.get(f"{api}/metrics", timeout=5).text
            gaps = [
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith("sef_sequence_gaps_total")
            ]
            if gaps and gaps[0] >= 1:
                break
            assert time.monotonic() < deadline, f"no gap counted: {gaps}\n{ems.output()[-2000:]}"
            time.sleep(0.3)
        assert httpx.get(f"{api}/agents/{agent}", timeout=5).json()["gaps"] >= 1
        assert ems.signal_and_wait(signal.SIGTERM) == 0, ems.output()
