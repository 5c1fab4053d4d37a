"""The operator API over the real bridge: a DrBridge on an EMS with a battery (BIS agent ⇄
SunSpec emulator over Modbus TCP, real Mosquitto), served by ``install_operator`` on the
EMS API (uvicorn, tokens per role). A SIMPLE event shows in ``GET /openadr/events``; an
operator's opt-out through the API stops the battery; a policy set through the API opts
the next event out; an invalid policy is 422 and changes nothing."""

from __future__ import annotations

import httpx
import pytest
from dr_stack import dr_stack

from api_stack import make_tokens
from sef.ems._dr_board import set_dr_board
from sef.ems.api import serve_api
from sef.openadr import (
    DrBridge,
    DrEvent,
    DrInterval,
    DrSignal,
    EventStatus,
    Opt,
    install_operator,
)
from support import wait_for


def simple(event_id: str, start_s: float, duration_s: float, level: float = 2.0) -> DrEvent:
    """A SIMPLE event of program ``prog-1`` for the whole fleet."""
    signal = DrSignal("SIMPLE", "level", None, (DrInterval(start_s, duration_s, level),))
    return DrEvent("oadr2b", event_id, 0, "prog-1", EventStatus.FAR, start_s, duration_s,
                   (signal,))  # fmt: skip


async def test_events_opt_out_and_policy_through_the_api(broker_url: str) -> None:
    async with dr_stack(broker_url, heaters=0, speed=60.0) as stack:
        bridge = DrBridge(stack.ems)
        board = install_operator(stack.ems, bridge)
        auth, tokens = make_tokens(None)
        server = await serve_api(stack.ems, "127.0.0.1", 0, auth=auth)

        def client(role: str) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {tokens[role]}"}
            return httpx.AsyncClient(base_url=server.url, timeout=10.0, headers=headers)

        try:
            now = stack.clock.now()
            assert (await bridge.on_event(simple("ev-1", now, 1800.0))).opt is Opt.IN
            await wait_for(lambda: stack.battery_kw("bat-1") < 0, 5.0)  # discharging
            async with client("viewer") as viewer:
                status = (await viewer.get("/openadr/status")).json()
                assert status["configured"] is True and status["adapters"] == []
                assert status["policy"]["blocked_programs"] == []
                (row,) = (await viewer.get("/openadr/events")).json()
                assert (row["event_id"], row["opt"], row["signal"]) == ("ev-1", "optIn", "SIMPLE")
                assert row["status"] in ("scheduled", "active") and row["agents"] == 1
            async with client("operator") as olivia:
                out = await olivia.post(
                    "/openadr/events/oadr2b/ev-1/opt",
                    json={"opt": "optOut", "reason": "feeder work"},
                )
                assert out.status_code == 200, out.text
                assert (out.json()["opt"], out.json()["status"]) == ("optOut", "opted_out")
                assert out.json()["reason"] == "operator: olivia: feeder work"
                await wait_for(lambda: stack.battery_kw("bat-1") == 0.0, 5.0)  # restored

                bad = await olivia.put("/openadr/policy", json={"no_such_rule": 1})
                assert bad.status_code == 422
                assert bad.json()["error"].startswith("policy: unknown key 'no_such_rule'")
                assert bridge.policy_json()["blocked_programs"] == []
                put = await olivia.put("/openadr/policy", json={"blocked_programs": ["prog-1"]})
                assert put.status_code == 200, put.text
                assert put.json()["blocked_programs"] == ["prog-1"]
            blocked = await bridge.on_event(simple("ev-2", stack.clock.now(), 600.0))
            assert blocked.opt is Opt.OUT and "prog-1" in blocked.reason
            async with client("viewer") as viewer:
                rows = (await viewer.get("/openadr/events", params={"status": "opted_out"})).json()
                assert [r["event_id"] for r in rows] == ["ev-2", "ev-1"]
                one = (await viewer.get("/openadr/events/oadr2b/ev-2")).json()
                assert one["opt"] == "optOut" and len(one["versions"]) == 1
            assert stack.battery_kw("bat-1") == pytest.approx(0.0)  # nothing sent for ev-2
        finally:
            await server.stop()
            await board.stop()
            set_dr_board(stack.ems, None)
            await bridge.close()
