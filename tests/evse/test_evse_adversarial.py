"""Who may connect to ``sef evse``, and what a connected peer cannot do to it.

Real websockets against the real listener: unknown ids, missing or wrong passwords, no
TLS, no common sub-protocol and garbage frames are refused with a logged reason; the
agent keeps serving the genuine charge point throughout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from evse_rig import CP_ID, PASSWORD, AgentRig, agent_rig, make_tls
from sef.clock import ScaledClock
from sef.emulators.evse import EVSEEmulator
from sef.protocols.ocpp import MAX_BAD_FRAMES, basic_auth_header
from support import wait_for


async def _status_of(uri: str, **kw: object) -> int:
    """The HTTP status with which the handshake is refused (101 when accepted)."""
    try:
        async with connect(uri, open_timeout=5, **kw):  # type: ignore[arg-type]
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


@pytest.fixture
def tls(tmp_path: Path) -> object:
    return make_tls(tmp_path)


async def test_handshakes_refused_with_reason(
    broker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sef.agent.evse")
    tls = make_tls(tmp_path)
    clock = ScaledClock(speed=1)
    async with agent_rig(broker_url, clock, tls=tls) as rig:
        base = f"wss://127.0.0.1:{rig.port}"
        good = {"Authorization": basic_auth_header(CP_ID, PASSWORD)}
        proto = [websockets.Subprotocol("ocpp1.6")]
        ctx = tls.client
        cases = {
            "unknown id": (f"{base}/CP-999", good, proto, 404, "unknown charge point 'CP-999'"),
            "no credentials": (f"{base}/{CP_ID}", {}, proto, 401, "no Basic credentials"),
            "wrong password": (
                f"{base}/{CP_ID}",
                {"Authorization": basic_auth_header(CP_ID, "wrong-password-0123456")},
                proto, 401, "wrong user or password",
            ),
            "other user": (
                f"{base}/{CP_ID}",
                {"Authorization": basic_auth_header("CP-2", PASSWORD)},
                proto, 401, "wrong user or password",
            ),
            "garbage auth": (
                f"{base}/{CP_ID}", {"Authorization": "Basic !!!"}, proto, 401, "no Basic",
            ),
            "no sub-protocol": (f"{base}/{CP_ID}", good, None, 400, "no common sub-protocol"),
            "wrong sub-protocol": (
                f"{base}/{CP_ID}", good, [websockets.Subprotocol("ocpp2.1")], 400,
                "no common sub-protocol",
            ),
        }  # fmt: skip
        for name, (uri, headers, subprotocols, status, why) in cases.items():
            caplog.clear()
            got = await _status_of(
                uri, additional_headers=headers, subprotocols=subprotocols, ssl=ctx
            )
            assert got == status, name
            assert any(why in r.getMessage() for r in caplog.records), (name, caplog.text)
        # plain ws:// to the TLS listener: no handshake at all
        with pytest.raises((OSError, websockets.InvalidMessage, TimeoutError)):
            async with connect(f"ws://127.0.0.1:{rig.port}/{CP_ID}", open_timeout=2):
                pass
        # a TLS client that does not trust the deployment CA refuses the listener
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(f"{base}/{CP_ID}", ssl=ssl.create_default_context()):
                pass
        assert rig.charger.listener.refused >= len(cases)
        assert not rig.charger.listener.sessions


async def _genuine(rig: AgentRig, tls: object, clock: ScaledClock) -> EVSEEmulator:
    emulator = EVSEEmulator(
        f"wss://127.0.0.1:{rig.port}/{CP_ID}",
        version="ocpp1.6",
        clock=clock,
        password=PASSWORD,
        ssl_context=tls.client,  # type: ignore[attr-defined]
        meter_interval_s=5.0,
    )
    return emulator


GARBAGE: list[str | bytes] = [
    "not json",
    "[]",
    "{}",
    "[5, 1, 2]",
    '[2, "id"]',
    '[2, 17, "Heartbeat", {}]',
    '[2, "x", ["BootNotification"], {}]',
    '[2, "' + "x" * 64 + '", "Heartbeat", {}]',
    '[2, "a", "NoSuchAction", {}]',
    '[2, "b", "BootNotification", {"chargePointVendor": 5}]',
    '[2, "c", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "x", '
    '"sampledValue": []}]}]',
    '[2, "d", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Bogus"}]',
    '[3, "unknown-id", {}]',
    "[" * 10000 + "]" * 10000,
    b"\x00\x01binary",
]


async def test_garbage_frames_are_logged_and_survived(
    broker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sef.agent.evse")
    tls = make_tls(tmp_path)
    clock = ScaledClock(speed=60)
    async with agent_rig(broker_url, clock, tls=tls) as rig:
        emulator = await _genuine(rig, tls, clock)
        task = asyncio.create_task(emulator.run())
        try:
            await wait_for(lambda: rig.last().get("EV_Plugged") is True, 10.0)
            # the genuine charge point is replaced by a connection that sends garbage
            async with connect(
                f"wss://127.0.0.1:{rig.port}/{CP_ID}",
                subprotocols=[websockets.Subprotocol("ocpp1.6")],
                additional_headers={"Authorization": basic_auth_header(CP_ID, PASSWORD)},
                ssl=tls.client,
            ) as ws:
                replies = []
                for frame in GARBAGE:
                    await ws.send(frame)
                    if isinstance(frame, str) and '"NoSuchAction"' in frame:
                        replies.append(json.loads(await ws.recv()))
                assert replies and replies[0][0] == 4  # a CallError
                assert replies[0][2] == "NotSupported"  # the ocpp package's answer
                await wait_for(lambda: "frame rejected" in caplog.text, 5.0)
                # enough in a row closes the connection
                for _ in range(MAX_BAD_FRAMES):
                    await ws.send("garbage")
                await asyncio.wait_for(ws.wait_closed(), 5.0)
                assert ws.close_code == 1008
            reasons = [r.getMessage() for r in caplog.records if "frame rejected" in r.getMessage()]
            assert any("not JSON" in r for r in reasons)
            assert any("binary frame" in r for r in reasons)
            assert any("message id longer" in r for r in reasons)
            # the genuine charge point comes back and is served as before
            await wait_for(lambda: emulator.boots >= 2, 15.0)
            assert (await rig.send(("charge", 3, 0))).ok
            await wait_for(lambda: emulator.limit_kw() == 3.0, 5.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_departure_guard_refuses_and_shed_forces(broker_url: str, tmp_path: Path) -> None:
    clock = ScaledClock(speed=1)
    async with agent_rig(broker_url, clock, tls=None) as rig:
        # 30 kWh wanted in 3 h at 11 kW: 2.7 h of charging, little room for pauses
        from sef.emulators.evse import default_session

        emulator = EVSEEmulator(
            f"ws://127.0.0.1:{rig.port}/{CP_ID}",
            version="ocpp2.0.1",
            clock=clock,
            session=default_session(clock.now(), stay_h=3.0, need_kwh=30 * 0.9),
        )
        task = asyncio.create_task(emulator.run())
        try:
            await wait_for(lambda: rig.last().get("EV_Need_kWh", 0) > 29.0, 10.0)
            assert rig.last()["EV_Laxity_s"] == pytest.approx(3 * 3600 - 30 / 11 * 3600, abs=30)
            reply = await rig.send(("idle", 0, 3600))
            assert not reply.ok
            assert reply.error == "sef.Error.DepartureEnergy"
            assert "would deliver" in str(reply.message)
            await wait_for(lambda: "would deliver" in rig.last().get("Refused", ""), 5.0)
            assert emulator.limit_kw() == 11.0  # untouched
            assert not (await rig.send(("charge", 5, 0))).ok  # 15 kWh by departure
            assert (await rig.send(("idle", 0, 600))).ok  # a 10-minute pause fits
            await wait_for(lambda: emulator.limit_kw() == 0.0, 5.0)
            assert (await rig.send(("shed", 0, 3600))).ok  # forced
            assert rig.last()["Event"] == "shed"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
