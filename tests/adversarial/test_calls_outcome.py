"""Defect 14 of issue 11 (EMS side): "ok" meant "accepted", the command log stayed ``sent``
after an EMS crash, and late replies were dropped.

A real Mosquitto, a real EMS with a store and its API, real battery agents. Replies now
say whether the device applied the command (``applied``, with the device's fault where it
did not); the command log records replies that come after the API answered, marks a call
that nobody answered before its expiry ``expired``, and at start-up expires what a
crashed EMS left ``sent`` and takes the late replies of the calls still open.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from calls_support import battery, freeze, online, start_ems, thaw
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.interface import DEMO_INTERFACE
from support import AgentProcess, wait_for

LATE_WAIT_S = 15.0
"""Longest wait for a late reply or an expiry to reach the command log, s."""


def report_applied(agent: VirtualBatteryAgent, extra: dict[str, Any]) -> None:
    """Make ``agent``'s replies carry ``extra`` (``applied`` and, where not applied, the
    device's ``fault``); a key whose value is None is removed (an agent from before the
    field). SEF's own agents send ``applied`` themselves (tests/agents)."""
    publish = agent.bus.publish

    def publish_with(topic: str, payload: bytes, **kwargs: Any) -> None:
        if topic.endswith("/reply"):
            obj = json.loads(payload)
            if obj.get("ok"):
                merged = {**obj, **extra}
                payload = json.dumps({k: v for k, v in merged.items() if v is not None}).encode()
        publish(topic, payload, **kwargs)

    agent.bus.publish = publish_with  # type: ignore[method-assign]


