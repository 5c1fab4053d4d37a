"""An SGD that freezes between its link ACK and its answer is link loss ≈ 2.5 s after that
ACK (the 1.5 s answer wait, then at most 1 s for the next link ACK), with the CTA-2045
timing, over a real pty: the SGD is a byte-level script that ACKs and never answers."""

from __future__ import annotations

import time

from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_standin import ScriptedSgd


async def test_sgd_frozen_after_its_ack_is_link_loss_within_2_5_s(broker_url: str) -> None:
    master = cta.open_pty()
    sgd = ScriptedSgd(master)
    ucm = UCMAgent(
        "wh-frozen", broker_url, serial_port=master.slave_path, poll_s=1.0, clock=ScaledClock()
    )
    assert ucm.device.link_timeout_s == 2.5
    sgd.mute_after = cta.OperationalStateQuery  # the first poll's query is the last ACKed
    await ucm.start()
    try:
        # start-up and the first poll: seven unanswered 1.5 s waits before the query
        await wait_for(lambda: sgd.muted_at is not None, 15.0)
        await wait_for(lambda: bool(ucm.status.fault), 4.0)
        muted_at = sgd.muted_at
        assert muted_at is not None
        detected = time.monotonic() - muted_at
        print(f"SGD frozen after its ACK: link loss {detected:.2f} s later ({ucm.status.fault})")
        assert 1.5 <= detected < 3.0, detected
        assert "LinkTimeout" in ucm.status.fault
    finally:
        await ucm.stop()
        await sgd.close()
