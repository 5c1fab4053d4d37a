"""Method calls over a real Mosquitto: groups, replies, expiry, duplicates, bad input."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sef.agents import Agent, CallError, method
from sef.bus import BusClient, Call, ErrorName, Message, Reply, Topics, decode_object
from sef.clock import RealClock
from sef.ems import EMS, CallRefused
from sef.interface import DEMO_INTERFACE, Variant
from support import record, wait_for

TOPICS = Topics()


class CountingAgent(Agent):
    """Records every EnergyMethod call it executes."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.executed: list[list[tuple[str, int, int]]] = []

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        if cmds and cmds[0][0] == "explode":
            raise CallError("this device cannot explode")
        self.executed.append(cmds)


class Probe:
    """A raw MQTT client that publishes arbitrary bytes and collects replies."""

    def __init__(self, url: str) -> None:
        self.client_id = f"probe-{uuid.uuid4().hex[:8]}"
        self.reply_topic = TOPICS.reply(self.client_id)
        self.replies: list[Reply] = []
        self.bus = BusClient(url, self.client_id, on_message=self._on_message)

    def _on_message(self, message: Message) -> None:
        self.replies.append(Reply.from_object(decode_object(message.payload)))

    async def start(self) -> None:
        await self.bus.subscribe(self.reply_topic)
        await self.bus.start()

    def call_payload(self, args: Any, *, exp_in: float = 30.0, call_id: str | None = None) -> bytes:
        now = RealClock().now()
        return Call(
            call_id or uuid.uuid4().hex, args, now, now + exp_in, self.reply_topic, self.client_id
        ).to_payload()

    def send(
        self,
        agent_id: str,
        payload: bytes,
        interface: str = DEMO_INTERFACE,
        member: str = "EnergyMethod",
    ) -> None:
        self.bus.publish(TOPICS.call(agent_id, interface, member), payload)


@pytest.fixture
async def fleet(broker_url: str) -> AsyncIterator[tuple[EMS, list[CountingAgent]]]:
    agents = [
        CountingAgent(f"wh-{i}", broker_url, groups=["feeder-7"], keepalive_s=2) for i in range(3)
    ]
    outsider = CountingAgent("other", broker_url, groups=["feeder-8"], keepalive_s=2)
    for agent in (*agents, outsider):
        await agent.start()
    ems = EMS(broker_url, "ems-calls", keepalive_s=2)
    await ems.start()
    await wait_for(
        lambda: (
            len([a for a in ems.agents() if a.online]) == 4 and all(a.groups for a in ems.agents())
        ),
        5.0,
    )
    yield ems, [*agents, outsider]
    await ems.stop()
    for agent in (*agents, outsider):
        await agent.stop()


async def test_group_call_reaches_every_member_exactly_once(
    fleet: tuple[EMS, list[CountingAgent]],
) -> None:
    ems, agents = fleet
    cmds = [["charge", 4, 1800], ["discharge", 8, 1800]]
    replies = await ems.call(
        "group:feeder-7", DEMO_INTERFACE, "EnergyMethod", [cmds], timeout_s=3.0
    )
    assert sorted(r.agent for r in replies) == ["wh-0", "wh-1", "wh-2"]
    assert all(r.ok for r in replies)
    await asyncio.sleep(0.2)
    for agent in agents[:3]:
        assert agent.executed == [[("charge", 4, 1800), ("discharge", 8, 1800)]]
    assert agents[3].executed == [], "a member of another group must not execute"


async def test_redelivered_call_executes_once(
    broker_url: str, fleet: tuple[EMS, list[CountingAgent]]
) -> None:
    _, agents = fleet
    probe = Probe(broker_url)
    await probe.start()
    payload = probe.call_payload([[["idle", 0, 60]]], call_id="same-id")
    probe.send("wh-0", payload)
    probe.send("wh-0", payload)  # what a QoS 1 redelivery looks like
    await wait_for(lambda: len(probe.replies) >= 1, 3.0)
    await asyncio.sleep(0.3)
    assert len(probe.replies) == 1 and probe.replies[0].ok
    assert agents[0].executed == [[("idle", 0, 60)]]
    await probe.bus.stop()


