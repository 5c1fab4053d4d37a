"""No loss across restarts: SIGKILL the EMS during a telemetry stream, restart, count rows.

The EMS runs as its own process (``sef ems --db``) so the kill is real; the stream is
10 000 sequence-numbered telemetry messages from 10 agents through a real Mosquitto, into
SQLite and PostgreSQL (the ``db_url`` fixture runs the test on both).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from sef.bus import BusClient, PropertyUpdate, Status, Topics
from sef.ems import EMS
from sef.ems.store import Store
from support import wait_for

TOPICS = Topics()
AGENTS = 10
PER_AGENT = 1000
KEY = "edu.pdx.powerlab.demo.Telemetry"


def start_ems(broker_url: str, db_url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sef",
            "ems",
            "--insecure",
            "--broker",
            broker_url,
            "--db",
            db_url,
            "--id",
            "ems-durable",
            "--keepalive",
            "2",
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    # --insecure's warning (stderr is merged) and, on PostgreSQL, the worker's role lines
    # (leader election) come before the banner
    lines: list[str] = []
    while not lines or "running" not in lines[-1]:
        line = proc.stdout.readline()
        assert line and len(lines) < 10, "".join(lines)
        lines.append(line)
    return proc


async def test_sigkill_during_stream_loses_nothing_and_duplicates_nothing(
    broker_url: str, db_url: str
) -> None:
    ems = start_ems(broker_url, db_url)
    publisher = BusClient(broker_url, "stream-source")
    await publisher.start()
    base = 1_767_225_600.0
    for a in range(AGENTS):
        publisher.publish(
            TOPICS.status(f"sim-{a}"), Status(True, 1, base, 10, 0).to_payload(), retain=True
        )
    await asyncio.sleep(0.3)  # the EMS subscribed (persistent session) and saw the births
    killed_at = 3000
    restarted_at = 6000
    total = AGENTS * PER_AGENT
    for i in range(total):
        agent, seq = i % AGENTS, 1 + i // AGENTS
        update = PropertyUpdate(
            {"TimeStamp": ["u", int(base) + seq], "n": ["x", i]}, base + seq, seq
        )
        publisher.publish(
            TOPICS.prop(f"sim-{agent}", "edu.pdx.powerlab.demo", "Telemetry"),
            update.to_payload(),
            retain=True,
        )
        if i % 200 == 199:
            await asyncio.sleep(0.02)  # about 6 000 messages/s
        if i == killed_at:
            ems.send_signal(signal.SIGKILL)
            ems.wait()
        if i == restarted_at:
            ems = start_ems(broker_url, db_url)
    store = Store.open(db_url)
    try:
        await wait_for(lambda: store.count_telemetry() >= total, 60.0, step_s=0.25)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would land by now
        assert store.count_telemetry() == total
        for a in range(AGENTS):
            rows = store.telemetry(f"sim-{a}", key=KEY)
            seqs = sorted(row["seq"] for row in rows)
            assert seqs == list(range(1, PER_AGENT + 1)), f"sim-{a}: gaps or duplicates"
        last = store.load_properties()
        assert all(
            last[f"sim-{a}"][KEY][0]["TimeStamp"][1] == int(base) + PER_AGENT for a in range(AGENTS)
        )
    finally:
        store.close()
        ems.send_signal(signal.SIGINT)
        try:
            ems.wait(10)
        except subprocess.TimeoutExpired:
            ems.kill()
        await publisher.stop()


async def test_restart_rebuilds_registry_from_store(broker_url: str, db_url: str) -> None:
    """Agents known before a restart are known after it, with their last values, even
    when the broker has forgotten them."""
    publisher = BusClient(broker_url, "one-agent")
    await publisher.start()
    first = EMS(broker_url, "ems-a", store=Store.open(db_url))
    await first.start()
    publisher.publish(
        TOPICS.status("keeper"), Status(True, 7, 1.0e9, 10, 0).to_payload(), retain=True
    )
    publisher.publish(
        TOPICS.prop("keeper", "edu.pdx.powerlab.demo", "Telemetry"),
        PropertyUpdate({"TimeStamp": ["u", 5]}, 1.0e9 + 5, 1).to_payload(),
    )
    store = first.store
    assert store is not None
    await wait_for(lambda: store.count_telemetry("keeper") == 1, 10.0)
    await first.stop()
    store.close()
    publisher.publish(TOPICS.status("keeper"), b"", retain=True)  # the broker forgets it
    await asyncio.sleep(0.2)
    second = EMS(broker_url, "ems-a", store=Store.open(db_url))
    await second.start()
    try:
        record = second.registry.get("keeper")
        assert record is not None, "restored from the store"
        assert record.bdseq == 7
        assert record.prop("edu.pdx.powerlab.demo", "Telemetry") == {"TimeStamp": ["u", 5]}
        assert record.online is None  # unknown until the bus says more
    finally:
        await second.stop()
        assert second.store is not None
        second.store.close()
        await publisher.stop()
