"""Backfill (``docs/protocol.md`` §4.7) against a real Mosquitto: a virtual battery agent
that loses its broker (a cut TCP link, a frozen broker) keeps its telemetry and publishes
it after its next birth; a watcher at the broker receives every sample.

Samples are identified by their ``Telemetry`` ``TimeStamp``: the agent runs on a clock 4×
faster than real time with a 2 s (clock) step, so each poll has its own TimeStamp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from seal_support import TelemetryAgent, make_ca
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BusClient, Message, Topics
from sef.clock import ScaledClock
from sef.interface import DEMO_INTERFACE
from sef.security import SealVerifier, message_hash, window_digest
from support import wait_for
from tcp_cut import CuttableLink

T = Topics()


class RecordingBattery(VirtualBatteryAgent):
    """Remembers each Telemetry sample it produced (its TimeStamp) and whether it was
    connected then (before the first connection counts as connected: the first birth
    publishes that value, nothing is buffered)."""

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, clock=ScaledClock(4.0), step_s=2.0, **kwargs)
        self.produced: list[tuple[int, bool]] = []

    def set_property(self, interface: str, name: str, value: Any) -> bool:
        connected = self.bus.connected or not self.bus.connections
        changed = super().set_property(interface, name, value)
        if changed and name == "Telemetry":
            self.produced.append((value["TimeStamp"].value, connected))
        return changed


class Watcher:
    """Keeps every message of an agent's subtree, decoded, in arrival order."""

    def __init__(self, url: str, agent_id: str) -> None:
        self.agent_id = agent_id
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.raw: list[Message] = []
        self.bus = BusClient(url, f"watch-{uuid.uuid4().hex[:8]}", on_message=self._keep)

    def _keep(self, message: Message) -> None:
        self.raw.append(message)
        if message.topic.endswith("/xml") or "/interfaces/" in message.topic:
            return
        self.messages.append((message.topic, json.loads(message.payload), message.retain))

    async def __aenter__(self) -> Watcher:
        await self.bus.subscribe(f"{T.agent_prefix(self.agent_id)}/#")
        await self.bus.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.stop()

    def telemetry(self) -> list[dict[str, Any]]:
        topic = T.prop(self.agent_id, DEMO_INTERFACE, "Telemetry")
        return [obj for t, obj, _ in self.messages if t == topic]

    def samples(self) -> Counter[tuple[int, float]]:
        """How often each sample arrived: (its TimeStamp, its ts). A birth republishes the
        current value with a new ts (a new message, not a copy); a backfilled copy of a
        sample keeps its ts."""
        return Counter((obj["value"]["TimeStamp"][1], obj["ts"]) for obj in self.telemetry())

    def stamps(self) -> set[int]:
        """The samples (TimeStamps) that arrived."""
        return {stamp for stamp, _ in self.samples()}

    def sessions(self) -> list[list[tuple[str, dict[str, Any]]]]:
        """The messages with a seq, split at each online status with seq 0 (a birth)."""
        out: list[list[tuple[str, dict[str, Any]]]] = []
        for topic, obj, _ in self.messages:
            if "seq" not in obj:
                continue
            if topic.endswith("/status") and obj.get("state") == "online" and obj["seq"] == 0:
                out.append([])
            if out:
                out[-1].append((topic, obj))
        return out


async def retained(url: str, topic: str) -> dict[str, Any]:
    got: list[Message] = []
    client = BusClient(url, f"late-{uuid.uuid4().hex[:8]}", on_message=got.append)
    await client.subscribe(topic)
    await client.start()
    try:
        await wait_for(lambda: bool(got), 5.0)
    finally:
        await client.stop()
    assert got[0].retain
    return dict(json.loads(got[0].payload))


