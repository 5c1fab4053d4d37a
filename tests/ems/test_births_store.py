"""An EMS with a store restarts (issue 16): the broker (queue 20) drops most of the
retained births again, but the agents restored from the store keep their About and
properties of the session they are still in, so only those whose retained status was
dropped too are asked for a rebirth, and every agent is complete again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from births_rig import complete, small_queue_broker, start_ems, start_fleet, stop_all
from sef.ems import AboutReceived, Event
from sef.ems.store import Store
from support import wait_for

AGENTS = 30


async def test_a_restart_with_a_store_completes_every_agent_without_asking_them_all(
    tmp_path: Path,
) -> None:
    broker = small_queue_broker(tmp_path / "mq")
    agents = await start_fleet(broker.url, AGENTS, step_s=30.0)
    ids = [agent.agent_id for agent in agents]
    store = Store.open(f"sqlite:///{tmp_path / 'ems.db'}")
    try:
        first = await start_ems(
            broker.url, "ems-store", store=store, rebirth_rate=10.0, birth_grace_s=1.0
        )
        try:
            await wait_for(lambda: all(complete(first.ems, a) for a in ids), 60.0, 0.1)
            assert first.ems.rebirths_by_reason["incomplete"] > 0  # the first drain lost births
            await asyncio.sleep(1.0)  # the recorder commits the agents' rows
        finally:
            await first.stop()

        abouts: set[str] = set()

        def note(event: Event) -> None:
            if isinstance(event, AboutReceived):
                abouts.add(event.agent_id)

        second = await start_ems(
            broker.url,
            "ems-store",
            store=store,
            rebirth_rate=10.0,
            birth_grace_s=1.0,
            on_event=note,
        )
        try:
            await wait_for(lambda: all(complete(second.ems, a) for a in ids), 60.0, 0.1)
            await wait_for(lambda: second.ems.births.incomplete == 0, 10.0)
            assert (await second.health())["agents_incomplete"] == 0
            asked = second.ems.rebirths_by_reason["incomplete"]
            lost = AGENTS - len(abouts)  # agents whose About this run never received
            print(
                f"\nrestart with a store: {lost} of {AGENTS} Abouts dropped, "
                f"{asked} agents asked for a rebirth"
            )
            assert lost > AGENTS // 2  # the broker dropped most retained Abouts again...
            assert asked < lost, second.ems.rebirths_by_reason  # ...the stored ones hold
        finally:
            await second.stop()
    finally:
        await stop_all(agents)
        store.close()
        await asyncio.to_thread(broker.stop)
