"""Security profiles of the OCPP listener and the secure defaults of the two commands."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from evse_rig import CP_ID, make_tls
from sef.agents.evse import EVSEAgent, OcppCharger
from sef.cli import app
from sef.clock import ScaledClock
from sef.emulators.evse import EVSEEmulator
from sef.protocols.ocpp import client_tls, server_tls
from sef.security import Role
from support import wait_for


async def test_profile_3_client_certificate_names_the_charge_point(
    broker_url: str, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    ca = tls.ca
    ca.issue(CP_ID, Role.AGENT)
    ca.issue("CP-2", Role.AGENT)
    server = server_tls(ca.cert_path("evse-1-ocpp"), ca.key_path("evse-1-ocpp"), ca.ca_path)
    charger = OcppCharger(
        CP_ID, passwords=None, ssl_context=server, require_client_cert=True, connect_wait_s=0.2
    )
    clock = ScaledClock(speed=60)
    agent = EVSEAgent("evse-1", broker_url, charger, poll_s=0.2, clock=clock, keepalive_s=2)
    await agent.start()
    try:
        await charger.listener.start()
        url = f"wss://127.0.0.1:{charger.listener.port}/{CP_ID}"
        proto = [websockets.Subprotocol("ocpp1.6")]
        # no client certificate: the TLS handshake fails
        with pytest.raises((OSError, websockets.WebSocketException)):
            async with connect(url, subprotocols=proto, ssl=client_tls(ca.ca_path)):
                pass
        # a certificate of the CA, but for another charge point: 403
        other = client_tls(ca.ca_path, ca.cert_path("CP-2"), ca.key_path("CP-2"))
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(url, subprotocols=proto, ssl=other):
                pass
        assert refused.value.response.status_code == 403
        # its own certificate: served
        mine = client_tls(ca.ca_path, ca.cert_path(CP_ID), ca.key_path(CP_ID))
        emulator = EVSEEmulator(url, version="ocpp1.6", clock=clock, ssl_context=mine)
        task = asyncio.create_task(emulator.run())
        try:
            await wait_for(lambda: charger.state.transaction_id is not None, 10.0)
            assert agent.status.healthy
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await agent.stop()


def test_commands_are_secure_by_default(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    cert, key = str(tls.ca.cert_path("evse-1-ocpp")), str(tls.ca.key_path("evse-1-ocpp"))
    base = ["evse", "--id", "ev-1", "--broker", "mqtt://127.0.0.1:1", "--insecure"]
    cases = [
        (["evse", "--id", "ev-1", "--listen", "ws://127.0.0.1:0"], "plain ws:// listener"),
        ([*base, "--listen", "wss://127.0.0.1:0"], "needs --ocpp-cert"),
        ([*base, "--listen", "wss://127.0.0.1:0", "--ocpp-cert", cert, "--ocpp-key", key],
         "must authenticate"),
        ([*base, "--listen", "https://127.0.0.1:0"], "expected wss://HOST:PORT"),
        (["emulate", "evse", "--ocpp", "ws://127.0.0.1:1/CP-1"], "sends the password in clear"),
        (["emulate", "evse", "--ocpp", "wss://127.0.0.1:1/CP-1"], "needs --ca"),
        (["emulate", "evse", "--ocpp", "ws://127.0.0.1:1/", "--insecure"], "no charge point id"),
        (["emulate", "evse", "--ocpp", "wss://127.0.0.1:1/CP", "--ocpp-version", "9"], "1.6 or"),
    ]  # fmt: skip
    runner = CliRunner()
    for args, why in cases:
        done = runner.invoke(app, args, env={"SEF_OCPP_PASSWORD": None})
        assert done.exit_code == 2, (args, done.output)
        assert why in " ".join(done.output.split()), (args, done.output)
    short = runner.invoke(
        app, [*base, "--listen", "wss://127.0.0.1:0"], env={"SEF_OCPP_PASSWORD": "short"}
    )
    assert short.exit_code == 2 and "16-40" in short.output
