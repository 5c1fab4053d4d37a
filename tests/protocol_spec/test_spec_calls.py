"""docs/protocol.md §5.5–§6 against a real agent on a real Mosquitto: which Call keys are
required, the de-duplication key and window, the error names for another version and an
oversized payload."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sef.bus import ErrorName
from spec_probe import RawCaller, RecordingAgent
from support import wait_for

CMDS = [[["charge", 4, 60]]]


@pytest.fixture
async def agent_and_caller(broker_url: str) -> AsyncIterator[tuple[RecordingAgent, RawCaller]]:
    agent = RecordingAgent("spec-1", broker_url)
    await agent.start()
    async with RawCaller(broker_url) as caller:
        yield agent, caller
    await agent.stop()


async def _answer(caller: RawCaller, call_id: str) -> dict[str, Any]:
    await wait_for(lambda: bool(caller.replies_to(call_id)), 3.0)
    return caller.replies_to(call_id)[0]


@pytest.mark.parametrize("missing", ["ts", "exp", "args"])
async def test_ts_exp_and_args_are_required(
    agent_and_caller: tuple[RecordingAgent, RawCaller], missing: str
) -> None:
    agent, caller = agent_and_caller
    removed: dict[str, Any] = {missing: None}
    call = caller.call(CMDS, **removed)
    caller.send("spec-1", call)
    reply = await _answer(caller, call["id"])
    assert reply["ok"] is False and reply["error"]["name"] == ErrorName.MALFORMED
    assert repr(missing) in reply["error"]["message"]
    assert agent.executed == []


async def test_a_call_without_id_is_refused_unanswered(
    agent_and_caller: tuple[RecordingAgent, RawCaller],
) -> None:
    agent, caller = agent_and_caller
    rejected = agent.calls_rejected
    caller.send("spec-1", caller.call(CMDS, id=None))
    await wait_for(lambda: agent.calls_rejected == rejected + 1, 3.0)
    await asyncio.sleep(0.2)
    assert caller.replies == [] and agent.executed == []


async def test_sender_and_reply_to_are_optional(
    agent_and_caller: tuple[RecordingAgent, RawCaller],
) -> None:
    agent, caller = agent_and_caller
    call = caller.call(CMDS, sender=None)
    caller.send("spec-1", call)
    assert (await _answer(caller, call["id"]))["ok"] is True
    caller.send("spec-1", caller.call([[["idle", 0, 60]]], reply_to=None))
    await wait_for(lambda: len(agent.executed) == 2, 3.0)
    await asyncio.sleep(0.2)
    assert len(caller.replies) == 1, "no reply_to: no reply"


async def test_dedup_key_is_sender_and_id_with_absent_sender_a_key_of_its_own(
    agent_and_caller: tuple[RecordingAgent, RawCaller],
) -> None:
    agent, caller = agent_and_caller
    anonymous = caller.call(CMDS, id="same", sender=None)
    caller.send("spec-1", anonymous)
    caller.send("spec-1", anonymous)  # a QoS 1 redelivery: dropped
    caller.send("spec-1", caller.call(CMDS, id="same", sender="None"))  # another sender
    caller.send("spec-1", caller.call(CMDS, id="same", sender="ems-2"))  # another sender
    await wait_for(lambda: len(agent.executed) == 3, 3.0)
    await asyncio.sleep(0.3)
    assert len(agent.executed) == 3
    assert len(caller.replies_to("same")) == 3


async def test_an_expired_call_counts_in_the_window_a_malformed_one_does_not(
    agent_and_caller: tuple[RecordingAgent, RawCaller],
) -> None:
    agent, caller = agent_and_caller
    expired = caller.call(CMDS, id="late", exp_in_s=-1.0)
    caller.send("spec-1", expired)
    assert (await _answer(caller, "late"))["error"]["name"] == ErrorName.EXPIRED
    caller.send("spec-1", caller.call(CMDS, id="late"))  # same (sender, id), valid now
    malformed = caller.call(CMDS, id="bad", exp=None)
    caller.send("spec-1", malformed)
    assert (await _answer(caller, "bad"))["error"]["name"] == ErrorName.MALFORMED
    caller.send("spec-1", caller.call(CMDS, id="bad"))  # the id was not remembered
    await wait_for(lambda: len(caller.replies_to("bad")) == 2, 3.0)
    await asyncio.sleep(0.3)
    assert len(caller.replies_to("late")) == 1, "the expired call's id stays in the window"
    assert caller.replies_to("bad")[1]["ok"] is True
    assert agent.executed == [[("charge", 4, 60)]]


@pytest.mark.parametrize("version", [2, 0, "1", None])
async def test_another_version_is_answered_unsupported_version(
    agent_and_caller: tuple[RecordingAgent, RawCaller], version: Any
) -> None:
    agent, caller = agent_and_caller
    call = caller.call(CMDS, v=version)
    caller.send("spec-1", call)
    reply = await _answer(caller, call["id"])
    assert reply["ok"] is False and reply["error"]["name"] == ErrorName.UNSUPPORTED_VERSION
    assert reply["v"] == 1 and reply["agent"] == "spec-1"
    assert agent.executed == []


async def test_an_oversized_call_is_refused_unread_and_unanswered(
    agent_and_caller: tuple[RecordingAgent, RawCaller],
) -> None:
    agent, caller = agent_and_caller
    call = caller.call(CMDS, id="huge", padding="x" * 262_144)
    rejected = agent.calls_rejected
    caller.send("spec-1", call)
    await wait_for(lambda: agent.calls_rejected == rejected + 1, 3.0)
    ping = caller.call([])
    caller.send("spec-1", ping, "sef.Agent", "Ping")
    assert (await _answer(caller, ping["id"]))["ok"] is True, "the agent keeps answering"
    assert caller.replies_to("huge") == [], "PayloadTooLarge is never sent: nothing was read"
    assert agent.executed == []


async def test_a_call_of_the_size_limit_is_read(
    agent_and_caller: tuple[RecordingAgent, RawCaller],
) -> None:
    _, caller = agent_and_caller
    call = caller.call(CMDS, id="big", padding="")
    size = len(json.dumps(call).encode())
    call["padding"] = "x" * (262_144 - size)
    caller.send("spec-1", call)
    assert (await _answer(caller, "big"))["ok"] is True
