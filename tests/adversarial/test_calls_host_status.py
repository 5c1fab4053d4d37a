"""Defect 7 of issue 11 (EMS side): a forged retained EMS status does not stay.

A real Mosquitto, a real EMS and a real battery agent; a rogue anonymous client publishes,
retained on the EMS's status topic, an offline status with the EMS's own bdseq, then one
with an older bdseq, then garbage. Each time the EMS puts its online status back (same
bdseq), so that a controller or agent that starts later sees the truth, and the agent
ends with the host online. Before the fix the forged offline status stayed retained.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from calls_support import retained, start_ems
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BusClient
from support import wait_for

TOPIC = "sef/hosts/ems/status"


async def retained_after(broker: str, forged: object, bdseq: int, wait_s: float = 3.0) -> None:
    """Wait (at most ``wait_s``) until the retained EMS status is its online birth again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        now = await retained(broker, TOPIC)
        if now is not None and now.get("state") == "online" and now.get("bdseq") == bdseq:
            return
        assert loop.time() < deadline, f"after {forged!r} the retained EMS status is {now}"
        await asyncio.sleep(0.2)


async def test_forged_retained_host_status_is_repaired(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker = mosquitto.url
    stack = await start_ems(broker, tmp_path / "ems.db")
    agent = VirtualBatteryAgent("bat-1", broker, groups=["feeder-7"], step_s=1.0)
    await agent.start()
    rogue = BusClient(broker, "rogue")
    await rogue.start()
    try:
        bdseq = stack.ems.session.bdseq
        await wait_for(lambda: agent.host_online.get("ems") is True, 5.0)
        forgeries = [
            {"v": 1, "state": "offline", "bdseq": bdseq, "reason": "will"},
            {"v": 1, "state": "offline", "bdseq": bdseq - 1000, "reason": "shutdown"},
            {"v": 1, "state": "online", "bdseq": bdseq - 5, "ts": 1.0, "seq": 0},
        ]
        for forged in forgeries:
            rogue.publish(TOPIC, json.dumps(forged).encode(), retain=True)
            await retained_after(broker, forged, bdseq)
        rogue.publish(TOPIC, b"\xff not json", retain=True)
        await retained_after(broker, "garbage", bdseq)
        await wait_for(lambda: agent.host_online.get("ems") is True, 5.0)

        metrics = await stack.metrics()
        assert metrics[("sef_host_status_repairs_total", ())] >= 4
        assert metrics[("sef_session_takeovers_total", ())] == 0  # older births: no takeover
    finally:
        await rogue.stop()
        await agent.stop()
        await stack.stop()

    # the EMS's own clean shutdown is not "repaired"
    final = await retained(broker, TOPIC)
    assert final is not None and final["state"] == "offline" and final["reason"] == "shutdown"