async def test_a_cut_link_loses_no_sample(mosquitto: Mosquitto) -> None:
    link = CuttableLink(mosquitto.port)
    await link.restore()
    async with Watcher(mosquitto.url, "bat-cut") as watcher:
        agent = RecordingBattery("bat-cut", f"mqtt://127.0.0.1:{link.port}", keepalive_s=1)
        await agent.start()
        try:
            await wait_for(lambda: len(watcher.telemetry()) >= 3, 5.0)
            await link.cut()
            await wait_for(lambda: not agent.bus.connected, 2.0)
            await asyncio.sleep(5.0)
            await link.restore()
            await wait_for(lambda: agent.bus.connected, 10.0)
            await wait_for(lambda: not agent.backfill.buffered(), 5.0)
            await asyncio.sleep(1.5)  # live samples again
            produced = list(agent.produced)
            try:
                await wait_for(lambda: watcher.stamps() >= {s for s, _ in produced}, 5.0)
            except AssertionError:  # say which samples, produced when, for the diagnosis
                absent = [(s, c) for s, c in produced if s not in watcher.stamps()]
                raise AssertionError(
                    f"samples (TimeStamp, produced while connected) never arrived: {absent}; "
                    f"backfill dropped {agent.backfill.dropped}, flushed "
                    f"{agent.backfill.flushed}; produced {produced}"
                ) from None
        finally:
            await agent.stop()
        telemetry = watcher.telemetry()
        samples = watcher.samples()
        offline = [s for s, connected in produced if not connected]
        backfilled = [obj for obj in telemetry if obj.get("backfill")]
        duplicates = sum(n - 1 for n in samples.values())
        print(
            f"cut: {len(produced)} samples produced, {len(offline)} while disconnected, "
            f"{len(backfilled)} backfilled, {len(telemetry)} Telemetry messages received, "
            f"{duplicates} duplicates"
        )
        assert len(offline) >= 8  # 5 s at 2 samples/s
        assert {s for s, _ in produced} <= watcher.stamps()  # none missing
        backfilled_stamps = Counter(obj["value"]["TimeStamp"][1] for obj in backfilled)
        assert set(offline) <= set(backfilled_stamps)
        assert all(backfilled_stamps[s] == 1 for s in offline)  # never sent before: once
        assert all(samples[(s, ts)] == 1 for s, ts in samples if s in offline)
        assert [obj["ts"] for obj in backfilled] == sorted(obj["ts"] for obj in backfilled)
        # backfilled after the new birth, and the new session's seqs have no gap
        sessions = watcher.sessions()
        assert len(sessions) == 2
        second = sessions[1]
        assert [obj["seq"] for _, obj in second] == list(range(len(second)))
        first_backfill = next(i for i, (_, obj) in enumerate(second) if obj.get("backfill"))
        birth_topics = {t for t, _ in second[:first_backfill]}
        assert T.prop("bat-cut", DEMO_INTERFACE, "Telemetry") in birth_topics
        assert not any(retain for _, obj, retain in watcher.messages if obj.get("backfill"))
        # the retained value is the newest live one, not a backfilled one
        last = await retained(mosquitto.url, T.prop("bat-cut", DEMO_INTERFACE, "Telemetry"))
        assert "backfill" not in last
        assert last == [obj for obj in telemetry if not obj.get("backfill")][-1]
        assert last["ts"] > max(obj["ts"] for obj in backfilled)
    await link.cut()


