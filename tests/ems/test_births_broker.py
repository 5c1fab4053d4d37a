"""No silent loss at an EMS's subscription (issue 16): a real Mosquitto whose per-client
queue (20, stock in-flight 20) drops most of 50 real agents' retained births; an EMS that
only counts incomplete births keeps agents without About; one that asks them for a
rebirth (rate-limited) ends with every agent complete, and says so at ``/health``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from births_rig import (
    QUEUE,
    EmsWithApi,
    complete,
    count_retained,
    drained,
    small_queue_broker,
    start_ems,
    start_fleet,
    stop_all,
)
from support import wait_for

AGENTS = 50


def lacking(stack: EmsWithApi) -> list[str]:
    """Agents the EMS does not hold online with About, groups and Telemetry."""
    return [f"vb-{i:03d}" for i in range(AGENTS) if not complete(stack.ems, f"vb-{i:03d}")]


async def test_dropped_retained_births_are_asked_again_until_every_agent_is_complete(
    tmp_path: Path,
) -> None:
    broker = small_queue_broker(tmp_path / "mq")
    agents = await start_fleet(broker.url, AGENTS)
    ids = [agent.agent_id for agent in agents]
    try:
        held = await count_retained(broker.url, ids)
        assert held >= AGENTS * 5, held  # status, About, XML, properties per agent

        # 1. an EMS that counts incomplete births but never asks (rate 0): the loss stays
        blind = await start_ems(broker.url, "ems-blind", rebirth_rate=0.0, birth_grace_s=1.0)
        try:
            await drained(blind.ems, extra_s=1.5)
            received = len(blind.retained)
            dropped = held - received
            assert dropped > held // 2, (held, received)  # the broker really dropped them
            # (an agent of which nothing came is known by its telemetry, then incomplete)
            await wait_for(lambda: blind.ems.births.incomplete == len(lacking(blind)), 20.0)
            assert len(lacking(blind)) > AGENTS // 2
            health = await blind.health()
            assert health["status"] == "ok"  # informative, not a reason for degraded
            assert health["agents_incomplete"] == len(lacking(blind))
            assert blind.ems.rebirths_requested == 0
            gauge = f"sef_agents_incomplete {float(blind.ems.births.incomplete)}"
            assert gauge in await blind.metrics()
            incomplete = blind.ems.births.incomplete
        finally:
            await blind.stop()

        # 2. an EMS that asks them, 5 agents/s: every agent complete
        start = time.monotonic()
        fixed = await start_ems(broker.url, "ems-fixed", rebirth_rate=5.0, birth_grace_s=1.0)
        try:
            took = await wait_for(lambda: all(complete(fixed.ems, a) for a in ids), 60.0, 0.1)
            await wait_for(lambda: fixed.ems.births.incomplete == 0, 10.0)
            health = await fixed.health()
            assert health["agents_incomplete"] == 0, health
            asked = fixed.ems.rebirths_by_reason["incomplete"]
            assert asked >= incomplete // 2, fixed.ems.rebirths_by_reason
            assert f'sef_rebirth_requests_total{{reason="incomplete"}} {float(asked)}' in (
                await fixed.metrics()
            )
            print(
                f"\n{AGENTS} agents, queue {QUEUE}: {held} retained held, {received} received "
                f"({dropped} dropped), {incomplete} incomplete; complete {took:.1f} s after "
                f"start ({time.monotonic() - start:.1f} s), rebirths "
                f"{fixed.ems.rebirths_by_reason}"
            )
        finally:
            await fixed.stop()
    finally:
        await stop_all(agents)
        await asyncio.to_thread(broker.stop)
