"""Defect 1 (registry part): a forged ``offline`` status with a huge ``bdseq`` locked an
agent out for good (its real births looked stale) and was saved to the store.

Now a status whose bdseq is 2**63 or more, or runs ahead of the EMS's wall clock by more
than the allowed margin (1 day by default), is a bad message (counted, with its reason),
never applied and never stored. A forgery inside the margin still locks an agent out until
its sessions catch up: the operator resets the agent's session state (``POST
/agents/{id}/reset`` or ``sef registry reset ID``), the EMS asks the agent to re-announce,
and it is back online. Real Mosquitto, a real EMS with a SQLite store, a real agent.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import time
from pathlib import Path

import pytest
from registry_stack import TOPICS, battery, online_with_telemetry, raw_status, start_stack

from sef.ems.store import AgentRow, Batch, Store
from support import record, wait_for

SEF = (sys.executable, "-m", "sef")


@pytest.mark.parametrize("bdseq", [2**62, 2**63, 2**64 + 5, None])
async def test_forged_future_death_is_refused_and_not_stored(
    broker_url: str, tmp_path: Path, bdseq: int | None
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ems.db'}")
    stack = await start_stack(broker_url, store=store)
    agent = await battery(broker_url, "bat-1", stack.ems)
    try:
        real = agent.session.bdseq
        forged = bdseq if bdseq is not None else int(time.time() * 1000) + 2 * 86_400_000
        bad_before = stack.ems.registry.bad_messages
        stack.rogue.publish(
            TOPICS.status("bat-1"), raw_status("offline", forged, reason="will"), retain=True
        )
        await wait_for(lambda: stack.ems.registry.bad_messages > bad_before, 5.0)
        await asyncio.sleep(0.3)  # anything it would have caused has happened by now
        kept = stack.ems.registry.get("bat-1")
        assert kept is not None
        assert kept.online is True, "a forged death took the agent offline"
        assert kept.bdseq == real
        rows = {row.agent_id: row for row in await asyncio.to_thread(store.load_agents)}
        assert rows["bat-1"].bdseq == real, "the forged bdseq was stored"
        events = await asyncio.to_thread(store.agent_events, "bat-1")
        assert all(e["kind"] != "offline" for e in events), events

        # the agent's next session is accepted (it was locked out before the fix)
        await agent.stop()
        await wait_for(lambda: record(stack.ems, "bat-1").online is False, 5.0)
        agent = await battery(broker_url, "bat-1", stack.ems)
        assert record(stack.ems, "bat-1").bdseq == agent.session.bdseq
        body = (await stack.http.get("/metrics")).text
        assert "sef_bad_messages_total" in body
    finally:
        await agent.stop()
        await stack.stop()
        store.close()


async def test_operator_reset_lets_a_locked_out_agent_back(broker_url: str, tmp_path: Path) -> None:
    """A forged death one hour ahead (inside the margin) locks the agent out: its next
    birth is stale. A reset through the API, then one through the CLI, bring it back."""
    store = Store.open(f"sqlite:///{tmp_path / 'ems.db'}")
    stack = await start_stack(broker_url, store=store)
    agent = await battery(broker_url, "bat-1", stack.ems)
    try:
        for how in ("api", "cli"):
            forged = int(time.time() * 1000) + 3_600_000
            stack.rogue.publish(
                TOPICS.status("bat-1"), raw_status("offline", forged, reason="will"), retain=True
            )
            await wait_for(lambda: record(stack.ems, "bat-1").online is False, 5.0)
            await agent.stop()
            agent = await battery(broker_url, "bat-1")  # a new session: a lower bdseq
            await asyncio.sleep(0.5)
            locked = stack.ems.registry.get("bat-1")
            assert locked is not None and locked.online is False, "not locked out"
            assert locked.bdseq == forged

            if how == "api":
                response = await stack.http.post("/agents/bat-1/reset")
                assert response.status_code == 200, response.text
                assert response.json()["id"] == "bat-1"
            else:
                result = await asyncio.to_thread(
                    subprocess.run,
                    [*SEF, "registry", "reset", "bat-1", "--api", stack.server.url],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert result.returncode == 0, result.stdout + result.stderr
                assert "bat-1" in result.stdout
            # the EMS asked the agent to re-announce: it is back, with its own session
            await wait_for(lambda: online_with_telemetry(stack.ems, "bat-1"), 10.0)
            assert record(stack.ems, "bat-1").bdseq == agent.session.bdseq
            await wait_for(functools.partial(_stored, store, "bat-1", agent.session.bdseq), 5.0)

        missing = await stack.http.post("/agents/nope/reset")
        assert missing.status_code == 404
    finally:
        await agent.stop()
        await stack.stop()
        store.close()


async def test_a_stored_forged_bdseq_is_forgotten_at_start(broker_url: str, tmp_path: Path) -> None:
    """A store written by an EMS without the check holds bdseq 2**62: the next EMS forgets
    it when it restores the agent, and the agent's birth counts."""
    store = Store.open(f"sqlite:///{tmp_path / 'ems.db'}")
    stack = await start_stack(broker_url, store=store)
    agent = await battery(broker_url, "bat-1", stack.ems)
    await stack.stop()
    forged = record(stack.ems, "bat-1")
    forged.bdseq = 2**62  # what the old EMS stored
    from sef.ems._recorder import agent_row

    await asyncio.to_thread(store.write_batch, _agent_batch(agent_row(forged)))
    stack = await start_stack(broker_url, store=store)
    try:
        await wait_for(lambda: online_with_telemetry(stack.ems, "bat-1"), 10.0)
        assert record(stack.ems, "bat-1").bdseq == agent.session.bdseq
    finally:
        await agent.stop()
        await stack.stop()
        store.close()


def _agent_batch(row: AgentRow) -> Batch:
    batch = Batch()
    batch.agents[row.agent_id] = row
    return batch


def _stored(store: Store, agent_id: str, bdseq: int) -> bool:
    rows = {row.agent_id: row for row in store.load_agents()}
    return agent_id in rows and rows[agent_id].bdseq == bdseq
