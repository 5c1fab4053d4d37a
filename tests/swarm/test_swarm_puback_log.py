"""``sef swarm --puback-log`` and ``--sub-qos 0`` against a real Mosquitto: every logged
Telemetry update is one the broker acknowledged and delivered (a QoS 1 subscriber got it),
and agents subscribed at QoS 0 still answer a group call."""

from __future__ import annotations

from pathlib import Path

import pytest

from sef.broker import Mosquitto
from sef.bus import BusClient, Message, PropertyUpdate, decode_object
from sef.ems import EMS
from sef.swarm import SwarmConfig, SwarmError, SwarmRunner
from support import wait_for

DEMO = "edu.pdx.powerlab.demo"


async def test_puback_log_holds_acknowledged_telemetry_and_qos0_agents_answer_calls(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    seen: set[tuple[str, float, int]] = set()

    def on_message(message: Message) -> None:
        agent = message.topic.split("/")[2]
        update = PropertyUpdate.from_object(decode_object(message.payload))
        assert update.ts is not None and update.seq is not None
        seen.add((agent, update.ts, update.seq))

    watch = BusClient(mosquitto.url, "watch-telemetry", on_message=on_message)
    await watch.subscribe(f"sef/agents/+/props/{DEMO}/Telemetry", qos=1)
    await watch.start()
    log = tmp_path / "acked.log"
    config = SwarmConfig(10, mosquitto.url, processes=2, telemetry_s=0.5, sub_qos=0, puback_log=log)
    try:
        async with SwarmRunner(config) as swarm:
            assert await swarm.wait_connected(timeout_s=30), swarm.stats.totals()
            await wait_for(lambda: swarm.stats.totals()["telemetry"] >= 40, 20.0, 0.1)
            ems = EMS(mosquitto.url, "ems-qos0")
            await ems.start()
            try:
                await wait_for(lambda: len(ems.registry.group_members("g1")) == 10, 20.0, 0.05)
                replies = await ems.call(
                    "group:g1", DEMO, "EnergyMethod", [[["charge", 4, 600]]], timeout_s=10.0
                )
                assert len(replies) == 10 and all(r.ok for r in replies)
            finally:
                await ems.stop()
        lines = [line.split() for line in log.read_text().splitlines()]
        logged = {(agent, float(ts), int(seq)) for agent, ts, seq in lines}
        assert len(logged) == len(lines) >= 40, "each acknowledged update logged once"
        await wait_for(lambda: logged <= seen, 10.0, 0.1)
        assert {agent for agent, _, _ in logged} == {f"swarm-{i:06d}" for i in range(10)}
    finally:
        await watch.stop()


def test_sub_qos_must_be_0_or_1() -> None:
    with pytest.raises(SwarmError, match="--sub-qos"):
        SwarmRunner(SwarmConfig(1, "mqtt://127.0.0.1:1883", sub_qos=2))
