"""EV charger end to end: EMS → Mosquitto → ``sef evse`` agent → OCPP (wss, Basic auth) →
a charge point: SEF's emulator, and a minimal one written here on the ``ocpp`` package.

Acceptance (issue 17): each charge point boots, starts a transaction, receives the profile
for ``charge:7:1800`` sent through the bus and meters 3.5 kWh ± 2 % in 30 simulated
minutes (scaled clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import connect

from evse_rig import CP_ID, PASSWORD, AgentRig, agent_rig, make_tls
from sef.clock import Clock, ScaledClock
from sef.emulators.evse import EVSEEmulator, default_session
from sef.protocols.ocpp import basic_auth_header
from support import wait_for

SPEED = 120.0  # 30 simulated minutes in 15 s


def _iso(clock: Clock) -> str:
    from sef.protocols.ocpp._profiles import iso

    return iso(clock.now())


class MinimalCP16(CP16):  # type: ignore[misc]
    """A 1.6 charge point in a few lines of the ``ocpp`` package: it meters its limit."""

    def __init__(self, cp_id: str, ws: Any, clock: Clock) -> None:
        super().__init__(cp_id, ws)
        self.clock = clock
        self.limit_w = 11000.0
        self.energy_wh = 0.0
        self.last = clock.now()
        self.changes: list[tuple[float, float, float]] = []  # (t, Wh, new limit W)
        self.meter: list[tuple[float, float]] = []  # (t, Wh) at every integration

    def integrate(self) -> None:
        now = self.clock.now()
        self.energy_wh += self.limit_w * (now - self.last) / 3600
        self.last = now
        self.meter.append((now, self.energy_wh))

    @on("SetChargingProfile")  # type: ignore[untyped-decorator]
    def on_set(self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any) -> Any:
        self.integrate()
        schedule = cs_charging_profiles["charging_schedule"]
        assert schedule["charging_rate_unit"] == "W"
        self.limit_w = float(schedule["charging_schedule_period"][0]["limit"])
        self.changes.append((self.clock.now(), self.energy_wh, self.limit_w))
        return result16.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")  # type: ignore[untyped-decorator]
    def on_clear(self, **_: Any) -> Any:
        self.integrate()
        self.limit_w = 11000.0
        self.changes.append((self.clock.now(), self.energy_wh, self.limit_w))
        return result16.ClearChargingProfile(status="Accepted")

    async def session(self) -> None:
        await self.call(call16.BootNotification(charge_point_model="mini", charge_point_vendor="t"))
        await self.call(
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing")
        )
        res = await self.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=0, timestamp=_iso(self.clock)
            )
        )
        self.tx = res.transaction_id
        await self.call(
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Charging")
        )
        while True:
            await asyncio.sleep(0.1)
            self.integrate()
            mv = [
                {
                    "timestamp": _iso(self.clock),
                    "sampled_value": [
                        {
                            "value": f"{self.energy_wh:.1f}",
                            "measurand": "Energy.Active.Import.Register",
                            "unit": "Wh",
                        },
                        {
                            "value": f"{self.limit_w:.1f}",
                            "measurand": "Power.Active.Import",
                            "unit": "W",
                        },
                    ],
                }
            ]
            await self.call(
                call16.MeterValues(connector_id=1, transaction_id=self.tx, meter_value=mv)
            )


class MinimalCP201(CP201):  # type: ignore[misc]
    """A 2.0.1 charging station in a few lines of the ``ocpp`` package."""

    def __init__(self, cp_id: str, ws: Any, clock: Clock) -> None:
        super().__init__(cp_id, ws)
        self.clock = clock
        self.limit_w = 11000.0
        self.energy_wh = 0.0
        self.last = clock.now()
        self.changes: list[tuple[float, float, float]] = []
        self.meter: list[tuple[float, float]] = []

    def integrate(self) -> None:
        now = self.clock.now()
        self.energy_wh += self.limit_w * (now - self.last) / 3600
        self.last = now
        self.meter.append((now, self.energy_wh))

    @on("SetChargingProfile")  # type: ignore[untyped-decorator]
    def on_set(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        self.integrate()
        assert charging_profile["charging_profile_purpose"] == "TxProfile"
        assert charging_profile["transaction_id"] == "tx-1"
        period = charging_profile["charging_schedule"][0]["charging_schedule_period"][0]
        self.limit_w = float(period["limit"])
        self.changes.append((self.clock.now(), self.energy_wh, self.limit_w))
        return result201.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")  # type: ignore[untyped-decorator]
    def on_clear(self, **_: Any) -> Any:
        self.integrate()
        self.limit_w = 11000.0
        self.changes.append((self.clock.now(), self.energy_wh, self.limit_w))
        return result201.ClearChargingProfile(status="Accepted")

    async def session(self) -> None:
        await self.call(
            call201.BootNotification(
                charging_station={"model": "mini", "vendor_name": "t"}, reason="PowerUp"
            )
        )
        await self.call(
            call201.StatusNotification(
                timestamp=_iso(self.clock), connector_status="Occupied", evse_id=1, connector_id=1
            )
        )
        seq = 0
        info = {"transaction_id": "tx-1", "charging_state": "Charging"}
        await self.call(
            call201.TransactionEvent(
                event_type="Started", timestamp=_iso(self.clock), trigger_reason="CablePluggedIn",
                seq_no=seq, transaction_info=info, evse={"id": 1, "connector_id": 1},
            )
        )  # fmt: skip
        while True:
            await asyncio.sleep(0.1)
            self.integrate()
            seq += 1
            mv = [
                {
                    "timestamp": _iso(self.clock),
                    "sampled_value": [
                        {"value": self.energy_wh, "measurand": "Energy.Active.Import.Register"},
                        {
                            "value": self.limit_w,
                            "measurand": "Power.Active.Import",
                            "unit_of_measure": {"unit": "W"},
                        },
                    ],
                }
            ]
            await self.call(
                call201.TransactionEvent(
                    event_type="Updated", timestamp=_iso(self.clock),
                    trigger_reason="MeterValuePeriodic", seq_no=seq, transaction_info=info,
                    meter_value=mv,
                )
            )  # fmt: skip


@contextlib.asynccontextmanager
async def minimal_cp(
    version: str, port: int, clock: Clock, client_tls: ssl.SSLContext
) -> AsyncIterator[MinimalCP16 | MinimalCP201]:
    async with connect(
        f"wss://127.0.0.1:{port}/{CP_ID}",
        subprotocols=[websockets.Subprotocol(version)],
        additional_headers={"Authorization": basic_auth_header(CP_ID, PASSWORD)},
        ssl=client_tls,
    ) as ws:
        assert ws.subprotocol == version
        cp: MinimalCP16 | MinimalCP201 = (
            MinimalCP16(CP_ID, ws, clock)
            if version == "ocpp1.6"
            else MinimalCP201(CP_ID, ws, clock)
        )
        tasks = [asyncio.create_task(cp.start()), asyncio.create_task(cp.session())]
        try:
            yield cp
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _charge_7_for_1800(rig: AgentRig) -> None:
    await wait_for(lambda: rig.last().get("EV_Plugged") is True, 10.0)
    await wait_for(lambda: rig.charger.state.transaction_id is not None, 10.0)
    reply = await rig.send(("charge", 7, 1800))
    assert reply.ok, reply
    assert rig.charger.limit_kw == 7.0


@pytest.mark.parametrize(
    ("version", "unit"), [("ocpp1.6", "W"), ("ocpp2.0.1", "W"), ("ocpp2.0.1", "A")]
)
async def test_emulator_meters_3_5_kwh_for_charge_7_1800(
    broker_url: str, tmp_path: Path, version: str, unit: str
) -> None:
    clock = ScaledClock(speed=SPEED)
    tls = make_tls(tmp_path)
    async with agent_rig(broker_url, clock, tls=tls, unit=unit) as rig:
        emulator = EVSEEmulator(
            f"wss://127.0.0.1:{rig.port}/{CP_ID}",
            version=version,
            clock=clock,
            session=default_session(clock.now(), need_kwh=30.0, battery_kwh=75.0),
            password=PASSWORD,
            ssl_context=tls.client,
            meter_interval_s=30.0,
        )
        task = asyncio.create_task(emulator.run())
        try:
            await _charge_7_for_1800(rig)
            # 7 kW in A: 10.1 A per phase on 3 x 230 V = 6.969 kW
            expected_kw = 7.0 if unit == "W" else 10.1 * 3 * 230 / 1000
            await wait_for(
                lambda: any(p[1] == pytest.approx(expected_kw) for p in emulator.profile_log), 5.0
            )
            t0, _, e0 = next(p for p in emulator.profile_log if p[1] == pytest.approx(expected_kw))
            # the sequence ends: the agent clears its profile (the charger's default again)
            await wait_for(lambda: emulator.profile_log[-1][1] is None, 1800 / SPEED + 10)
            t1 = emulator.profile_log[-1][0]
            await wait_for(lambda: emulator.meter_log[-1][0] >= t0 + 1800, 5.0)
            kwh = (emulator.register_at(t0 + 1800) - e0) / 1000
            print(f"{version} {unit}: {kwh:.4f} kWh in the 1800 s after the profile arrived, "
                  f"cleared after {t1 - t0:.1f} s")  # fmt: skip
            assert kwh == pytest.approx(3.5, rel=0.02)
            assert t1 - t0 == pytest.approx(1800, abs=60)  # the agent's own timer
            # the agent's telemetry showed the session
            await wait_for(lambda: rig.last().get("Event") == "idle", 5.0)
            seen = rig.telemetry
            assert any(t.get("EV_Rate_kW", 0) == pytest.approx(expected_kw, abs=0.05) for t in seen)
            assert rig.last()["EV_Departure"] == pytest.approx(
                float(emulator.fleet.sessions.departure_s[0]), abs=1
            )
            assert rig.last()["OCPP_Version"] == version
            assert rig.last()["EV_Energy_kWh"] > 3.4
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
async def test_minimal_ocpp_charge_point_meters_3_5_kwh(
    broker_url: str, tmp_path: Path, version: str
) -> None:
    clock = ScaledClock(speed=SPEED)
    tls = make_tls(tmp_path)
    async with (
        agent_rig(broker_url, clock, tls=tls) as rig,
        minimal_cp(version, rig.port, clock, tls.client) as cp,
    ):
        await _charge_7_for_1800(rig)
        await wait_for(lambda: len(cp.changes) >= 2, 1800 / SPEED + 10)
        (t0, e0, w0), (t1, _, w1) = cp.changes[:2]
        await wait_for(lambda: cp.meter[-1][0] >= t0 + 1800, 5.0)
        times, energy = zip(*cp.meter, strict=True)
        kwh = (float(np.interp(t0 + 1800, times, energy)) - e0) / 1000
        print(f"{version} minimal CP: {kwh:.4f} kWh in the 1800 s after the profile arrived, "
              f"cleared after {t1 - t0:.1f} s")  # fmt: skip
        assert w0 == 7000.0 and w1 == 11000.0
        assert t1 - t0 == pytest.approx(1800, abs=60)
        assert kwh == pytest.approx(3.5, rel=0.02)
