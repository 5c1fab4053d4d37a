"""``sef call`` sends without reading the fleet: with thousands of agents' retained state
on the broker it subscribes to nothing for a shipped interface, to one agent's topics or
the once-per-hash interface XML for another, and receives a handful of messages (a real
Mosquitto, real agents)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from blob_support import CHARGER, CHARGER_XML, Charger
from sef.bus import BusClient, Message, Topics
from sef.cli._call import CallOutcome, call_once
from sef.clock import default_clock
from sef.ems import CallRefused, CallTarget
from support import wait_for

TOPICS = Topics()
FLEET = 3000


class Tap:
    """Counts the retained messages under a pattern."""

    def __init__(self, url: str, pattern: str) -> None:
        self.topics: set[str] = set()
        self.pattern = pattern
        self.bus = BusClient(url, on_message=self._keep)

    def _keep(self, message: Message) -> None:
        if message.payload:
            self.topics.add(message.topic)

    async def __aenter__(self) -> Tap:
        await self.bus.subscribe(self.pattern)
        await self.bus.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.stop()


async def publish_fleet(url: str) -> None:
    """FLEET agents' retained status, About and version-1 charger XML (what the old
    `sef call` read in full before sending)."""
    bus = BusClient(url)
    await bus.start()
    try:
        for i in range(FLEET):
            agent = f"fake-{i}"
            bus.publish(TOPICS.status(agent), b'{"online": true}', qos=0, retain=True)
            bus.publish(TOPICS.about(agent), b'{"about": {}}', qos=0, retain=True)
            xml_topic = TOPICS.interface_xml(agent, CHARGER)
            bus.publish(xml_topic, CHARGER_XML.encode(), qos=0, retain=True)
            if i % 500 == 499:
                await asyncio.sleep(0)
        await bus.publish_acked(f"{TOPICS.root}/sentinel", b"1")  # after all the above
    finally:
        await bus.stop()


@pytest.fixture
async def fleet(broker_url: str) -> AsyncIterator[str]:
    await publish_fleet(broker_url)
    async with Tap(broker_url, f"{TOPICS.root}/agents/+/status") as tap:
        await wait_for(lambda: len(tap.topics) >= FLEET, 20.0)
    yield broker_url


async def call(
    url: str, target: str, interface: str, name: str, args: list[Any], **kw: Any
) -> CallOutcome:
    return await call_once(
        url, None, CallTarget.parse(target), interface, name, args, clock=default_clock(), **kw
    )


@pytest.mark.timeout(90)
async def test_a_shipped_interface_is_called_without_subscribing_to_anything(
    fleet: str,
) -> None:
    agent = Charger("ch-1", fleet)
    await agent.start()
    try:
        outcome = await call(fleet, "ch-1", "sef.Agent", "Ping", [])
        assert [r.agent for r in outcome.replies if r.ok] == ["ch-1"]
        assert outcome.subscriptions == []
        assert outcome.received == 0  # none of the 9 000 retained messages
    finally:
        await agent.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_an_agent_s_own_interface_is_learned_from_its_topics_only(
    fleet: str, version: str
) -> None:
    agent = Charger("ch-2", fleet, interface_topics=version)
    await agent.start()
    try:
        outcome = await call(fleet, "ch-2", CHARGER, "SetPhases", [3])
        assert [r.agent for r in outcome.replies if r.ok] == ["ch-2"]
        assert agent.phases == [3]
        assert all("/agents/ch-2/" in t or "/interfaces/" in t for t in outcome.subscriptions)
        assert outcome.received <= 3  # its About, its XML (v1) or the blob (v2)
    finally:
        await agent.stop()


@pytest.mark.timeout(90)
async def test_a_group_call_learns_from_the_once_per_hash_xml_not_the_fleet(fleet: str) -> None:
    agents = [Charger(f"gc-{i}", fleet, groups=("g1",)) for i in range(2)]
    for agent in agents:
        await agent.start()
    try:
        async with Tap(fleet, TOPICS.all_interface_blobs()) as blobs:
            await wait_for(lambda: len(blobs.topics) >= 2, 10.0)  # demo + charger XML
        outcome = await call(fleet, "group:g1", CHARGER, "SetPhases", [1], expect=2)
        assert sorted(r.agent for r in outcome.replies if r.ok) == ["gc-0", "gc-1"]
        assert outcome.subscriptions == [TOPICS.all_interface_blobs()]
        assert outcome.received < 20  # one XML per interface version, not 3 000 agents'
    finally:
        for agent in agents:
            await agent.stop()


@pytest.mark.timeout(60)
async def test_an_unknown_interface_is_refused_and_nothing_sent(broker_url: str) -> None:
    with pytest.raises(CallRefused, match="unknown interface"):
        await call(broker_url, "nobody", "org.example.Nothing", "Do", [])
    with pytest.raises(CallRefused, match="invalid interface name"):
        await call(broker_url, "nobody", "no dots", "Do", [])


@pytest.mark.timeout(60)
def test_sef_call_group_with_expect_returns_replies(broker_url: str) -> None:
    """The command line: a group call ends once --expect replies came (exit 0, JSON)."""

    async def run() -> subprocess.CompletedProcess[str]:
        agent = Charger("cli-1", broker_url, groups=("g2",))
        await agent.start()
        try:
            return await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable, "-m", "sef", "call", "--insecure", "--broker", broker_url,
                    "--json", "--expect", "1", "--timeout", "30", "group:g2",
                    "sef.Agent.Ping",
                ],
                capture_output=True, text=True, timeout=50,
            )  # fmt: skip
        finally:
            await agent.stop()

    done = asyncio.run(run())
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["agent"] for r in json.loads(done.stdout)] == ["cli-1"]
