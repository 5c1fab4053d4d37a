"""What the UCM answers to requests it does not support (issue 13 §3), over a real pty.

The SGD is a byte-level script: it link-ACKs every frame the UCM sends, never answers, and
writes hand-made frames (check bytes by the notes' algorithm, ``cta_helpers.frame``). The
UCM must answer an unknown or unhandled Basic DR request with link ACK + App NAK ``04 01``,
an Intermediate request with link ACK + ``op1 (op2|0x80) 01``, an unknown data-link request
with link NAK ``15 07`` and an unsupported message type with ``15 06`` — and keep polling.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from cta_helpers import frame
from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from sef.interface import DEMO_INTERFACE
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_helpers import FAST
from ucm_standin import ACK, ScriptedSgd

TIMING = replace(FAST, response_timeout_s=0.4)


CASES = [
    # (what the SGD sends, the UCM's link answer, the UCM's application answer)
    ("08 01 00 02 42 00", ACK, "08 01 00 02 04 01"),  # unknown Basic opcode1 0x42
    ("08 01 00 02 01 2B", ACK, "08 01 00 02 04 01"),  # Shed: known, not a UCM's to obey
    ("08 01 00 02 06 3F", ACK, "08 01 00 02 04 01"),  # Power Level: known, not handled
    ("08 02 00 02 07 00", ACK, "08 02 00 03 07 80 01"),  # unknown Intermediate request
    ("08 02 00 02 06 00", ACK, "08 02 00 03 06 80 01"),  # Commodity Read: UCM has none
    ("08 02 00 04 0B 01 00 02", ACK, "08 02 00 03 0B 81 01"),  # set user preference (VB)
    ("08 03 00 02 30 00", bytes.fromhex("15 07"), None),  # unknown data-link request
    ("08 05 00 02 01 00", bytes.fromhex("15 06"), None),  # unsupported message type
    ("08 01 00 02 04 01", ACK, None),  # an App NAK is never answered
    ("08 02 00 03 07 80 01", ACK, None),  # nor is an Intermediate reply
    ("08 01 00 02 11 01", ACK, "08 01 00 02 03 11"),  # override: App ACK
]


async def test_ucm_answers_unsupported_requests_and_keeps_polling(broker_url: str) -> None:
    master = cta.open_pty()
    sgd = ScriptedSgd(master)
    ucm = UCMAgent(
        "wh-unsup",
        broker_url,
        serial_port=master.slave_path,
        poll_s=0.3,
        timing=TIMING,
        clock=ScaledClock(speed=60),
        keepalive_s=2,
    )
    await ucm.start()
    try:
        await wait_for(lambda: bool(sgd.frames) and ucm.status.healthy, 8.0)
        opened = sgd.frames[0][1]
        assert opened == bytes.fromhex("08 01 00 00 7E CD")  # MTSQ Basic DR: the start-up
        # the UCM's own traffic: MTSQs, queries, the idle End Shed, heartbeats
        polls = {f for _, f in sgd.frames} | {
            m.encode()
            for m in (
                cta.OperationalStateQuery(),
                cta.CommodityReadRequest(),
                cta.GetPresentTemperatureRequest(),
                cta.OutsideCommStatus(cta.CommStatus.CONNECTED),
                cta.GetInformationRequest(),
                cta.EndShed(),
            )
        }
        for request_hex, link_answer, answer_hex in CASES:
            answer = None if answer_hex is None else frame(answer_hex)
            since = time.monotonic()
            got = await sgd.inject(frame(request_hex), answer)
            assert got == link_answer, (request_hex, got)
            others = sgd.answers_since(since, polls)
            assert others == ([] if answer is None else [answer]), (request_hex, others)
        polled = sum(1 for t, f in sgd.frames if f == cta.OperationalStateQuery().encode())
        assert polled >= 3 and ucm.status.healthy
        telemetry = ucm.get_property(DEMO_INTERFACE, "Telemetry")
        assert telemetry["Link"].value == "up" and telemetry["Override"].value is True
        assert frame("08 01 00 02 03 11") == bytes.fromhex("08 01 00 02 03 11 E3 52")  # EPRI
        assert [f for _, f in sgd.frames].count(
            opened
        ) == 1  # one start-up: the port was never re-opened
    finally:
        await ucm.stop()
        await sgd.close()


@pytest.mark.parametrize("request_hex", ["08 01 00 02 42 00", "08 02 00 02 07 00"])
def test_unknown_opcodes_never_reach_ucm_answer(request_hex: str) -> None:
    """Unknown opcodes are answered by the link itself (the decoder refuses them)."""
    with pytest.raises(cta.CtaUnsupportedRequest):
        cta.decode(frame(request_hex))
