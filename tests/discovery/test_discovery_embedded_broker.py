"""The core bus acceptance against the embedded broker (rumqttd from the iotcore wheel):
discovery at the EMS, last will on SIGKILL of an agent process, retained About and
telemetry for a late EMS, and an agent finding that broker over mDNS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from mdns_lock import mdns_lock
from sef.discovery import advertise_broker
from sef.embedded_broker import EmbeddedBroker, start_broker
from sef.ems import EMS
from support import AgentProcess, record, wait_for

DEMO = "edu.pdx.powerlab.demo"
KEEPALIVE_S = 2


@pytest.fixture
def embedded() -> Iterator[EmbeddedBroker]:
    broker = start_broker("embedded")
    assert isinstance(broker, EmbeddedBroker)
    yield broker
    broker.stop()


def online(ems: EMS, agent_id: str) -> bool | None:
    found = ems.registry.get(agent_id)
    return None if found is None else found.online


@pytest.mark.parametrize("version", ["3.1.1", "5"])
async def test_presence_will_and_retained_state(
    embedded: EmbeddedBroker, version: str, agent_processes: list[AgentProcess]
) -> None:
    url = embedded.url if version == "3.1.1" else embedded.url5
    uid = uuid.uuid4().hex[:6]
    agent_ids = [f"emb-a-{uid}", f"emb-b-{uid}"]
    async with EMS(url, f"ems-{uid}", keepalive_s=KEEPALIVE_S) as ems:
        procs = await asyncio.gather(
            *(
                asyncio.to_thread(
                    AgentProcess(a, url, "--keepalive", str(KEEPALIVE_S), "--step", "0.2").start
                )
                for a in agent_ids
            )
        )
        agent_processes += procs
        await wait_for(lambda: all(online(ems, a) for a in agent_ids), 5.0)
        await wait_for(lambda: all(record(ems, a).prop(DEMO, "Telemetry") for a in agent_ids), 5.0)
        procs[1].kill()
        await wait_for(lambda: online(ems, agent_ids[1]) is False, 1.5 * KEEPALIVE_S + 1)
        assert record(ems, agent_ids[1]).offline_reason == "will"
        assert online(ems, agent_ids[0])
    # a late EMS learns everything from retained messages
    async with EMS(url, f"late-{uid}", announce=False) as late:
        await wait_for(
            lambda: online(late, agent_ids[0]) is True and online(late, agent_ids[1]) is False, 5.0
        )
        dead = late.registry.get(agent_ids[1])
        assert dead is not None and dead.about["DeviceId"] == agent_ids[1]
        assert dead.prop(DEMO, "Telemetry")["Sys_Rated_Energy"] == ["d", 60.0]


async def test_agent_finds_embedded_broker_over_mdns(
    embedded: EmbeddedBroker, agent_processes: list[AgentProcess]
) -> None:
    name = f"sef-test-emb-{uuid.uuid4().hex[:8]}"
    agent_id = f"emb-zc-{uuid.uuid4().hex[:6]}"
    async with (
        mdns_lock(),
        await advertise_broker("127.0.0.1", embedded.port, name),
        EMS(embedded.url, f"ems-{agent_id}") as ems,
    ):
        agent_processes.append(
            await asyncio.to_thread(AgentProcess(agent_id, f"mdns://{name}").start)
        )
        await wait_for(lambda: online(ems, agent_id) is True, 5.0)
