"""OpenADR 3 end to end on loopback: the test VTN → :class:`Oadr3Adapter` → :class:`DrBridge`
over a real EMS, Mosquitto and agents (battery over Modbus TCP, water heater over a pty):
an IMPORT_CAPACITY_LIMIT event becomes limit windows on the EMS target board, the VTN gets
USAGE reports with the fleet's telemetry, and a deletion at the VTN removes the windows."""

from __future__ import annotations

from typing import Any

from dr_stack import CallLog, dr_stack
from oa3_vtn import VEN_CLIENT, Oa3Vtn, limit_event

from sef.ems._target_board import target_board
from sef.openadr import DrBridge, Oadr3Config, Opt, TelemetrySample
from sef.openadr._oadr3 import Oadr3Adapter
from support import wait_for


def _config(vtn: Oa3Vtn, ven_name: str) -> Oadr3Config:
    return Oadr3Config(
        vtn_url=vtn.url,
        ven_name=ven_name,
        client_id=VEN_CLIENT[0],
        client_secret=VEN_CLIENT[1],
        poll_interval_s=6.0,  # clock s: 0.1 real s at 60x
        report_interval_s=30.0,
    )


async def test_capacity_limit_reaches_the_target_board_and_usage_the_vtn(broker_url: str) -> None:
    async with dr_stack(broker_url, speed=60.0) as stack:
        vtn = await Oa3Vtn(stack.clock.now).start()  # stamps on the EMS clock (decision 1)
        bridge = DrBridge(stack.ems, rng_seed=5, live_control=True)
        without = DrBridge(stack.ems)  # no live controller: it must opt out
        calls = CallLog(stack.ems)
        try:
            program = await vtn.create("/programs", {"programName": "capacity"})
            start_s = float(int(stack.clock.now()) + 60)
            body = limit_event(program["id"], start_s, targets=["feeder-1"])
            created = await vtn.create("/events", body)
            seen: list[TelemetrySample] = []
            telemetry = bridge.telemetry

            def spy(group: str) -> TelemetrySample | None:
                sample = telemetry(group)
                if sample is not None:
                    seen.append(sample)
                return sample

            bridge.telemetry = spy  # type: ignore[method-assign]
            adapter = Oadr3Adapter(_config(vtn, "sef-ems"), clock=stack.clock)
            await bridge.attach(adapter)
            other = Oadr3Adapter(_config(vtn, "sef-ems-2"), clock=stack.clock)
            await without.attach(other)

            key = ("oadr3", created["id"], 0)
            assert adapter.decisions()[created["id"]].decision.opt is Opt.IN
            refused = other.decisions()[created["id"]].decision
            assert refused.opt is Opt.OUT and "live controller" in refused.reason
            offset = bridge.offset_s(key, 300.0)
            assert 0.0 <= offset <= 300.0
            board = target_board(stack.ems)
            begin = start_s + offset
            await wait_for(lambda: board.limit_at(begin + 450.0) == 12.5, 5.0)
            assert board.limit_at(begin + 1350.0) == 10.0
            assert board.limit_at(begin + 3600.0) == 14.0
            assert board.limit_at(begin - 10.0) is None
            assert board.limit_at(begin + 5410.0) is None

            await wait_for(lambda: adapter.reports_sent >= 2, 10.0)
            reports: list[dict[str, Any]] = list(vtn.reports.values())
            assert {r["clientName"] for r in reports} == {"sef-ems"}  # none for the opt-out
            resource = reports[0]["resources"][0]
            assert resource["resourceName"] == "feeder-1"
            (value,) = resource["intervals"][0]["payloads"][0]["values"]
            assert value in [s.power_kw for s in seen if s.group == "feeder-1"]
            assert seen[0].members == 2  # the battery and the water heater
            assert vtn.errors == []

            assert (await vtn.bl("DELETE", f"/events/{created['id']}")).status_code == 200
            await wait_for(lambda: board.limit_at(begin + 450.0) is None, 5.0)
            record = bridge.history.get(key)
            assert record is not None and record.status == "cancelled"
            assert calls.calls == []  # a limit is for the live controller: no device call
        finally:
            await bridge.close()
            await without.close()
            await vtn.stop()
