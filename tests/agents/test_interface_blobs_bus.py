"""Agents publish their interface XML once per hash (protocol version 2,
``{root}/interfaces/{sha256}``) and only when the broker lacks it; an EMS learns a
vendor's interface from it; a version-1 agent (per-agent XML) still works with this EMS;
``interface_topics="both"`` serves an EMS of either version. Real Mosquitto."""

from __future__ import annotations

import asyncio

import pytest

from blob_support import CHARGER, CHARGER_SHA, CHARGER_XML, DEMO_SHA, Charger, T
from sef.bus import BusClient, Message
from sef.ems import EMS
from sef.interface import DEMO_INTERFACE, builtin_xml
from support import record, wait_for


class Spy:
    """A client that records every message of the tree, live or retained."""

    def __init__(self, broker_url: str, name: str) -> None:
        self.messages: list[Message] = []
        self.bus = BusClient(broker_url, name, on_message=self.messages.append)

    async def start(self) -> Spy:
        await self.bus.subscribe("sef/#")
        await self.bus.start()
        return self

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic == topic]


async def test_agent_publishes_each_xml_once_per_hash_and_only_if_missing(
    broker_url: str,
) -> None:
    spy = await Spy(broker_url, "spy-blobs").start()
    first = Charger("ch-1", broker_url)
    await first.start()
    await first.blobs.wait()
    assert first.blobs.published == 3 and first.blobs.found == 0
    for digest, xml in ((CHARGER_SHA, CHARGER_XML), (DEMO_SHA, builtin_xml(DEMO_INTERFACE))):
        await wait_for(lambda d=digest: bool(spy.on(T.interface_blob(d))), 3.0)  # type: ignore[misc]
        assert spy.on(T.interface_blob(digest))[0].payload == xml.encode()
    assert not [m for m in spy.messages if "/agents/ch-1/interfaces/" in m.topic]

    second = Charger("ch-2", broker_url)  # same XML: the broker has it
    await second.start()
    await second.blobs.wait()
    assert (second.blobs.published, second.blobs.found) == (0, 3)
    await asyncio.sleep(0.2)
    assert len(spy.on(T.interface_blob(CHARGER_SHA))) == 1

    # Rebirth: every XML again, without looking
    second._rebirth()
    await wait_for(lambda: len(spy.on(T.interface_blob(CHARGER_SHA))) == 2, 3.0)
    assert second.blobs.published == 3
    for agent in (first, second):
        await agent.stop()
    await spy.bus.stop()


async def test_an_altered_retained_copy_is_replaced_at_the_next_birth(broker_url: str) -> None:
    first = Charger("ch-first", broker_url)
    await first.start()
    await first.blobs.wait()
    rogue = BusClient(broker_url, "rogue-blob")
    await rogue.start()
    forged = CHARGER_XML.replace('type="s"', 'type="i"').encode()
    rogue.publish(T.interface_blob(CHARGER_SHA), forged, retain=True)
    await asyncio.sleep(0.1)
    agent = Charger("ch-heal", broker_url)
    await agent.start()
    await agent.blobs.wait()
    assert (agent.blobs.published, agent.blobs.found) == (1, 2)  # the forged one only
    await first.stop()
    spy = await Spy(broker_url, "spy-heal").start()
    await wait_for(lambda: bool(spy.on(T.interface_blob(CHARGER_SHA))), 3.0)
    assert spy.on(T.interface_blob(CHARGER_SHA))[0].payload == CHARGER_XML.encode()
    await agent.stop()
    await rogue.stop()
    await spy.bus.stop()


@pytest.mark.parametrize("mode", ["v2", "v1", "both"])
async def test_ems_learns_a_vendor_interface_whatever_the_topics(
    broker_url: str, mode: str
) -> None:
    """v2: from the hash topic; v1 (an agent of protocol version 1): from the agent's own
    topic; both. The EMS subscribes to both kinds; the interface is callable."""
    spy = await Spy(broker_url, f"spy-{mode}").start()
    agent = Charger(f"ch-{mode}", broker_url, interface_topics=mode)
    await agent.start()
    await agent.blobs.wait()
    async with EMS(broker_url, f"ems-{mode}") as ems:
        await wait_for(lambda: ems.registry.interface(CHARGER) is not None, 5.0)
        rec = record(ems, agent.agent_id)
        assert rec.interfaces[CHARGER] == CHARGER_SHA
        assert ems.registry.unresolved_interfaces(rec) == []
        replies = await ems.call(agent.agent_id, CHARGER, "SetPhases", [3])
        assert replies and replies[0].ok and agent.phases == [3]
        await wait_for(lambda: rec.prop(CHARGER, "Mode") == "solar", 3.0)
    per_agent = spy.on(T.interface_xml(agent.agent_id, CHARGER))
    per_hash = spy.on(T.interface_blob(CHARGER_SHA))
    assert bool(per_agent) == (mode in ("v1", "both"))
    assert bool(per_hash) == (mode in ("v2", "both"))
    await agent.stop()
    await spy.bus.stop()


async def test_ems_started_first_learns_from_the_live_blob(broker_url: str) -> None:
    async with EMS(broker_url, "ems-live") as ems:
        agent = Charger("ch-live", broker_url)
        await agent.start()
        await wait_for(lambda: ems.registry.interface(CHARGER) is not None, 5.0)
        assert ems.registry.unresolved_interfaces(record(ems, "ch-live")) == []
        await agent.stop()


def test_unknown_interface_topics_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="interface_topics 'v3'"):
        Charger("ch-bad", "mqtt://127.0.0.1:1", interface_topics="v3")
