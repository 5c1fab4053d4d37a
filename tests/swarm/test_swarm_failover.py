"""``sef swarm --broker A,B,C``: the agents spread over the brokers as
:func:`sef.bus.start_index` says, and those of a broker that dies (SIGKILL) are born again
on the next one, where an EMS lists them. Separate Mosquittos share no state: each EMS
sees the agents connected to its own broker."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from sef.broker import Mosquitto
from sef.bus import start_index
from sef.ems import EMS
from sef.swarm import SwarmConfig, SwarmError, SwarmRunner
from support import wait_for

AGENTS = 30


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[Mosquitto]]:
    started: list[Mosquitto] = []
    try:
        for n in range(3):
            (tmp_path / f"b{n}").mkdir()
            started.append(Mosquitto(workdir=tmp_path / f"b{n}").start())
        yield started
    finally:
        for broker in started:
            broker.stop()


def online(ems: EMS, agent_id: str) -> bool:
    rec = ems.registry.get(agent_id)
    return rec is not None and rec.online is True and list(rec.groups) == ["g1"]


def all_online(ems: EMS, agent_ids: list[str]) -> bool:
    return all(online(ems, a) for a in agent_ids)


def test_a_bad_broker_list_is_refused() -> None:
    for bad, says in (
        ("mqtt://127.0.0.1:1,mqtts://127.0.0.1:2", "mixes"),
        ("mqtts://127.0.0.1:1,mqtts://127.0.0.1:2", "plain MQTT only"),
        ("mqtt://127.0.0.1:1,mqtt://127.0.0.1:1", "twice"),
        ("mqtt://127.0.0.1:1,mqtt://u:p@127.0.0.1:2", "user name"),
        ("mqtt://127.0.0.1:1,bogus://x", "a list holds"),
        (" , ", "empty"),
    ):
        with pytest.raises(SwarmError, match=says):
            SwarmRunner(SwarmConfig(1, bad))
    runner = SwarmRunner(SwarmConfig(4, "mqtt://127.0.0.1:1, mqtt://127.0.0.1:2", processes=2))
    assert all(c.nodes == [("127.0.0.1", 1), ("127.0.0.1", 2)] for c in runner.worker_configs())


async def test_swarm_agents_spread_over_the_list_and_fail_over(
    brokers: list[Mosquitto],
) -> None:
    ids = [f"swarm-{i:06d}" for i in range(AGENTS)]
    home = {a: start_index(a, 3) for a in ids}
    assert all(sum(1 for a in ids if home[a] == n) >= 3 for n in range(3)), home
    urls = ",".join(b.url for b in brokers)
    emses = [EMS(b.url, f"ems-{n}") for n, b in enumerate(brokers)]
    for ems in emses:
        await ems.start()
    try:
        async with SwarmRunner(SwarmConfig(AGENTS, urls, processes=2, telemetry_s=2.0)) as swarm:
            assert await swarm.wait_connected(timeout_s=30), swarm.stats.totals()
            for n, ems in enumerate(emses):
                mine = [a for a in ids if home[a] == n]
                await wait_for(partial(all_online, ems, mine), 20.0, 0.05)
                assert len(ems.registry.agents) == len(mine), "each on its own broker only"
            moved = [a for a in ids if home[a] == 0]
            assert brokers[0].process is not None
            brokers[0].process.kill()
            await wait_for(lambda: all(online(emses[1], a) for a in moved), 30.0, 0.05)
            # the workers report once a second: wait for the lines after the move
            await wait_for(
                lambda: (
                    swarm.stats.totals()["lost"] == len(moved)
                    and swarm.stats.totals()["connected"] == AGENTS
                ),
                20.0,
                0.1,
            )
            assert swarm.stats.totals()["failovers"] >= len(moved)
            assert not any(emses[2].registry.get(a) for a in moved), "to the next node only"
            # the moved agents' birth is complete there: About, groups, interface XML
            # (each process publishes the interface blobs on every broker it uses)
            await wait_for(
                lambda: all(emses[1].registry.agents[a].interfaces for a in moved), 10.0, 0.05
            )
            assert not any(a in emses[1].births.incomplete_ids() for a in moved)
    finally:
        for ems in emses:
            await ems.stop()