async def test_replies_say_applied_or_not_and_the_api_reports_it(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker = mosquitto.url
    stack = await start_ems(broker, tmp_path / "ems.db")
    agents = {
        name: VirtualBatteryAgent(name, broker, groups=["feeder-7"], step_s=1.0)
        for name in ("bat-1", "bat-2", "bat-3")
    }
    for agent in agents.values():
        await agent.start()
    fault = {"name": "sef.Fault.NoDevice", "message": "no battery answers on Modbus"}
    report_applied(agents["bat-1"], {"applied": False, "fault": fault})
    report_applied(agents["bat-2"], {"applied": True})
    # bat-3 sends no "applied": "accepted" (an agent from before the field)
    report_applied(agents["bat-3"], {"applied": None})
    try:
        await online(stack.ems, *agents)
        group = (
            await stack.http.post(
                "/groups/feeder-7/commands", json={"cmds": [["charge", 8, 0]], "timeout_s": 5}
            )
        ).json()
        assert group["status"] == "not_applied", group
        outcomes = {r["agent"]: r for r in group["replies"]}
        assert outcomes["bat-1"]["outcome"] == "not_applied"
        assert outcomes["bat-1"]["ok"] is True
        assert outcomes["bat-1"]["fault"] == "sef.Fault.NoDevice"
        assert outcomes["bat-1"]["fault_message"] == "no battery answers on Modbus"
        assert outcomes["bat-2"]["outcome"] == "applied"
        assert outcomes["bat-3"]["outcome"] == "accepted"
        entry = await stack.log_entry(group["call_id"])
        assert entry["status"] == "not_applied"
        logged = {r["agent"]: r for r in entry["replies"]}
        assert logged["bat-1"]["outcome"] == "not_applied"
        assert logged["bat-1"]["fault"] == "sef.Fault.NoDevice"
        assert logged["bat-2"]["outcome"] == "applied"

        one = (
            await stack.http.post("/agents/bat-2/commands", json={"cmds": [["idle", 0, 0]]})
        ).json()
        assert one["status"] == "ok" and one["replies"][0]["outcome"] == "applied"
    finally:
        for agent in agents.values():
            await agent.stop()
        await stack.stop()


async def test_late_reply_is_logged_and_unanswered_call_expires(
    mosquitto: Mosquitto, tmp_path: Path, agent_processes: list[AgentProcess]
) -> None:
    broker = mosquitto.url
    bat1 = battery(agent_processes, "bat-1", broker)
    stack = await start_ems(broker, tmp_path / "ems.db")
    try:
        await online(stack.ems, "bat-1")
        freeze(bat1)
        late = (
            await stack.http.post(
                "/agents/bat-1/commands", json={"cmds": [["charge", 4, 0]], "timeout_s": 1}
            )
        ).json()
        assert late["status"] == "timeout"
        # a call nobody answers before its expiry (1 s)
        assert (
            await stack.ems.call(
                "bat-1",
                DEMO_INTERFACE,
                "EnergyMethod",
                [[["idle", 0, 0]]],
                timeout_s=0.5,
                ttl_s=1.0,
                call_id="short-lived",
            )
            == []
        )
        assert (await stack.log_entry("short-lived"))["status"] == "timeout"

        async def status(call_id: str) -> str:
            return str((await stack.log_entry(call_id))["status"])

        loop = asyncio.get_running_loop()
        deadline = loop.time() + LATE_WAIT_S
        while await status("short-lived") != "expired":  # expiry 1 s, grace 5 s
            assert loop.time() < deadline, await stack.log_entry("short-lived")
            await asyncio.sleep(0.2)
        thaw(bat1)  # answers the first call (late); refuses the expired one: too late
        while await status(late["call_id"]) != "ok":
            assert loop.time() < deadline, await stack.log_entry(late["call_id"])
            await asyncio.sleep(0.2)
        entry = await stack.log_entry(late["call_id"])
        assert [(r["agent"], r["ok"], r.get("late")) for r in entry["replies"]] == [
            ("bat-1", True, True)
        ]
        await asyncio.sleep(0.5)
        assert (await stack.log_entry("short-lived"))["status"] == "expired"
        assert (await stack.log_entry("short-lived"))["replies"] == []
        metrics = await stack.metrics()
        assert metrics[("sef_replies_late_total", ())] == 1
        assert metrics[("sef_commands_expired_total", ())] == 1
        assert metrics[("sef_replies_rejected_total", (("reason", "unknown_call"),))] == 1
    finally:
        thaw(bat1)
        await stack.stop()


async def test_commands_left_sent_by_a_crashed_ems_expire_or_take_late_replies(
    mosquitto: Mosquitto, tmp_path: Path, agent_processes: list[AgentProcess]
) -> None:
    broker = mosquitto.url
    db = tmp_path / "ems.db"
    bat1 = battery(agent_processes, "bat-1", broker)
    first = await start_ems(broker, db)
    await online(first.ems, "bat-1")
    freeze(bat1)
    try:
        # two calls in flight when the EMS "crashes": its calls never come back
        calls = [
            asyncio.create_task(
                first.ems.call(
                    "bat-1",
                    DEMO_INTERFACE,
                    "EnergyMethod",
                    [[[cmd, 2, 0]]],
                    timeout_s=30,
                    ttl_s=ttl,
                    call_id=call_id,
                )
            )
            for cmd, ttl, call_id in (("charge", 1.0, "expires-soon"), ("discharge", 60.0, "open"))
        ]
        await wait_for(lambda: first.ems.caller.calls_sent >= 2, 5.0)
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await first.stop()
        # the rows stay "sent", as a crashed EMS leaves them

        await asyncio.sleep(6.5)  # past "expires-soon"'s expiry and the late-reply grace
        second = await start_ems(broker, db)
        try:
            assert (await second.log_entry("expires-soon"))["status"] == "expired"
            assert (await second.log_entry("open"))["status"] == "sent"
            thaw(bat1)  # executes "open" and answers it: the new EMS records the reply

            async def open_entry() -> dict[str, Any]:
                return await second.log_entry("open")

            loop = asyncio.get_running_loop()
            deadline = loop.time() + LATE_WAIT_S
            while (await open_entry())["status"] != "ok":
                assert loop.time() < deadline, await open_entry()
                await asyncio.sleep(0.2)
            entry = await open_entry()
            assert [(r["agent"], r.get("late")) for r in entry["replies"]] == [("bat-1", True)]
            assert (await second.log_entry("expires-soon"))["status"] == "expired"
        finally:
            await second.stop()
    finally:
        thaw(bat1)
