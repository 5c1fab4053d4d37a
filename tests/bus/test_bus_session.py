"""Sparkplug-style session rules on a real Mosquitto: stale wills, gaps, host status, reconnect."""

from __future__ import annotations

import asyncio
from typing import Any

from sef.agents import Agent, method
from sef.broker import Mosquitto
from sef.bus import BusClient, Message, Status, Topics, decode_object
from sef.ems import EMS, Gap
from sef.interface import DEMO_INTERFACE, Variant
from support import is_online, record, wait_for

TOPICS = Topics()


class QuietAgent(Agent):
    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.hosts: list[tuple[str, bool]] = []

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 0)})

    def on_host_status(self, host_id: str, online: bool) -> None:
        self.hosts.append((host_id, online))

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        return None


async def retained(url: str, topic: str) -> bytes:
    """The retained payload of ``topic`` as a fresh subscriber sees it."""
    got: list[bytes] = []

    def keep(message: Message) -> None:
        if message.retain:
            got.append(message.payload)

    client = BusClient(url, on_message=keep)
    await client.subscribe(topic)
    await client.start()
    await wait_for(lambda: bool(got), 3.0)
    await client.stop()
    return got[-1]


async def test_stale_will_is_ignored_and_repaired(broker_url: str) -> None:
    agent = QuietAgent("stale-1", broker_url, keepalive_s=2)
    await agent.start()
    async with EMS(broker_url, "ems-stale") as ems:
        await wait_for(lambda: is_online(ems, "stale-1"), 3.0)
        # the will of an older session arrives late (e.g. after a half-open TCP connection)
        old = Status(False, agent.session.bdseq - 1, reason="will").to_payload()
        vandal = BusClient(broker_url)
        await vandal.start()
        vandal.publish(TOPICS.status("stale-1"), old, retain=True)
        await asyncio.sleep(0.5)
        assert record(ems, "stale-1").online is True
        # the agent noticed its retained status was overwritten and restored it
        status = Status.from_object(
            decode_object(await retained(broker_url, TOPICS.status("stale-1")))
        )
        assert status.online and status.bdseq == agent.session.bdseq
        await vandal.stop()
    await agent.stop()


async def test_sequence_gap_triggers_rebirth(broker_url: str) -> None:
    agent = QuietAgent("gappy", broker_url, keepalive_s=2)
    await agent.start()
    gaps: list[Gap] = []
    async with EMS(
        broker_url, "ems-gap", on_event=lambda e: gaps.append(e) if isinstance(e, Gap) else None
    ) as ems:
        await wait_for(lambda: is_online(ems, "gappy"), 3.0)
        # the birth reached this EMS as retained messages: the first live message sets
        # the sequence baseline
        agent.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})
        await wait_for(lambda: record(ems, "gappy").expected_seq is not None, 3.0)
        abouts_before = record(ems, "gappy").messages
        agent.session.seq += 3  # three messages lost on the way
        agent.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 2)})
        await wait_for(lambda: ems.rebirths_requested == 1, 3.0)
        assert len(gaps) == 1
        assert gaps[0].got == gaps[0].expected + 3
        # the agent answered the rebirth request with a full birth
        await wait_for(lambda: record(ems, "gappy").messages >= abouts_before + 4, 3.0)
        agent.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 3)})
        await asyncio.sleep(0.3)
        assert record(ems, "gappy").gaps == 1
    await agent.stop()


async def test_agents_see_primary_host_online_and_offline(broker_url: str) -> None:
    agent = QuietAgent("watcher", broker_url, keepalive_s=2)
    await agent.start()
    ems = EMS(broker_url, "primary", keepalive_s=2)
    await ems.start()
    await wait_for(lambda: ("primary", True) in agent.hosts, 3.0)
    await ems.stop()
    await wait_for(lambda: agent.hosts[-1] == ("primary", False), 3.0)
    await agent.stop()


async def test_agent_and_ems_recover_after_broker_restart(mosquitto: Mosquitto) -> None:
    url = mosquitto.url
    agent = QuietAgent("phoenix", url, keepalive_s=2)
    await agent.start()
    async with EMS(url, "ems-restart", keepalive_s=2) as ems:
        await wait_for(lambda: is_online(ems, "phoenix"), 3.0)
        bdseq = agent.session.bdseq
        mosquitto.stop()  # retained state is gone with a non-persistent broker
        await wait_for(lambda: not agent.bus.connected and not ems.bus.connected, 5.0)
        restarted = Mosquitto(port=mosquitto.port).start()
        try:
            await wait_for(lambda: agent.bus.connected and ems.bus.connected, 15.0)
            # re-announced and resubscribed: the EMS sees the agent again, in a new session
            await wait_for(
                lambda: record(ems, "phoenix").bdseq != bdseq and is_online(ems, "phoenix"), 5.0
            )
            replies = await ems.call("phoenix", "sef.Agent", "Ping", [])
            assert replies and replies[0].ok
            await agent.stop()
        finally:
            await ems.stop()
            restarted.stop()