async def test_expired_call_is_never_executed(
    broker_url: str, fleet: tuple[EMS, list[CountingAgent]]
) -> None:
    _, agents = fleet
    probe = Probe(broker_url)
    await probe.start()
    probe.send("wh-1", probe.call_payload([[["charge", 4, 60]]], exp_in=-1.0))
    await wait_for(lambda: len(probe.replies) == 1, 3.0)
    assert probe.replies[0].error == ErrorName.EXPIRED
    assert agents[1].executed == []
    await probe.bus.stop()


BAD_ARGS: list[tuple[str, Any, str, str, str, str]] = [
    (
        "wrong types",
        [[["charge", "four", 60]]],
        DEMO_INTERFACE,
        "EnergyMethod",
        ErrorName.INVALID_ARGS,
        "cmds[0][1]",
    ),
    (
        "int16 out of range",
        [[["charge", 4, 40000]]],
        DEMO_INTERFACE,
        "EnergyMethod",
        ErrorName.INVALID_ARGS,
        "40000",
    ),
    ("wrong arg count", [1, 2], DEMO_INTERFACE, "EnergyMethod", ErrorName.INVALID_ARGS, "argument"),
    (
        "unknown method",
        [],
        DEMO_INTERFACE,
        "SelfDestruct",
        ErrorName.UNKNOWN_METHOD,
        "SelfDestruct",
    ),
    (
        "unknown interface",
        [],
        "com.example.Toaster",
        "Toast",
        ErrorName.UNKNOWN_INTERFACE,
        "com.example.Toaster",
    ),
    (
        "handler refuses",
        [[["explode", 1, 1]]],
        DEMO_INTERFACE,
        "EnergyMethod",
        ErrorName.FAILED,
        "cannot explode",
    ),
]


@pytest.mark.parametrize(("case", "args", "interface", "member", "error", "needle"), BAD_ARGS)
async def test_bad_call_gets_error_reply_and_agent_survives(
    broker_url: str,
    fleet: tuple[EMS, list[CountingAgent]],
    case: str,
    args: Any,
    interface: str,
    member: str,
    error: str,
    needle: str,
) -> None:
    ems, agents = fleet
    probe = Probe(broker_url)
    await probe.start()
    probe.send("wh-2", probe.call_payload(args), interface, member)
    await wait_for(lambda: len(probe.replies) == 1, 3.0)
    reply = probe.replies[0]
    assert not reply.ok and reply.error == error, (case, reply)
    assert needle in (reply.message or ""), (case, reply.message)
    assert agents[2].executed == []
    # still alive and answering
    pong = await ems.call("wh-2", "sef.Agent", "Ping", [])
    assert pong and pong[0].ok and isinstance(pong[0].result[0], float)
    await probe.bus.stop()