async def test_a_frozen_broker_loses_no_sample(mosquitto: Mosquitto) -> None:
    """The broker is stopped (SIGSTOP) for 6 s: the agent (keepalive 1 s) gives its
    connection up, buffers, reconnects once the broker runs again and backfills. What the
    broker had read before the freeze and acknowledged too late arrives twice."""
    assert mosquitto.process is not None
    async with Watcher(mosquitto.url, "bat-stop") as watcher:
        agent = RecordingBattery("bat-stop", mosquitto.url, keepalive_s=1)
        await agent.start()
        try:
            await wait_for(lambda: len(watcher.telemetry()) >= 3, 5.0)
            os.kill(mosquitto.process.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(6.0)
            finally:
                os.kill(mosquitto.process.pid, signal.SIGCONT)
            await wait_for(lambda: agent.bus.connected, 15.0)
            await wait_for(lambda: not agent.backfill.buffered(), 5.0)
            await asyncio.sleep(1.5)
            produced = list(agent.produced)
            try:
                await wait_for(lambda: watcher.stamps() >= {s for s, _ in produced}, 5.0)
            except AssertionError:  # say which samples, produced when, for the diagnosis
                absent = [(s, c) for s, c in produced if s not in watcher.stamps()]
                raise AssertionError(
                    f"samples (TimeStamp, produced while connected) never arrived: {absent}; "
                    f"backfill dropped {agent.backfill.dropped}, flushed "
                    f"{agent.backfill.flushed}; produced {produced}"
                ) from None
        finally:
            await agent.stop()
    missing = {s for s, _ in produced} - watcher.stamps()
    duplicates = {s: n for s, n in watcher.samples().items() if n > 1}
    backfilled = [obj for obj in watcher.telemetry() if obj.get("backfill")]
    print(
        f"SIGSTOP: {len(produced)} samples produced, "
        f"{sum(not c for _, c in produced)} while disconnected, {len(backfilled)} "
        f"backfilled, {len(duplicates)} received twice, {len(missing)} missing"
    )
    assert not missing
    assert len(backfilled) >= 6
    assert agent.backfill.dropped == 0


async def test_the_buffer_keeps_the_newest(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """``backfill_limit=5``: 12 samples produced while cut off, the newest 5 arrive as
    backfill, 7 are dropped and counted in one warning."""
    caplog.set_level(logging.WARNING, "sef.agent")
    link = CuttableLink(mosquitto.port)
    await link.restore()
    async with Watcher(mosquitto.url, "bat-lim") as watcher:
        agent = TelemetryAgent(
            "bat-lim", f"mqtt://127.0.0.1:{link.port}", keepalive_s=1, backfill_limit=5
        )
        await agent.start()
        try:
            await wait_for(lambda: len(watcher.telemetry()) == 1, 5.0)  # the birth's
            await link.cut()
            await wait_for(lambda: not agent.bus.connected, 2.0)
            for _ in range(12):
                agent.report()
            assert agent.backfill.dropped == 7
            await link.restore()
            await wait_for(lambda: agent.bus.connected, 10.0)
            await wait_for(lambda: len(watcher.telemetry()) == 1 + 1 + 5, 5.0)
        finally:
            await agent.stop()
    backfilled = [
        obj["value"]["TimeStamp"][1] for obj in watcher.telemetry() if obj.get("backfill")
    ]
    assert backfilled == [9, 10, 11, 12, 13]  # report 1 came before the first birth
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [
        "agent bat-lim: 7 property updates dropped while disconnected (backfill buffer full "
        "at 5; the oldest go first)"
    ]
    await link.cut()


async def test_backfilled_updates_are_sealed_in_the_new_session(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Signed telemetry (§11): the backfilled updates are hashed into the new session's
    windows like any other publish, and every window of the new session verifies."""
    ca, creds = make_ca(tmp_path / "ca", "bat-sig")
    verifier = SealVerifier(ca.trust_store())
    link = CuttableLink(mosquitto.port)
    await link.restore()
    async with Watcher(mosquitto.url, "bat-sig") as watcher:
        agent = TelemetryAgent(
            "bat-sig",
            f"mqtt://127.0.0.1:{link.port}",
            keepalive_s=1,
            sign_telemetry=creds["bat-sig"],
            seal_window_s=0.4,
            seal_window_messages=4,
        )
        await agent.start()
        try:
            await wait_for(lambda: len(watcher.telemetry()) == 1, 5.0)
            await link.cut()
            await wait_for(lambda: not agent.bus.connected, 2.0)
            for _ in range(6):
                agent.report()
            await link.restore()
            await wait_for(lambda: agent.bus.connected, 10.0)
            await wait_for(lambda: not agent.backfill.buffered(), 5.0)
            agent.report()
        finally:
            await agent.stop()  # seals the open window
        await asyncio.sleep(0.3)
    births = [
        obj["bdseq"]
        for t, obj, _ in watcher.messages
        if t.endswith("/status") and obj.get("state") == "online"
    ]
    session = births[-1]
    # the new session's messages only: from its birth on (the watcher saw it live)
    start = next(
        i
        for i, m in enumerate(watcher.raw)
        if m.topic.endswith("/status") and json.loads(m.payload).get("bdseq") == session
    )
    hashes: dict[int, bytes] = {}
    for message in watcher.raw[start:]:
        if "/props/" in message.topic:
            obj = json.loads(message.payload)
            hashes[obj["seq"]] = message_hash(message.topic, obj["seq"], message.payload)
    backfilled = {obj["seq"] for t, obj, _ in watcher.messages[start:] if obj.get("backfill")}
    assert len(backfilled) == 6
    sealed: set[int] = set()
    for message in watcher.raw:
        if message.topic != T.seal("bat-sig"):
            continue
        claims = verifier.verify(message.payload, "bat-sig")
        if claims.bdseq != session:
            continue
        seqs = [s for s in range(claims.from_seq, claims.to_seq + 1) if s in hashes]
        assert claims.count == len(seqs)
        assert claims.digest == window_digest(hashes[s] for s in seqs)
        sealed |= set(seqs)
    assert backfilled <= sealed
    assert sealed == set(hashes)
    await link.cut()


async def test_the_flush_is_paced(mosquitto: Mosquitto) -> None:
    """400 buffered updates go out at most 200 a second (measured at the watcher)."""
    link = CuttableLink(mosquitto.port)
    await link.restore()
    arrivals: list[float] = []
    topic = T.prop("bat-rate", DEMO_INTERFACE, "Telemetry")

    def keep(message: Message) -> None:
        if b'"backfill":true' in message.payload:
            arrivals.append(asyncio.get_running_loop().time())

    watcher = BusClient(mosquitto.url, "watch-rate", on_message=keep)
    await watcher.subscribe(topic)
    await watcher.start()
    agent = TelemetryAgent("bat-rate", f"mqtt://127.0.0.1:{link.port}", keepalive_s=1)
    await agent.start()
    try:
        await wait_for(lambda: agent.bus.unacknowledged == 0, 2.0)  # the birth went through
        await link.cut()
        await wait_for(lambda: not agent.bus.connected, 2.0)
        for _ in range(400):
            agent.report()
        await link.restore()
        await wait_for(lambda: len(arrivals) == 400, 15.0)
    finally:
        await agent.stop()
        await watcher.stop()
        await link.cut()
    span_s = arrivals[-1] - arrivals[0]
    print(f"flush: 400 backfilled updates in {span_s:.2f} s ({399 / span_s:.0f}/s)")
    assert span_s >= 399 / 200 - 0.1  # 20 updates every 0.1 s: 19 pauses, ~1.9 s
    assert span_s < 3.0
    one_second = max(sum(1 for t in arrivals if t0 <= t < t0 + 1.0) for t0 in arrivals)
    assert one_second <= 200 + 20  # a burst of 20 may straddle a window's edge
