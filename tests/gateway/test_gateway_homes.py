"""Acceptance of ``sef gateway``: two homes bridged to one control-server broker.

Each home is a :class:`~sef.gateway.Gateway` (Mosquitto + bridge + mDNS) whose uplink runs
through a :class:`CuttableLink`, so the test can cut a home's uplink for real while the
control broker and the EMS keep running. Agents are their own processes and find their
home's broker over mDNS (``--broker mdns://HOME``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from mdns_lock import mdns_lock
from sef.broker import Mosquitto
from sef.bus import BrokerURL, BusClient, Message
from sef.ems import EMS
from sef.gateway import Gateway
from support import AgentProcess, record, wait_for
from tcp_cut import CuttableLink

DEMO = "edu.pdx.powerlab.demo"


def online(ems: EMS, *agent_ids: str) -> bool:
    return all((r := ems.registry.get(a)) is not None and r.online is True for a in agent_ids)


async def start_agent(agent_id: str, broker: str, group: str) -> AgentProcess:
    proc = AgentProcess(agent_id, broker, "--keepalive", "2", "--step", "0.2", "--group", group)
    return await asyncio.to_thread(proc.start)


async def test_two_homes_group_call_and_uplink_cut(
    mosquitto: Mosquitto, agent_processes: list[AgentProcess]
) -> None:
    uid = uuid.uuid4().hex[:6]
    group = f"feeder-{uid}"
    control = BrokerURL.parse(mosquitto.url)
    links = [CuttableLink(control.port), CuttableLink(control.port)]
    for link in links:
        await link.restore()
    homes = [f"home-a-{uid}", f"home-b-{uid}"]
    bridge_state: dict[str, list[tuple[float, bytes]]] = {h: [] for h in homes}
    home_agents: dict[str, list[str]] = {}

    def on_bridge(message: Message) -> None:
        home = message.topic.split("/")[2]
        if message.topic.endswith("/agents"):
            home_agents[home] = json.loads(message.payload)["agents"]
        elif home in bridge_state:
            bridge_state[home].append((time.monotonic(), message.payload))

    watcher = BusClient(mosquitto.url, f"watch-{uid}", on_message=on_bridge)
    await watcher.subscribe("sef/gateways/+/status")
    await watcher.subscribe("sef/gateways/+/agents")
    await watcher.start()
    async with (
        mdns_lock(),
        Gateway(
            BrokerURL("127.0.0.1", links[0].port), homes[0], keepalive_s=2, restart_s=(1, 2)
        ) as gw_a,
        Gateway(
            BrokerURL("127.0.0.1", links[1].port), homes[1], keepalive_s=2, restart_s=(1, 2)
        ) as gw_b,
        EMS(mosquitto.url, f"ems-{uid}", keepalive_s=2) as ems,
    ):
        assert gw_a.advertised_name == homes[0] and gw_b.advertised_name == homes[1]
        ids = {homes[0]: [f"a1-{uid}", f"a2-{uid}"], homes[1]: [f"b1-{uid}"]}
        procs = await asyncio.gather(
            *(
                start_agent(a, f"mdns://{home}", group)
                for home, agents in ids.items()
                for a in agents
            )
        )
        agent_processes += procs
        everyone = [a for agents in ids.values() for a in agents]
        await wait_for(lambda: online(ems, *everyone), 10.0)
        await wait_for(lambda: all(record(ems, a).about for a in everyone), 5.0)

        # one group publish at the EMS reaches the agents of both homes
        replies = await ems.call(
            f"group:{group}", DEMO, "EnergyMethod", [[["charge", 1, 60]]], timeout_s=5.0
        )
        assert sorted(r.agent for r in replies if r.ok) == sorted(everyone)

        # each home is one bridge connection at the control broker, with its agent list
        assert bridge_state[homes[0]][-1][1] == b"1"
        await wait_for(
            lambda: all(sorted(home_agents.get(h, [])) == sorted(ids[h]) for h in homes), 5.0
        )

        # cut home A's uplink: the control broker publishes the bridge's will
        await links[0].cut()
        cut_at = time.monotonic()
        await wait_for(lambda: bridge_state[homes[0]][-1][1] == b"0", 3 * 2 + 2)
        noticed = bridge_state[homes[0]][-1][0] - cut_at
        # the EMS shows home A's agents unreachable (last values kept), home B's online
        await wait_for(lambda: all(record(ems, a).online is False for a in ids[homes[0]]), 3.0)
        assert all(record(ems, a).offline_reason == "gateway" for a in ids[homes[0]])
        assert online(ems, *ids[homes[1]])
        replies = await ems.call(
            f"group:{group}", DEMO, "EnergyMethod", [[["idle", 0, 60]]], timeout_s=1.5
        )
        assert sorted(r.agent for r in replies) == ids[homes[1]], "home A is cut off"

        # restore: the bridge reconnects by itself, the agents are back at the EMS
        seen_before = {a: record(ems, a).last_seen for a in ids[homes[0]]}
        await asyncio.sleep(1.0)
        await links[0].restore()
        restored_at = time.monotonic()
        await wait_for(lambda: bridge_state[homes[0]][-1][1] == b"1", 10.0)
        bridge_back = time.monotonic() - restored_at
        await wait_for(
            lambda: (
                online(ems, *everyone)
                and all(record(ems, a).last_seen > seen_before[a] for a in ids[homes[0]])
            ),
            10.0,
        )
        agents_back = time.monotonic() - restored_at
        replies = await ems.call(
            f"group:{group}", DEMO, "EnergyMethod", [[["idle", 0, 60]]], timeout_s=5.0
        )
        assert sorted(r.agent for r in replies if r.ok) == sorted(everyone)
        print(
            f"cut noticed after {noticed:.2f} s; bridge back {bridge_back:.2f} s, "
            f"agents live again {agents_back:.2f} s after the uplink was restored"
        )
    await watcher.stop()
    for link in links:
        await link.cut()
