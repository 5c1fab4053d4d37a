"""Defect 5: an invalid ``reply_to`` (wildcard, empty, NUL, not a reply topic) made agents
publish to an illegal topic, and the broker disconnected every member of the group.

Now an agent replies only to a validated reply topic (``{root}/clients/{id}/reply``); a call
with any other ``reply_to`` is refused without being executed, and the agent stays
connected. Real Mosquitto, real agents, a rogue client publishing raw payloads.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import BusClient, Call, Message, Reply, Topics, decode_object
from sef.interface import DEMO_INTERFACE
from support import wait_for

TOPICS = Topics()
BAD_REPLY_TOS = [
    "sef/#",
    "+",
    "",
    "sef/clients/rogue/reply\u0000x",
    "sef/agents/bat-0/status",  # a real topic, but not a reply topic
    "sef/clients/rogue/reply/extra",
    "x" * 70_000,
]


def raw_call(reply_to: object, call_id: str) -> bytes:
    now = time.time()
    return json.dumps(
        {"v": 1, "id": call_id, "ts": now, "exp": now + 30, "sender": "rogue",
         "args": [[["discharge", 8, 0]]], "reply_to": reply_to}
    ).encode()  # fmt: skip


async def test_invalid_reply_to_neither_executes_nor_disconnects_the_group(
    broker_url: str,
) -> None:
    agents = [
        VirtualBatteryAgent(f"bat-{i}", broker_url, groups=["feeder-7"], keepalive_s=2)
        for i in range(2)
    ]
    for agent in agents:
        await agent.start()
    rogue = BusClient(broker_url, "rogue")
    replies: list[Reply] = []

    def keep(message: Message) -> None:
        replies.append(Reply.from_object(decode_object(message.payload)))

    caller = BusClient(broker_url, "caller", on_message=keep)
    await caller.subscribe(TOPICS.reply("caller"), qos=1)
    await rogue.start()
    await caller.start()
    try:
        topic = TOPICS.group_call("feeder-7", DEMO_INTERFACE, "EnergyMethod")
        for n, reply_to in enumerate(BAD_REPLY_TOS):
            rogue.publish(topic, raw_call(reply_to, f"bad-{n}"), qos=1)
        await wait_for(lambda: all(a.calls_rejected >= len(BAD_REPLY_TOS) for a in agents), 5.0)
        await asyncio.sleep(0.3)  # a disconnect by the broker would show by now
        for agent in agents:
            assert agent.bus.connections == 1, f"{agent.agent_id} was disconnected"
            assert agent.sequencer.current.cmd.value == "idle"  # nothing executed
        # a legitimate call still works and is answered
        now = time.time()
        good = Call("good-1", [[["charge", 2, 600]]], now, now + 30, TOPICS.reply("caller"),
                    "caller")  # fmt: skip
        caller.publish(topic, good.to_payload(), qos=1)
        await wait_for(lambda: len(replies) == 2, 5.0)
        assert sorted(r.agent for r in replies) == ["bat-0", "bat-1"]
        assert all(r.ok for r in replies)
        assert all(a.sequencer.current.cmd.value == "charge" for a in agents)
    finally:
        await rogue.stop()
        await caller.stop()
        for agent in agents:
            await agent.stop()


@pytest.mark.parametrize("reply_to", ["sef/#", "sef/clients/x/reply\u0000"])
async def test_unparsable_call_gets_no_error_reply_on_an_invalid_topic(
    broker_url: str, reply_to: str
) -> None:
    """The error path (a call the agent cannot read) must not reply there either."""
    agent = VirtualBatteryAgent("bat-e", broker_url, keepalive_s=2)
    await agent.start()
    rogue = BusClient(broker_url, "rogue-e")
    await rogue.start()
    try:
        payload = json.dumps({"v": 1, "id": "x", "reply_to": reply_to}).encode()  # no exp
        rogue.publish(TOPICS.call("bat-e", DEMO_INTERFACE, "EnergyMethod"), payload, qos=1)
        await wait_for(lambda: agent.calls_rejected >= 1, 5.0)
        await asyncio.sleep(0.3)
        assert agent.bus.connections == 1
    finally:
        await rogue.stop()
        await agent.stop()
