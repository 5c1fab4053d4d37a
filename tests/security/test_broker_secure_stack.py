"""The real EMS and agents over the generated mutual-TLS broker: everything they publish
today passes the ACL (births, About, properties, wills, calls, replies, host status), and
what an impostor sends with a stolen-agent certificate does not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from secure_stack import SecureBroker, make_pki, running_secure_broker, security_for
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import BusClient, Status, Topics
from sef.ems import EMS
from sef.interface import DEMO_INTERFACE
from sef.security import Role
from support import is_online, wait_for

TOPICS = Topics()


@dataclass
class Stack:
    broker: SecureBroker
    ems: EMS
    agents: dict[str, VirtualBatteryAgent]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    ca = make_pki(tmp_path)
    ems_security = security_for(ca, "ems-1", Role.EMS)
    agent_security = {
        "bat-a": security_for(ca, "bat-a", Role.AGENT, ("g1",), "h1"),
        "bat-b": security_for(ca, "bat-b", Role.AGENT, ("g2",), "h2"),
    }
    with running_secure_broker(ca, tmp_path) as broker:
        agents = {
            agent_id: VirtualBatteryAgent(
                agent_id,
                broker.url,
                groups=[ca.current()[agent_id].groups[0]],
                keepalive_s=2,
                step_s=1.0,
                security=security,
            )
            for agent_id, security in agent_security.items()
        }
        for agent in agents.values():
            await agent.start()
        ems = EMS(broker.url, "ems-1", keepalive_s=2, security=ems_security)
        await ems.start()
        try:
            await wait_for(lambda: all(is_online(ems, a) for a in agents), 10.0)
            yield Stack(broker, ems, agents)
        finally:
            await ems.stop()
            for agent in agents.values():
                await agent.stop()


async def test_ems_and_agents_work_over_mutual_tls(stack: Stack) -> None:
    ems = stack.ems
    replies = await ems.call("bat-a", DEMO_INTERFACE, "EnergyMethod", [[["idle", 0, 60]]])
    assert [(r.agent, r.ok) for r in replies] == [("bat-a", True)]
    replies = await ems.call(
        "group:g2", DEMO_INTERFACE, "EnergyMethod", [[["charge", 2, 60]]], timeout_s=3.0
    )
    assert [(r.agent, r.ok) for r in replies] == [("bat-b", True)]
    record = ems.registry.get("bat-a")
    assert record is not None and record.about and record.properties  # About, telemetry


async def test_an_agent_key_cannot_forge_another_agents_state_or_command_it(
    stack: Stack,
) -> None:
    """The attacks of issue 11 with a stolen agent certificate (bat-b's), on MQTT 3.1.1
    (no PUBACK reason codes: the broker drops the publish silently)."""
    ca = stack.broker.ca
    stolen = security_for(ca, "bat-b", Role.AGENT, ("g2",), "h2")
    rogue = BusClient(stack.broker.url, "rogue", tls=stolen.client_tls())
    await rogue.start()
    # (the broker names the rogue "bat-b", use_username_as_clientid: it can take over the
    # real bat-b's session, no one else's)
    try:
        offline = Status(False, 1, 0.0, reason="forged").to_payload()
        rogue.publish(TOPICS.status("bat-a"), offline, retain=True)
        rogue.publish(TOPICS.host_status("ems-1"), offline, retain=True)
        rogue.publish(TOPICS.call("bat-a", DEMO_INTERFACE, "EnergyMethod"), b'{"v":1}')
        rogue.publish(TOPICS.group_call("g1", DEMO_INTERFACE, "EnergyMethod"), b'{"v":1}')
        rogue.publish(TOPICS.status("bat-b"), offline, retain=True)  # its own: allowed
        await wait_for(lambda: not is_online(stack.ems, "bat-b"), 5.0)
        await asyncio.sleep(0.2)
        assert is_online(stack.ems, "bat-a")
        assert stack.ems.host_status_repairs == 0  # no forged status reached the EMS
        assert stack.agents["bat-a"].calls_rejected == 0  # no call reached bat-a
    finally:
        await rogue.stop()


async def test_a_client_with_the_ems_id_does_not_take_over_the_ems(stack: Stack) -> None:
    ca = stack.broker.ca
    impostor = BusClient(
        stack.broker.url,
        "ems-1",
        tls=security_for(ca, "op-9", Role.OPERATOR).client_tls(),
    )
    stack.broker.reload()  # give the new operator identity its (read-only) rights
    await impostor.start()
    try:
        await asyncio.sleep(0.5)
        assert stack.ems.bus.connected and stack.ems.bus.connections == 1
        assert stack.ems.takeovers == 0
        replies = await stack.ems.call("bat-a", DEMO_INTERFACE, "EnergyMethod", [[["idle", 0, 5]]])
        assert replies and replies[0].ok
    finally:
        await impostor.stop()
