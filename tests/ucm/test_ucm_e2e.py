"""UCM end to end: EMS → Mosquitto → UCM → real pty → SGD emulator, on a scaled clock."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from sef.agents.ucm import UCMAgent
from sef.models.waterheater import WaterHeaterModel, WaterHeaterParams
from sef.models.waterheater_dr import DRSettings
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_helpers import Rig, at, rig

CURTAILED = {"RUNNING_CURTAILED", "IDLE_CURTAILED"}


def baseline_kwh(r: Rig, marks: list[float]) -> list[float]:
    """Element energy (kWh) at clock times ``marks`` of the same tank with no event."""
    model = WaterHeaterModel(WaterHeaterParams(), n=1, dr=DRSettings(heartbeat_timeout_s=math.inf))
    t, out = r.sgd.started_s, []
    for mark in marks:
        while t < mark - 1e-6:
            end = min(mark, (math.floor(t / 60) + 1) * 60)
            model.step(end - t, r.sgd.draw_at(t))
            t = end
        out.append(float(model.electric_kwh[0]))
    return out


def in_window(r: Rig, start: float, end: float) -> list[dict[str, Any]]:
    return [t for t in r.telemetry if start <= float(t["TimeStamp"]) <= end]


async def test_shed_1700_2000_curtails_then_rebounds(broker_url: str) -> None:
    async with rig(broker_url, speed=900, start=at("16:50")) as r:
        await r.until(at("17:00"))
        await r.shed_like([["shed", 0, 10800]])
        await r.until(at("20:40") + 60)
        # the SGD: elements off for the whole event, state curtailed
        during = [s for s in r.samples if at("17:02") <= s.t <= at("19:58")]
        assert during and all(s.power_w == 0.0 for s in during)
        assert {s.state for s in during} <= {2, 4}
        shed_kwh = r.energy_kwh(at("17:00"), at("20:00"))
        rebound_kwh = r.energy_kwh(at("20:00"), at("20:40"))
        b17, b20, b21 = baseline_kwh(r, [at("17:00"), at("20:00"), at("20:40")])
        print(
            f"17-20 h: {shed_kwh:.3f} kWh shed vs {b20 - b17:.3f} kWh baseline; "
            f"20:00-20:40: {rebound_kwh:.3f} kWh vs {b21 - b20:.3f} kWh baseline"
        )
        assert shed_kwh < 0.05 < (b20 - b17) - 0.5
        assert rebound_kwh > (b21 - b20) + 0.5
        assert max(s.power_w for s in r.samples if at("20:00") <= s.t <= at("20:30")) == 4500
        # what went over the wire: Shed with 2·74² = 10952 s, then End Shed at 20:00
        kinds = [m for m in r.sgd.received if isinstance(m, cta.Shed | cta.EndShed)]
        shed_at = kinds.index(cta.Shed(0x4A))
        assert cta.EndShed() in kinds[shed_at:]
        # the telemetry showed it
        event = in_window(r, at("17:05"), at("19:55"))
        assert event and all(
            t["Event"] == "shed" and t["Op_State"] in CURTAILED and t["Power_W"] == 0.0
            for t in event
        )
        after = in_window(r, at("20:01"), at("20:40"))
        assert all(t["Event"] == "idle" for t in after)
        assert any(t["Power_W"] == 4500.0 and t["Op_State"] == "RUNNING_NORMAL" for t in after)
        assert all(t["Link"] == "up" and t["Override"] is False for t in r.telemetry[-5:])
        assert r.last()["Energy_Capacity_Wh"] == pytest.approx(
            float(r.sgd.model.total_energy_storage_wh[0]), abs=1
        )


async def test_load_up_raises_stored_energy(broker_url: str) -> None:
    params = WaterHeaterParams(initial_c=47.0)  # inside the normal band: no heating
    async with rig(
        broker_url,
        speed=600,
        start=at("12:00"),
        sgd_kwargs={"params": params, "draws": np.zeros(0)},
    ) as r:
        await r.until(r.clock.now() + 300)
        assert all(s.power_w == 0 for s in r.samples)
        before_sgd = r.samples[-1].stored_wh
        before = r.last()["Energy_Stored_Wh"]
        start = r.clock.now()
        await r.shed_like([["charge", 4, 1800]])
        await r.until(start + 1800 + 120)
        gained = max(t.get("Energy_Stored_Wh", 0.0) for t in r.telemetry) - before
        gained_sgd = max(s.stored_wh for s in r.samples) - before_sgd
        print(f"Load Up: stored energy +{gained:.0f} Wh (telemetry), +{gained_sgd:.0f} Wh (SGD)")
        # a tank from 47 °C to the 51.67 °C setpoint: 170 L x 4183 J/(L K) x 4.67 K = 922 Wh
        assert gained == pytest.approx(922, abs=60)
        assert gained_sgd == pytest.approx(922, abs=60)
        assert cta.LoadUp(30) in r.sgd.received  # 2·30² = 1800 s exactly
        charging = [t for t in r.telemetry if t["Event"] == "charge"]
        assert any(
            t["Op_State"] == "RUNNING_HEIGHTENED" and t["Power_W"] == 4500.0 for t in charging
        )
        assert any(t["Op_State"] == "IDLE_HEIGHTENED" for t in charging)
        await wait_for(lambda: r.last().get("Event") == "idle", 2.0)


async def test_customer_override_mid_event_ends_curtailment(broker_url: str) -> None:
    async with rig(broker_url, speed=900, start=at("16:50")) as r:
        await r.until(at("17:00"))
        await r.shed_like([["shed", 0, 10800]])
        await r.until(at("17:40"))
        assert all(s.power_w == 0 for s in r.samples if s.t >= at("17:02"))
        r.sgd.press_override(True)
        pressed = r.clock.now()
        took = await wait_for(
            lambda: (
                r.last().get("Override") is True and r.last().get("Op_State") == "RUNNING_OPTED_OUT"
            ),
            3.0,
        )
        print(f"override reported {took:.2f} s after the button")
        assert r.last()["Event"] == "shed"  # the event runs on, the device opted out
        assert r.last()["Power_W"] == 4500.0
        assert r.ucm.device.override_msg is True
        await wait_for(lambda: r.sgd.override_acks == 1, 2.0)  # the UCM App-ACKed 11 01
        await r.until(pressed + 1200)
        heating = [s for s in r.samples if pressed + 60 <= s.t <= pressed + 900]
        assert heating and all(s.power_w == 4500 and s.state == 12 for s in heating)
        r.sgd.press_override(False)
        await wait_for(lambda: r.last().get("Override") is False, 3.0)
        await wait_for(lambda: r.last().get("Op_State") in CURTAILED, 3.0)


async def test_unsupported_and_bad_target_are_refused(broker_url: str) -> None:
    with pytest.raises(ValueError):
        UCMAgent("wh-x", broker_url)
    async with rig(broker_url, speed=60, start=at("09:00")) as r:
        replies = await r.ems.call(
            "wh-1", "edu.pdx.powerlab.demo", "EnergyMethod", [[["boil", 1, 10]]]
        )
        assert replies and not replies[0].ok and "unknown command" in (replies[0].message or "")
        # garbage on the line is NAKed by the link; the UCM keeps polling
        link = r.sgd.link
        assert link is not None
        await link.transport.write(b"\x08\x01\x00\x02\x01\x2b\x00\x00\x42\x99")
        await asyncio.sleep(0.6)
        polled = len(r.telemetry)
        await wait_for(lambda: len(r.telemetry) > polled + 2, 3.0)
        assert r.last()["Link"] == "up"
