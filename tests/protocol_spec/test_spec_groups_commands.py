"""docs/protocol.md §3 (groups come only from About.groups) and §9 (the command rules of
``edu.pdx.powerlab.demo.EnergyMethod`` and their error), against real agents on a real
Mosquitto."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sef.agents import Agent, method
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import ErrorName, Topics
from sef.ems import EMS
from sef.interface import DEMO_INTERFACE, Variant
from spec_probe import RawCaller
from support import is_online, wait_for

TOPICS = Topics()


class Member(Agent):
    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.executed = 0

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        self.executed += 1


async def test_group_membership_comes_only_from_about_groups(broker_url: str) -> None:
    member = Member("grp-member", broker_url, groups=["feeder-9"])
    sneak = Member("grp-sneak", broker_url)  # lists no group ...
    for agent in (member, sneak):
        await agent.start()
    # ... but subscribes to the group's calls anyway
    await sneak.bus.subscribe(f"{TOPICS.root}/groups/feeder-9/call/+/+")
    async with EMS(broker_url, "ems-groups") as ems:
        await wait_for(lambda: is_online(ems, "grp-member") and is_online(ems, "grp-sneak"), 3.0)
        await wait_for(lambda: bool(ems.registry.group_members("feeder-9")), 3.0)
        assert [a.agent_id for a in ems.registry.group_members("feeder-9")] == ["grp-member"]
        replies = await ems.call(
            "group:feeder-9", DEMO_INTERFACE, "EnergyMethod", [[["idle", 0, 0]]], timeout_s=2.0
        )
        await wait_for(lambda: ems.caller.rejected.total["not_addressed"] == 1, 3.0)
        assert [r.agent for r in replies] == ["grp-member"]
        assert sneak.executed == 1, "it did receive the call: its reply did not count"
    for agent in (member, sneak):
        await agent.stop()


@pytest.fixture
async def battery(broker_url: str) -> AsyncIterator[tuple[VirtualBatteryAgent, RawCaller]]:
    agent = VirtualBatteryAgent("cmd-bat", broker_url, step_s=60.0)
    await agent.start()
    async with RawCaller(broker_url) as caller:
        yield agent, caller
    await agent.stop()


async def _reply(caller: RawCaller, agent_id: str, cmds: Any) -> dict[str, Any]:
    call = caller.call([cmds])
    caller.send(agent_id, call)
    await wait_for(lambda: bool(caller.replies_to(call["id"])), 5.0)
    return caller.replies_to(call["id"])[0]


ACCEPTED: list[tuple[str, Any]] = [
    ("charge", [["charge", 4, 60]]),
    ("discharge", [["discharge", 4, 60]]),
    ("idle", [["idle", 0, 60]]),
    ("shed", [["shed", 2, 60]]),
    ("endshed", [["endshed", 0, 0]]),
    ("case and blanks ignored", [[" Charge ", 4, 60]]),
    ("bounds", [["charge", 0, 1], ["charge", 32767, 32767]]),
    ("open-ended last", [["charge", 4, 60], ["idle", 0, 0]]),
    ("256 events", [["charge", 1, 1]] * 256),
]


@pytest.mark.parametrize(("case", "cmds"), ACCEPTED, ids=[c for c, _ in ACCEPTED])
async def test_valid_sequences_are_accepted(
    battery: tuple[VirtualBatteryAgent, RawCaller], case: str, cmds: Any
) -> None:
    agent, caller = battery
    reply = await _reply(caller, "cmd-bat", cmds)
    assert reply["ok"] is True, (case, reply)
    assert agent.current_event.cmd.value == cmds[0][0].strip().lower()


REFUSED: list[tuple[str, Any, str]] = [
    ("no event", [], "cmds"),
    ("257 events", [["charge", 1, 1]] * 257, "at most 256"),
    ("unknown command", [["boost", 1, 60]], "cmds[0][0]: unknown command 'boost'"),
    ("negative rate", [["charge", -1, 60]], "cmds[0][1]: rate must be >= 0 kW"),
    ("negative duration", [["charge", 1, -60]], "cmds[0][2]: duration must be >= 0 s"),
    ("rate over int16", [["charge", 32768, 60]], "cmds[0][1]: 32768 out of range for int16"),
    ("fraction", [["charge", 4.5, 60]], "cmds[0][1]"),
    ("boolean", [["charge", True, 60]], "cmds[0][1]"),
    ("open-ended not last", [["charge", 4, 0], ["idle", 0, 60]], "cmds[0][2]: only the last"),
    ("two fields", [["charge", 4]], "cmds[0]"),
]


@pytest.mark.parametrize(("case", "cmds", "needle"), REFUSED, ids=[c for c, _, _ in REFUSED])
async def test_invalid_sequences_are_refused_invalid_args(
    battery: tuple[VirtualBatteryAgent, RawCaller], case: str, cmds: Any, needle: str
) -> None:
    agent, caller = battery
    before = agent.current_event
    reply = await _reply(caller, "cmd-bat", cmds)
    assert reply["ok"] is False and reply["error"]["name"] == ErrorName.INVALID_ARGS, (case, reply)
    assert needle in reply["error"]["message"], (case, reply["error"]["message"])
    await asyncio.sleep(0.1)
    assert agent.current_event == before, "a refused sequence changes nothing"
