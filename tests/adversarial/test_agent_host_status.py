"""Defect 7 (agent side): a forged retained EMS "offline" with an older bdseq was accepted.

Agents now apply the bdseq rule to host status as the EMS does to agents: a status with a
bdseq below the last one seen from that host is stale and ignored. Real Mosquitto.
"""

from __future__ import annotations

import asyncio
import time

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import BusClient, Status, Topics
from support import wait_for

TOPICS = Topics()


async def test_stale_host_offline_is_ignored(broker_url: str) -> None:
    agent = VirtualBatteryAgent("bat-h", broker_url, keepalive_s=2)
    await agent.start()
    host = BusClient(broker_url, "fake-ems")
    await host.start()
    try:
        now_ms = int(time.time() * 1000)
        online = Status(True, now_ms, 1.0, 10, 0)
        host.publish(TOPICS.host_status("ems"), online.to_payload(), retain=True, qos=1)
        await wait_for(lambda: agent.host_online.get("ems") is True, 3.0)
        forged = Status(False, now_ms - 60_000, reason="will")  # an older session's will
        host.publish(TOPICS.host_status("ems"), forged.to_payload(), retain=True, qos=1)
        await asyncio.sleep(0.5)
        assert agent.host_online["ems"] is True
        # a death of a session that never announced itself is not taken either
        unannounced = Status(False, now_ms + 1, reason="will")
        host.publish(TOPICS.host_status("ems"), unannounced.to_payload(), retain=True, qos=1)
        await asyncio.sleep(0.5)
        assert agent.host_online["ems"] is True
        # the host's own shutdown (its current session) is taken
        shutdown = Status(False, now_ms, reason="shutdown")
        host.publish(TOPICS.host_status("ems"), shutdown.to_payload(), retain=True, qos=1)
        await wait_for(lambda: agent.host_online.get("ems") is False, 3.0)
    finally:
        host.publish(TOPICS.host_status("ems"), b"", retain=True, qos=1)
        await host.stop()
        await agent.stop()


async def test_host_status_from_the_far_future_is_ignored(broker_url: str) -> None:
    """A forged offline with bdseq 2**62 would make every real host status look stale."""
    agent = VirtualBatteryAgent("bat-f", broker_url, keepalive_s=2)
    await agent.start()
    host = BusClient(broker_url, "fake-ems-2")
    await host.start()
    try:
        real = Status(True, int(time.time() * 1000), time.time(), 10, 0)
        host.publish(TOPICS.host_status("ems"), real.to_payload(), retain=True, qos=1)
        await wait_for(lambda: agent.host_online.get("ems") is True, 3.0)
        for bdseq in (2**62, 2**63, 2**64 + 5):
            forged = Status(False, bdseq, reason="will")
            host.publish(TOPICS.host_status("ems"), forged.to_payload(), retain=True, qos=1)
        await asyncio.sleep(0.5)
        assert agent.host_online["ems"] is True
        assert agent.host_bdseq["ems"] == real.bdseq
    finally:
        host.publish(TOPICS.host_status("ems"), b"", retain=True, qos=1)
        await host.stop()
        await agent.stop()
