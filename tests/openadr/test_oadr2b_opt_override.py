"""An operator's override reaches an openleadr VTN: ``Oadr2bAdapter.send_opt`` sends a new
``oadrCreatedEvent`` and later unchanged redeliveries are answered the same way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from oadr2b_vtn import RecordingSink, TestVtn

from sef.clock import RealClock
from sef.openadr import Oadr2bAdapter, Oadr2bConfig, OptDecision
from support import wait_for


async def test_send_opt_reaches_the_vtn_and_holds_for_redeliveries() -> None:
    vtn = await TestVtn().start()
    adapter = Oadr2bAdapter(
        Oadr2bConfig(vtn_url=vtn.url, ven_name="sef-ems", report_interval_s=1), clock=RealClock()
    )
    try:
        await adapter.start(RecordingSink())
        ven_id = adapter.status().ven_id
        assert ven_id is not None
        start = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
        vtn.add_simple(ven_id, "ev-1", 1, start, 600)
        await wait_for(lambda: [o.opt for o in vtn.opts_for("ev-1")] == ["optIn"], 5)

        await adapter.send_opt("ev-1", 0, OptDecision.opt_out("operator: feeder work"))
        assert vtn.opts_for("ev-1")[-1].opt == "optOut"
        # a second event makes the VTN send every event again: ev-1 is answered optOut now
        vtn.add_simple(ven_id, "ev-2", 2, start, 600)
        await wait_for(lambda: bool(vtn.opts_for("ev-2")), 5)
        await asyncio.sleep(1.5)
        answers = [o.opt for o in vtn.opts_for("ev-1")]
        assert len(answers) >= 3, answers  # optIn, the override, at least one redelivery
        assert set(answers[1:]) == {"optOut"}, answers
        assert adapter.status().errors == 0
    finally:
        await adapter.stop()
        await vtn.stop()


async def test_send_opt_before_registration_says_so() -> None:
    adapter = Oadr2bAdapter(
        Oadr2bConfig(vtn_url="http://127.0.0.1:9/x", ven_name="v"), clock=RealClock()
    )
    with pytest.raises(ConnectionError, match="not registered"):
        await adapter.send_opt("ev", 0, OptDecision.opt_out("x"))
