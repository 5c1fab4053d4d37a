"""Defect 17 of issue 11: client-id takeover. Connecting as client id ``ems`` kicks the real
EMS off the broker (and a clean session wipes its queued one).

Until client ids are bound to certificates nothing prevents it; the EMS must notice (MQTT
5: the broker's DISCONNECT says "session taken over", 0x8E, from brokers that send it;
connections lost again and again right after connecting; an online status of a newer
session under its host id), log it loudly once per episode with the count, show it in /metrics, and
re-establish itself: reconnect with backoff, republish its status, take commands again.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from calls_support import EmsStack, online, retained, start_ems
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BusClient
from sef.ems import EMS
from support import wait_for

RECOVER_S = 20.0
"""Longest time for the EMS to be back once the other client left, s (backoff ≤ 10 s)."""


def takeover_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The ERROR records that report a takeover."""
    return [
        r for r in caplog.records if r.levelno >= logging.ERROR and "TAKEN OVER" in r.getMessage()
    ]


async def recovered(stack: EmsStack, broker: str, agent_id: str) -> None:
    """The EMS is connected again, its retained status is its current birth, and a command
    to a real agent gets its reply (subscriptions and reply topic are back)."""
    ems = stack.ems
    await wait_for(lambda: ems.bus.connected, RECOVER_S)
    status = await retained(broker, "sef/hosts/ems/status")
    assert status is not None and status["state"] == "online", status
    assert status["bdseq"] == ems.session.bdseq
    result = (
        await stack.http.post(
            f"/agents/{agent_id}/commands", json={"cmds": [["idle", 0, 0]], "timeout_s": 5}
        )
    ).json()
    assert result["status"] == "ok", result


async def test_mqtt5_takeover_is_detected_logged_once_and_recovered(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sef")
    broker = mosquitto.url + "?version=5"
    stack = await start_ems(broker, tmp_path / "ems.db")
    agent = VirtualBatteryAgent("bat-1", broker, step_s=1.0)
    await agent.start()
    try:
        await online(stack.ems, "bat-1")
        first_bdseq = stack.ems.session.bdseq
        rogue = BusClient(broker, "ems")  # clean session: also wipes the EMS's queued one
        await rogue.start()
        try:
            # both reconnect and kick each other: several takeovers, one episode
            await wait_for(lambda: bool(takeover_errors(caplog)), 15.0)
            await wait_for(lambda: stack.ems.takeovers >= 3, 15.0)
        finally:
            await rogue.stop()
        errors = takeover_errors(caplog)
        assert len(errors) == 1, [r.getMessage() for r in errors]
        # the first sign: the wiped session, or (Mosquitto 2.0.11 closes the socket without
        # the MQTT 5 DISCONNECT 0x8E) the short connections
        await recovered(stack, broker, "bat-1")
        assert stack.ems.session.bdseq > first_bdseq
        metrics = await stack.metrics()
        assert metrics[("sef_session_takeovers_total", ())] >= 3
        assert metrics[("sef_session_takeover_active", ())] == 1  # until 30 s of quiet
        assert len(takeover_errors(caplog)) == 1
    finally:
        await agent.stop()
        await stack.stop()


async def test_mqtt311_takeover_is_detected_from_short_connections_and_recovered(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sef")
    broker = mosquitto.url  # MQTT 3.1.1: the broker just closes the socket
    stack = await start_ems(broker, None)  # no store: a clean session, nothing to wipe
    agent = VirtualBatteryAgent("bat-1", broker, step_s=1.0)
    await agent.start()
    try:
        await online(stack.ems, "bat-1")
        rogue = BusClient(broker, "ems")
        await rogue.start()
        try:
            await wait_for(lambda: bool(takeover_errors(caplog)), 15.0)
        finally:
            await rogue.stop()
        errors = takeover_errors(caplog)
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "3 connections in a row lost within 3 s" in errors[0].getMessage()
        await recovered(stack, broker, "bat-1")
        metrics = await stack.metrics()
        assert metrics[("sef_session_takeovers_total", ())] >= 1
    finally:
        await agent.stop()
        await stack.stop()


async def connect_once_as(broker: str, client_id: bytes, hold_s: float = 0.3) -> None:
    """Connect one MQTT 3.1.1 client with ``client_id`` and a clean session, as any
    client on the network can, hold the connection a moment, then leave."""
    host, port = broker.removeprefix("mqtt://").split("?")[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    writer.write(bytes([0x10, len(body)]) + body)
    await writer.drain()
    assert (await reader.readexactly(4))[3] == 0  # CONNACK: accepted
    await asyncio.sleep(hold_s)
    writer.write(b"\xe0\x00")  # DISCONNECT
    await writer.drain()
    writer.close()


async def test_one_takeover_that_wipes_the_session_is_detected(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sef")
    broker = mosquitto.url
    stack = await start_ems(broker, tmp_path / "ems.db")
    agent = VirtualBatteryAgent("bat-1", broker, step_s=1.0)
    await agent.start()
    try:
        await online(stack.ems, "bat-1")
        await connect_once_as(broker, b"ems")  # kicks the EMS, wipes its queued session
        await wait_for(lambda: bool(takeover_errors(caplog)), 10.0)
        assert "persistent session" in takeover_errors(caplog)[0].getMessage()
        await recovered(stack, broker, "bat-1")
    finally:
        await agent.stop()
        await stack.stop()


async def test_second_ems_with_the_same_id_is_a_takeover(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sef")
    broker = mosquitto.url
    stack = await start_ems(broker, tmp_path / "ems.db")
    agent = VirtualBatteryAgent("bat-1", broker, step_s=1.0)
    await agent.start()
    try:
        await online(stack.ems, "bat-1")
        twin = EMS(broker, "ems")  # misconfigured second EMS, or an impostor announcing
        await twin.start()
        try:
            await wait_for(lambda: bool(takeover_errors(caplog)), 15.0)
        finally:
            await twin.stop()
        assert takeover_errors(caplog)
        await recovered(stack, broker, "bat-1")
        await wait_for(lambda: agent.host_online.get("ems") is True, 5.0)
    finally:
        await agent.stop()
        await stack.stop()
