"""Defect 3 of issue 11: a reply counts only from an agent the call was addressed to, and
once per agent.

A real Mosquitto, a real EMS with a store and its API, real battery agents (processes) and
a rogue anonymous client that reads every call and answers it in the name of an agent
that was not called, and replays every real reply. The agent that was called is frozen
(SIGSTOP), so only the rogue answers in time: before the fix the API said ``ok`` with the
rogue's reply while the battery had executed nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calls_support import Rogue, battery, forged_reply, freeze, online, start_ems, thaw
from sef.broker import Mosquitto
from support import AgentProcess


async def test_forged_unaddressed_and_duplicate_replies_do_not_count(
    mosquitto: Mosquitto, tmp_path: Path, agent_processes: list[AgentProcess]
) -> None:
    broker = mosquitto.url
    bat1 = battery(agent_processes, "bat-1", broker, "feeder-7")
    battery(agent_processes, "bat-2", broker, "feeder-7")
    stack = await start_ems(broker, tmp_path / "ems.db")

    def forge(call: dict[str, Any], topic: str) -> list[dict[str, Any]]:
        # answer in the name of agents the call did not go to, twice each
        return [forged_reply(call, "rogue-1"), forged_reply(call, "bat-9")] * 2

    rogue = await Rogue(broker, forge, replay=True).start()
    try:
        await online(stack.ems, "bat-1", "bat-2")
        freeze(bat1)

        # one agent, frozen: only forged replies come -> no reply counts
        one = await stack.http.post(
            "/agents/bat-1/commands", json={"cmds": [["discharge", 8, 0]], "timeout_s": 1.5}
        )
        assert one.status_code == 200, one.text
        result = one.json()
        assert result["replies"] == [], "a reply from an agent that was not called counted"
        assert result["status"] == "timeout" and result["missing"] == ["bat-1"]
        entry = await stack.log_entry(result["call_id"])
        assert entry["status"] == "timeout" and entry["replies"] == []

        # a group: bat-2 answers, bat-1 is frozen; forged and replayed replies come too
        group = await stack.http.post(
            "/groups/feeder-7/commands", json={"cmds": [["idle", 0, 0]], "timeout_s": 1.5}
        )
        assert group.status_code == 200, group.text
        body = group.json()
        assert [r["agent"] for r in body["replies"]] == ["bat-2"], body["replies"]
        assert body["status"] == "partial" and body["missing"] == ["bat-1"]
        entry = await stack.log_entry(body["call_id"])
        assert [r["agent"] for r in entry["replies"]] == ["bat-2"]
        assert entry["status"] == "partial"

        assert len(rogue.calls) == 2
        metrics = await stack.metrics()
        rejected = {
            dict(labels)["reason"]: value
            for (name, labels), value in metrics.items()
            if name == "sef_replies_rejected_total"
        }
        assert rejected["not_addressed"] == 8  # 4 forged replies to each of 2 calls
        assert rejected["duplicate"] >= 1  # bat-2's reply, replayed by the rogue
        assert rejected["conflicting"] == 0
        assert metrics[("sef_command_replies_total", (("result", "ok"),))] == 1
    finally:
        thaw(bat1)
        await rogue.stop()
        await stack.stop()
