"""docs/protocol.md §6 step 7 and docs/interfaces.md: an agent replies exactly when a call
has a ``reply_to``, whatever the method's ``NoReply`` annotation; ``sef call`` and the EMS
agree with that (a real Mosquitto, the real ``sef call``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from sef.agents import Agent, method
from sef.bus import BusClient, Message, Topics
from sef.ems import EMS
from sef.interface import AGENT_INTERFACE, DEMO_INTERFACE, Variant, builtin_interface
from support import is_online, wait_for

TOPICS = Topics()
SEF_CALL = (sys.executable, "-m", "sef", "call", "--insecure")


class QuietAgent(Agent):
    interfaces = (DEMO_INTERFACE,)

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        return None


class Tap:
    """Keeps every call published to one agent and that agent's live statuses."""

    def __init__(self, url: str, agent_id: str) -> None:
        self.calls: list[dict[str, Any]] = []
        self.births = 0
        self.agent_id = agent_id
        self.bus = BusClient(url, f"tap-{agent_id}", on_message=self._keep)

    def _keep(self, message: Message) -> None:
        if "/call/" in message.topic:
            self.calls.append(json.loads(message.payload))
        elif not message.retain and json.loads(message.payload).get("seq") == 0:
            self.births += 1

    async def start(self) -> None:
        await self.bus.subscribe(f"{TOPICS.agent_prefix(self.agent_id)}/call/#")
        await self.bus.subscribe(TOPICS.status(self.agent_id))
        await self.bus.start()


def test_both_shipped_methods_are_annotated_no_reply() -> None:
    """The annotation the rule is about (if it goes, this page of the spec changes)."""
    assert builtin_interface(AGENT_INTERFACE).methods["Rebirth"].no_reply
    assert builtin_interface(DEMO_INTERFACE).methods["EnergyMethod"].no_reply


def test_sef_call_rebirth_gets_a_reply_and_no_reply_sends_none(broker_url: str) -> None:
    def sef_call(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SEF_CALL, "--broker", broker_url, "--json", "nr-1", "sef.Agent.Rebirth", *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def run() -> tuple[Any, ...]:
        agent = QuietAgent("nr-1", broker_url)
        await agent.start()
        tap = Tap(broker_url, "nr-1")
        await tap.start()
        loop = asyncio.get_running_loop()
        try:
            asked = await loop.run_in_executor(None, sef_call)
            await wait_for(lambda: tap.births >= 1, 3.0)
            births = tap.births
            unasked = await loop.run_in_executor(None, sef_call, "--no-reply")
            await wait_for(lambda: tap.births > births, 3.0)
            return asked, unasked, list(tap.calls)
        finally:
            await tap.bus.stop()
            await agent.stop()

    asked, unasked, calls = asyncio.run(run())
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout) == [
        {"agent": "nr-1", "ok": True, "result": [], "error": None, "message": None}
    ]
    assert unasked.returncode == 0, unasked.stderr
    assert json.loads(unasked.stdout) == []
    assert [("reply_to" in c) for c in calls] == [True, False]


async def test_the_ems_asks_for_rebirth_without_reply_to_and_gets_no_reply(
    broker_url: str,
) -> None:
    agent = QuietAgent("nr-2", broker_url)
    await agent.start()
    tap = Tap(broker_url, "nr-2")
    await tap.start()
    async with EMS(broker_url, "ems-nr") as ems:
        await wait_for(lambda: is_online(ems, "nr-2"), 3.0)
        births = tap.births
        assert ems.rebirth("nr-2")
        await wait_for(lambda: tap.births > births, 3.0)
        assert len(tap.calls) == 1 and "reply_to" not in tap.calls[0]
        assert ems.caller.rejected.total == {}, "no reply came back"
        # EnergyMethod is annotated NoReply too, and is answered when asked
        replies = await ems.call("nr-2", DEMO_INTERFACE, "EnergyMethod", [[["idle", 0, 0]]])
        assert len(replies) == 1 and replies[0].ok
    await tap.bus.stop()
    await agent.stop()


def test_sef_call_names_the_rule_when_a_no_reply_method_goes_unanswered(
    broker_url: str,
) -> None:
    """An agent that reads NoReply as "never answer" breaks §6 step 7: ``sef call`` exits 3
    and says which rule."""

    async def run() -> subprocess.CompletedProcess[str]:
        agent = QuietAgent("nr-3", broker_url)
        agent.calls._reply = lambda reply, topic: None  # type: ignore[method-assign]
        await agent.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: subprocess.run(
                    [*SEF_CALL, "-b", broker_url, "--timeout", "1", "nr-3", "sef.Agent.Rebirth"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                ),
            )
        finally:
            await agent.stop()

    out = asyncio.run(run())
    assert out.returncode == 3, out.stderr
    assert "no reply from nr-3" in out.stderr
    assert "annotated NoReply" in out.stderr and "§6 step 7" in out.stderr
