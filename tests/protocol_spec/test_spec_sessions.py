"""docs/protocol.md §1 and §4 on a real Mosquitto: clean sessions, subscriptions before the
birth, the reconnection backoff, and the stale-death repair at reconnections."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from sef.broker import Mosquitto
from sef.bus import BusClient, Call, Message, Status, Topics, decode_object
from sef.clock import RealClock
from sef.interface import DEMO_INTERFACE
from spec_probe import RecordingAgent
from support import AgentProcess, wait_for
from tcp_cut import CuttableLink

TOPICS = Topics()


class Watcher:
    """A raw client that keeps every message of some topics, with its arrival time."""

    def __init__(self, url: str, *patterns: str) -> None:
        self.patterns = patterns
        self.seen: list[tuple[float, Message]] = []
        self.bus = BusClient(url, f"watch-{uuid.uuid4().hex[:8]}", on_message=self._keep)

    def _keep(self, message: Message) -> None:
        self.seen.append((time.monotonic(), message))

    async def __aenter__(self) -> Watcher:
        for pattern in self.patterns:
            await self.bus.subscribe(pattern)
        await self.bus.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.stop()

    def statuses(self, agent_id: str) -> list[dict[str, Any]]:
        return [
            json.loads(m.payload)
            for _, m in self.seen
            if m.topic == TOPICS.status(agent_id) and m.payload and not m.retain
        ]


async def test_agents_use_clean_sessions_and_calls_sent_while_away_are_lost(
    broker_url: str,
) -> None:
    """§1 Sessions: a call published while the agent is offline is not queued for it."""
    agent = RecordingAgent("away-1", broker_url)
    assert agent.bus.clean_session is True
    await agent.start()
    await agent.stop()
    sender = BusClient(broker_url, "ems-away")
    await sender.start()
    now = RealClock().now()
    call = Call("while-away", [[["charge", 4, 60]]], now, now + 60.0, None, "ems-away")
    sender.publish(TOPICS.call("away-1", DEMO_INTERFACE, "EnergyMethod"), call.to_payload())
    await asyncio.sleep(0.3)
    back = RecordingAgent("away-1", broker_url)
    await back.start()
    assert back.bus.session_present is False, "the broker kept no session for the agent"
    await asyncio.sleep(1.0)
    assert back.executed == [], "a call sent while the agent was away must not run later"
    # a call sent now is executed: the agent's subscriptions are in place
    call = Call("after-return", [[["idle", 0, 60]]], now, now + 60.0, None, "ems-away")
    sender.publish(TOPICS.call("away-1", DEMO_INTERFACE, "EnergyMethod"), call.to_payload())
    await wait_for(lambda: back.executed == [[("idle", 0, 60)]], 3.0)
    await back.stop()
    await sender.stop()


async def test_birth_comes_after_the_suback_of_every_subscription(broker_url: str) -> None:
    """§4.2: a controller that calls the agent as soon as it sees the birth is heard."""
    calls: list[Message] = []

    class Caller:
        """Calls the agent the moment its online status arrives."""

        def __init__(self) -> None:
            self.bus = BusClient(broker_url, "eager-ems", on_message=self.on_status)

        def on_status(self, message: Message) -> None:
            status = Status.from_object(decode_object(message.payload))
            if status.online and not message.retain:
                now = RealClock().now()
                call = Call(uuid.uuid4().hex, [[["charge", 1, 60]]], now, now + 30, None, "e")
                topic = TOPICS.call("eager-1", DEMO_INTERFACE, "EnergyMethod")
                self.bus.publish(topic, call.to_payload())
                calls.append(message)

    caller = Caller()
    await caller.bus.subscribe(TOPICS.status("eager-1"))
    await caller.bus.start()
    agent = RecordingAgent("eager-1", broker_url)
    await agent.start()
    await wait_for(lambda: len(calls) == 1, 3.0)
    await wait_for(lambda: agent.executed == [[("charge", 1, 60)]], 3.0)
    await agent.stop()
    await caller.bus.stop()


async def test_two_processes_with_one_client_id_do_not_reconnect_at_10_hz(
    broker_url: str,
) -> None:
    """§1 Reconnect: the backoff does not start again at every CONNACK."""
    first = RecordingAgent("twin", broker_url, keepalive_s=5)
    second = RecordingAgent("twin", broker_url, keepalive_s=5)
    await first.start()
    await second.start()  # takes the session over; the first reconnects, and so on
    started = time.monotonic()
    await asyncio.sleep(5.0)
    elapsed = time.monotonic() - started
    total = first.bus.connections + second.bus.connections
    await first.stop()
    await second.stop()
    # a backoff reset at every CONNACK gives ~10 connections a second (~50 here);
    # growing from 0.1 s (0.1+0.2+0.4+0.8+1.6+3.2 s) each side connects about 6 times
    assert total <= 16, f"{total} connections in {elapsed:.1f} s: a reconnection storm"
    assert total >= 4, "the two clients should still take the session from each other"


async def test_two_agent_processes_with_one_id_reconnect_every_few_seconds(
    broker_url: str, agent_processes: list[AgentProcess]
) -> None:
    """§1 Reconnect, with two real ``sef agent`` processes: counted at the broker, from
    the births (one online status with a new bdseq per connection)."""
    async with Watcher(broker_url, TOPICS.status("twin-proc")) as watcher:
        for _ in range(2):
            agent_processes.append(AgentProcess("twin-proc", broker_url).start())
        await asyncio.sleep(1.0)  # both connected: now they take the session in turns
        start = len(watcher.statuses("twin-proc"))
        await asyncio.sleep(5.0)
        births = {
            s["bdseq"] for s in watcher.statuses("twin-proc")[start:] if s["state"] == "online"
        }
    # at 10 Hz this is ~50; with the backoff growing to 10 s, about 10
    assert 2 <= len(births) <= 16, f"{len(births)} connections in 5 s"


async def test_backoff_starts_again_after_a_connection_that_held(mosquitto: Mosquitto) -> None:
    """§1 Reconnect: after a connection that stayed up (here 0.5 s) the next attempt
    comes after the shortest delay; after short ones the delay keeps growing."""
    link = CuttableLink(mosquitto.port)
    await link.restore()
    connected_at: list[float] = []

    async def on_connect() -> None:
        connected_at.append(time.monotonic())

    client = BusClient(
        f"mqtt://127.0.0.1:{link.port}",
        "held-1",
        on_connect=on_connect,
        backoff_reset_after_s=0.5,
    )
    await client.start()
    gaps = []
    for _ in range(3):
        await asyncio.sleep(0.8)  # the connection holds
        count = len(connected_at)
        cut_at = time.monotonic()
        await link.cut()
        await link.restore()
        await wait_for(lambda count=count: len(connected_at) > count, 5.0)  # type: ignore[misc]
        gaps.append(connected_at[-1] - cut_at)
    assert max(gaps) < 0.4, f"reconnections after a held connection took {gaps} s"
    short = []
    for _ in range(4):  # connections lost within 0.5 s: the delay doubles
        count = len(connected_at)
        cut_at = time.monotonic()
        await link.cut()
        await link.restore()
        await wait_for(lambda count=count: len(connected_at) > count, 10.0)  # type: ignore[misc]
        short.append(connected_at[-1] - cut_at)
    assert short[-1] > 0.5 and short[-1] > 2 * short[0], f"delays after short connections {short}"
    await client.stop()


async def test_the_retained_will_brought_back_by_a_reconnection_needs_no_repair(
    mosquitto: Mosquitto,
) -> None:
    """§4.3: after an unclean loss the broker holds the previous connection's will; the
    agent's own status subscription delivers it (retained) at every reconnection. The
    birth that follows supersedes it: exactly one online status per session, seq 0."""
    link = CuttableLink(mosquitto.port)
    await link.restore()
    async with Watcher(mosquitto.url, TOPICS.status("cut-1")) as watcher:
        agent = RecordingAgent("cut-1", f"mqtt://127.0.0.1:{link.port}", keepalive_s=2)
        heard: list[Message] = []
        own_status = agent._on_message

        def spy(message: Message) -> None:
            if message.topic == TOPICS.status("cut-1"):
                heard.append(message)
            own_status(message)

        agent.bus._on_message = spy
        await agent.start()
        sessions = [agent.session.bdseq]
        for _ in range(3):
            await asyncio.sleep(0.3)
            await link.cut()
            await link.restore()
            await wait_for(lambda: agent.bus.connected and agent.session.bdseq != sessions[-1], 5.0)
            sessions.append(agent.session.bdseq)
        await asyncio.sleep(0.5)
        await agent.stop()
    # the agent was handed its previous session's will, retained, at each reconnection
    old_wills = [
        Status.from_object(decode_object(m.payload)) for m in heard if m.retain and m.payload
    ]
    assert {s.bdseq for s in old_wills if not s.online} >= set(sessions[:-1])
    live = watcher.statuses("cut-1")
    online = [s for s in live if s["state"] == "online"]
    assert [s["bdseq"] for s in online] == sessions, live
    assert all(s["seq"] == 0 for s in online), f"a repair was published: {online}"


async def test_a_live_stale_death_is_repaired(broker_url: str) -> None:
    """§4.3: an offline status of an older session arriving while the agent is online (a
    late will, or a forged one) is answered with the online status, same bdseq."""
    async with Watcher(broker_url, TOPICS.status("late-1")) as watcher:
        agent = RecordingAgent("late-1", broker_url)
        await agent.start()
        vandal = BusClient(broker_url, "vandal-late")
        await vandal.start()
        old = Status(False, agent.session.bdseq - 1, reason="will").to_payload()
        vandal.publish(TOPICS.status("late-1"), old, retain=True)
        await wait_for(
            lambda: any(
                s["state"] == "online" and s["seq"] > 0 for s in watcher.statuses("late-1")
            ),
            3.0,
        )
        repair = [s for s in watcher.statuses("late-1") if s["state"] == "online" and s["seq"] > 0]
        assert repair[0]["bdseq"] == agent.session.bdseq
        await vandal.stop()
        await agent.stop()
