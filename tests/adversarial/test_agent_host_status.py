"""Defect 7 (agent side): a forged retained EMS "offline" with an older bdseq was accepted.

Agents now apply the bdseq rule to host status as the EMS does to agents: a status with a
bdseq below the last one seen from that host is stale and ignored. Real Mosquitto.
"""

from __future__ import annotations

import asyncio

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
        online = Status(True, 2_000_000_000_000, 1.0, 10, 0)
        host.publish(TOPICS.host_status("ems"), online.to_payload(), retain=True, qos=1)
        await wait_for(lambda: agent.host_online.get("ems") is True, 3.0)
        forged = Status(False, 1_000_000_000_000, reason="will")  # an older session's will
        host.publish(TOPICS.host_status("ems"), forged.to_payload(), retain=True, qos=1)
        await asyncio.sleep(0.5)
        assert agent.host_online["ems"] is True
        # the host's own newer offline is taken
        newer = Status(False, 2_000_000_000_001, reason="shutdown")
        host.publish(TOPICS.host_status("ems"), newer.to_payload(), retain=True, qos=1)
        await wait_for(lambda: agent.host_online.get("ems") is False, 3.0)
    finally:
        host.publish(TOPICS.host_status("ems"), b"", retain=True, qos=1)
        await host.stop()
        await agent.stop()
