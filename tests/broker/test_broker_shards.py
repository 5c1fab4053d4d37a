"""``sef.broker_shards``: agents on bridged edge brokers, the EMS on the core (real
Mosquittos, real agents, a real EMS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sef.agents import Agent, method
from sef.broker import BrokerLimits
from sef.broker_fleet import FleetSizing
from sef.broker_shards import ShardedBroker, bridge_config
from sef.cli import app
from sef.ems import EMS, Admission
from sef.interface import DEMO_INTERFACE, Variant
from support import wait_for


class Battery(Agent):
    interfaces = (DEMO_INTERFACE,)

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        return None


def test_bridge_topics_go_the_way_they_flow() -> None:
    text = bridge_config("127.0.0.1", 1883, "edge-0", root="r")
    assert "topic r/agents/+/status out 1" in text
    assert "topic r/groups/# in 1" in text
    assert "topic r/interfaces/# both 1" in text
    assert "try_private true" in text


def test_bad_shard_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ShardedBroker(agents=10, shards=0)
    with pytest.raises(ValueError, match="edge ports"):
        ShardedBroker(agents=10, shards=2, edge_ports=(1,))


@pytest.mark.timeout(90)
async def test_an_ems_on_the_core_sees_and_calls_agents_on_every_edge(tmp_path: Path) -> None:
    with ShardedBroker(agents=100, shards=2, workdir=tmp_path) as shards:
        assert len(shards.edge_urls) == 2
        agents = [Battery(f"sh-{i}", url, groups=("g1",)) for i, url in enumerate(shards.edge_urls)]
        for agent in agents:
            await agent.start()
        ems = EMS(shards.core_url, "ems", admission=Admission.open())
        await ems.start()
        try:

            def listed() -> bool:
                records = {r.agent_id: r for r in ems.agents()}
                return all(
                    (r := records.get(f"sh-{i}")) is not None
                    and r.online is True
                    and list(r.groups) == ["g1"]
                    and DEMO_INTERFACE in r.interfaces
                    for i in range(2)
                )

            await wait_for(listed, 20.0)
            replies = await ems.call(
                "group:g1", DEMO_INTERFACE, "EnergyMethod", [[["charge", 1, 60]]], timeout_s=10
            )
            assert sorted(r.agent for r in replies if r.ok) == ["sh-0", "sh-1"]
            pong = await ems.call("sh-1", "sef.Agent", "Ping", [], timeout_s=10)
            assert [r.ok for r in pong] == [True]
            await agents[0].stop()
            await wait_for(lambda: ems.registry.agents["sh-0"].online is False, 10.0)
            assert ems.registry.agents["sh-1"].online is True
        finally:
            await ems.stop()
            for agent in agents[1:]:
                await agent.stop()
        # a fresh EMS on the core finds the retained state of both edges' agents
        again = EMS(shards.core_url, "ems-2", admission=Admission.open(), announce=False)
        await again.start()
        try:
            await wait_for(lambda: {"sh-0", "sh-1"} <= set(again.registry.agents), 10.0)
        finally:
            await again.stop()


def test_sef_broker_shards_prints_a_core_and_bridged_edges(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "broker", "--insecure", "--shards", "2", "--agents", "30000", "--port", "20100",
            "--broker-dir", str(tmp_path), "--print-config",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    parts = result.stdout.split("# ==== ")[1:]
    assert [part.split(":", 1)[0] for part in parts] == ["core", "edge-0", "edge-1"]
    core, edge0, edge1 = (BrokerLimits.parse(part) for part in parts)
    assert FleetSizing(agents=30_000).shortfall(core) is None  # the whole fleet's state
    assert FleetSizing(agents=15_000).shortfall(edge0) is None
    assert "listener 20101 127.0.0.1" in parts[1] and "listener 20102 127.0.0.1" in parts[2]
    assert parts[1].count("address 127.0.0.1:20100") == 1
    assert "connection edge-1" in parts[2] and "\nconnection " not in parts[0]
    assert edge1 == edge0


def test_sef_broker_shards_needs_insecure_for_now(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["broker", "--shards", "2", "--broker-dir", str(tmp_path), "--pki", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--shards needs --insecure" in result.stderr