@pytest.mark.parametrize(
    ("case", "payload"),
    [
        ("non-JSON", b"{not json"),
        ("JSON array", b"[1,2,3]"),
        ("garbage bytes", bytes(range(256))),
        ("over the 256 KiB bus limit", b"{" + b" " * 262_144 + b"}"),
        ("signed envelope", b'{"v":1,"jws":"e30.e30.sig"}'),
        ("missing fields", b'{"v":1,"args":[]}'),
    ],
)
async def test_malformed_call_payload_is_logged_and_agent_survives(
    broker_url: str,
    fleet: tuple[EMS, list[CountingAgent]],
    case: str,
    payload: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ems, agents = fleet
    probe = Probe(broker_url)
    await probe.start()
    rejected = agents[0].calls_rejected
    probe.send("wh-0", payload)
    await wait_for(lambda: agents[0].calls_rejected == rejected + 1, 3.0)
    assert any("rejected call" in r.getMessage() for r in caplog.records), case
    pong = await ems.call("wh-0", "sef.Agent", "Ping", [])
    assert pong and pong[0].ok
    await probe.bus.stop()


async def test_ems_refuses_bad_calls_before_sending(fleet: tuple[EMS, list[CountingAgent]]) -> None:
    ems, agents = fleet
    sent = ems.caller.calls_sent
    cases: list[tuple[str, str, str, list[Any], str]] = [
        ("wh-0", DEMO_INTERFACE, "EnergyMethod", [[["charge", 4, 70000]]], "out of range"),
        ("wh-0", DEMO_INTERFACE, "EnergyMethod", [[["charge", 4.5, 60]]], "cmds[0][1]"),
        ("wh-0", DEMO_INTERFACE, "Nope", [], "no method"),
        ("wh-0", "com.example.Unknown", "X", [], "unknown interface"),
        ("bad/id", DEMO_INTERFACE, "EnergyMethod", [[]], "invalid agent id"),
    ]
    for target, interface, member, args, needle in cases:
        with pytest.raises(CallRefused, match=needle.replace("[", r"\[").replace("]", r"\]")):
            await ems.call(target, interface, member, args)
    assert ems.caller.calls_sent == sent
    assert all(a.executed == [] for a in agents)


async def test_ems_survives_garbage_on_agent_topics(
    broker_url: str, fleet: tuple[EMS, list[CountingAgent]]
) -> None:
    ems, _ = fleet
    raw = BusClient(broker_url, "vandal")
    await raw.start()
    telemetry_before = record(ems, "wh-0").prop(DEMO_INTERFACE, "Telemetry")
    bad = ems.registry.bad_messages
    xml = b'<node><interface name="edu.pdx.powerlab.demo"><method name="Energ'
    for topic, payload in [
        (TOPICS.prop("wh-0", DEMO_INTERFACE, "Telemetry"), b"\xff\xfe garbage"),
        (TOPICS.about("wh-0"), b'{"v":1,"about":"not an object"}'),
        (TOPICS.status("wh-0"), b'{"v":1,"state":"sleeping","bdseq":1}'),
        (TOPICS.status("wh-0"), b"{" + b" " * 262_144 + b"}"),  # over the bus limit
        (TOPICS.interface_xml("wh-0", DEMO_INTERFACE), xml),
        (TOPICS.prop("wh-0", DEMO_INTERFACE, "Telemetry"), b'{"v":2,"value":1}'),
    ]:
        raw.publish(topic, payload, retain=False)
    await wait_for(lambda: ems.registry.bad_messages == bad + 6, 3.0)
    rec = ems.registry.get("wh-0")
    assert rec is not None and rec.online is True
    assert rec.prop(DEMO_INTERFACE, "Telemetry") == telemetry_before, "stored data kept"
    assert ems.registry.interface(DEMO_INTERFACE) is not None
    replies = await ems.call("wh-0", "sef.Agent", "Ping", [])
    assert replies and replies[0].ok
    await raw.stop()


def test_call_cli_validates_and_reports(broker_url: str) -> None:
    async def run() -> tuple[subprocess.CompletedProcess[str], ...]:
        agent = CountingAgent("cli-wh", broker_url, groups=["g1"])
        await agent.start()
        try:
            base = [
                sys.executable,
                "-m",
                "sef",
                "call",
                "--insecure",
                "--broker",
                broker_url,
                "--json",
            ]
            loop = asyncio.get_running_loop()

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)

            ok = await loop.run_in_executor(
                None, cli, "group:g1", f"{DEMO_INTERFACE}.EnergyMethod", '[[["charge",4,1800]]]'
            )
            bad = await loop.run_in_executor(
                None, cli, "cli-wh", f"{DEMO_INTERFACE}.EnergyMethod", '[[["charge",4,99999]]]'
            )
            garbage = await loop.run_in_executor(
                None, cli, "cli-wh", f"{DEMO_INTERFACE}.EnergyMethod", "[[["
            )
            assert agent.executed == [[("charge", 4, 1800)]]
            return ok, bad, garbage
        finally:
            await agent.stop()

    ok, bad, garbage = asyncio.run(run())
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)[0]["agent"] == "cli-wh"
    assert bad.returncode == 2 and "99999" in bad.stderr
    assert garbage.returncode == 2 and "not JSON" in garbage.stderr
