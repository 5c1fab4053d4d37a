"""docs/protocol.md §3: the topic table names every topic of the tree (the gateway topics
included), and a controller acts on the gateway topics as the table says (a real
Mosquitto)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sef.agents import Agent, method
from sef.bus import BusClient, GatewayAgents, TopicKind, Topics, encode_bridge_state
from sef.ems import EMS
from sef.interface import DEMO_INTERFACE, Variant
from support import is_online, record, wait_for

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE = {
    "root": "sef",
    "agent": "a-1",
    "group": "g-1",
    "host": "h-1",
    "client": "c-1",
    "home": "home-1",
    "interface": "edu.pdx.powerlab.demo",
    "property": "Telemetry",
    "signal": "Changed",
    "method": "EnergyMethod",
    "sha256": "5" * 64,
}


def table_topics() -> list[str]:
    """The topics of §3's table, with example values for their placeholders."""
    section = PROTOCOL.read_text(encoding="utf-8").split("## 3. Topic tree", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `{root}")]
    return [re.sub(r"\{(\w+)\}", lambda m: EXAMPLE[m.group(1)], row.split("`")[1]) for row in rows]


def test_the_topic_table_covers_every_kind_of_topic() -> None:
    kinds = []
    for topic in table_topics():
        parsed = Topics().parse(topic)
        assert parsed is not None, f"§3 lists {topic}, which is not a topic of the tree"
        kinds.append(parsed.kind)
    assert sorted(kinds) == sorted(TopicKind), "every kind once"


class Quiet(Agent):
    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.rebirths = 0

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})

    def _rebirth(self) -> None:
        self.rebirths += 1
        super()._rebirth()

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        return None


async def test_gateway_topics_mark_a_home_offline_and_ask_it_to_re_announce(
    broker_url: str,
) -> None:
    topics = Topics()
    agent = Quiet("home-agent", broker_url)
    await agent.start()
    gateway = BusClient(broker_url, "gw-home-1")
    await gateway.start()
    agents = GatewayAgents("home-1", ["home-agent"]).to_payload()
    gateway.publish(topics.gateway_agents("home-1"), agents, retain=True)
    async with EMS(broker_url, "ems-gw") as ems:
        await wait_for(lambda: is_online(ems, "home-agent"), 3.0)
        await wait_for(lambda: ems.registry.gateway_agents.get("home-1") == ["home-agent"], 3.0)
        gateway.publish(topics.gateway_status("home-1"), encode_bridge_state(False), retain=True)
        await wait_for(lambda: record(ems, "home-agent").offline_reason == "gateway", 3.0)
        assert record(ems, "home-agent").online is False
        gateway.publish(topics.gateway_status("home-1"), encode_bridge_state(True), retain=True)
        await wait_for(lambda: agent.rebirths == 1, 3.0)
        await wait_for(lambda: is_online(ems, "home-agent"), 3.0)
    await gateway.stop()
    await agent.stop()
