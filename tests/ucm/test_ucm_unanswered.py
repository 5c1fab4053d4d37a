"""An SGD that link-ACKs the UCM's messages but never answers them (issue 13 §3).

The SGD is there (it ACKs), so the link stays up, the UCM keeps polling and never
re-opens the port; a DR command is *accepted, not confirmed*, sent again by the next two
polls, and then reported with its link-layer cause. Over a real pty; the stand-in SGD is
a bare :class:`cta.Link` (which link-ACKs every frame) that answers only what a test asks.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sef.clock import ScaledClock
from sef.ems import EMS
from sef.interface import DEMO_INTERFACE
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_standin import ack_only_rig, telemetry


async def test_ack_only_sgd_keeps_link_up_and_polling(broker_url: str) -> None:
    clock = ScaledClock(speed=60)
    ems = EMS(broker_url, "ems-ack-only", clock=clock)
    await ems.start()
    try:
        async with ack_only_rig(broker_url, "wh-ack-only", clock=clock) as (sgd, ucm, connects):
            await wait_for(lambda: telemetry(ucm).get("Link") == "up", 8.0)
            sent = time.monotonic()
            replies = await ems.call(
                "wh-ack-only", DEMO_INTERFACE, "EnergyMethod", [[["shed", 0, 3600]]]
            )
            took = time.monotonic() - sent
            # accepted, not confirmed: ok without `applied`, well before the EMS's 5 s timeout
            assert replies and replies[0].ok and replies[0].applied is None, replies
            assert took < 3.0, took
            assert telemetry(ucm).get("Unconfirmed") == "08 01 00 02 01 2b b5 68"
            await wait_for(lambda: "Command_Fault" in telemetry(ucm), 6.0)
            fault = telemetry(ucm)["Command_Fault"]
            print(f"reply after {took:.2f} s; fault: {fault}")
            assert "SGD link-ACKed but sent no application response after 3 tries" in fault
            assert fault.startswith("Shed (08 01 00 02 01 2b b5 68)")
            assert "Unconfirmed" not in telemetry(ucm)
            assert sgd.count(cta.Shed) == 3  # three tries, then no more

            window_start = time.monotonic()
            links: list[str] = []
            for _ in range(30):  # 6 s
                await asyncio.sleep(0.2)
                links.append(str(telemetry(ucm)["Link"]))
            polls = sgd.count(cta.OperationalStateQuery, since=window_start)
            print(f"ack-only SGD: {polls} state polls in 6 s, {len(connects)} port open(s)")
            assert polls >= 3  # about one poll cycle per 1.4 s with 0.4 s answer waits
            assert len(connects) == 1  # never re-opened
            assert set(links) == {"up"}
            last = telemetry(ucm)
            assert "Link_Fault" not in last and last["Unanswered"] >= polls
    finally:
        await ems.stop()


async def test_late_answer_confirms_and_answered_polls_update_state(broker_url: str) -> None:
    """The SGD answers state queries but App-ACKs a command only after the UCM's wait:
    the late App ACK confirms the command (no further tries, no fault)."""

    answers: dict[type[cta.Message], Any] = {
        cta.OperationalStateQuery: lambda m: cta.OperationalStateResponse(4)
    }
    async with ack_only_rig(broker_url, "wh-late", answers) as (sgd, ucm, connects):
        await wait_for(lambda: telemetry(ucm).get("Op_State") == "IDLE_CURTAILED", 8.0)
        sgd.answers[cta.LoadUp] = lambda m: cta.AppAck(cta.LoadUp.OPCODE)  # in time
        outcome = await ucm.energy_method([("charge", 0, 1800)])
        assert outcome.applied is True
        assert ucm.device.unconfirmed is None and sgd.count(cta.LoadUp) == 1
        del sgd.answers[cta.LoadUp]
        outcome = await ucm.energy_method([("shed", 0, 1800)])
        assert outcome.applied is None and isinstance(ucm.device.unconfirmed, cta.Shed)
        await sgd.link.send(cta.AppAck(cta.Shed.OPCODE))  # the late answer
        await wait_for(lambda: ucm.device.unconfirmed is None, 2.0)
        await asyncio.sleep(1.5)  # two more poll cycles: no further try
        assert sgd.count(cta.Shed) == 1
        assert "Command_Fault" not in telemetry(ucm) and len(connects) == 1
