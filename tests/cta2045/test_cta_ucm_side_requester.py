"""UcmRequester (the UCM's requests: link ACK and answer bounded apart) and the Advanced
Load Up request the UCM builds, over a real pty pair."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from cta_helpers import FAST, RawPeer, frame, pty_pair
from sef.protocols import cta2045 as cta
from sef.protocols.cta2045._ucm_side import UcmRequester, advanced_load_up_request

UNITS = cta.AdvancedLoadUpUnits


async def _answer(peer: cta.Link, answers: dict[type[cta.Message], cta.Message]) -> None:
    async for message in peer:
        answer = answers.get(type(message))
        if answer is not None:
            await peer.send(answer)


async def _route(link: cta.Link, asker: UcmRequester) -> None:
    async for message in link:
        asker.offer(message)


async def test_answered_unanswered_and_unsupported() -> None:
    a, b = await pty_pair()
    answers: dict[type[cta.Message], cta.Message] = {
        cta.OperationalStateQuery: cta.OperationalStateResponse(2),
        cta.GetTemperatureOffsetRequest: cta.IntermediateReply(0x03, 0x82, 1),
    }
    async with cta.Link(a, timing=FAST, name="ucm") as link, cta.Link(b, timing=FAST) as sgd:
        serve = asyncio.create_task(_answer(sgd, answers))
        asker = UcmRequester(link, link_timeout_s=2.5)
        route = asyncio.create_task(_route(link, asker))
        assert asker.response_wait_s == FAST.response_timeout_s  # min(1.0, 2.5 - 1.0)
        assert await asker.request(cta.OperationalStateQuery()) == cta.OperationalStateResponse(2)
        started = time.monotonic()
        assert await asker.request(cta.Shed(0x2B)) is None  # link-ACKed, never answered
        waited = time.monotonic() - started
        assert asker.unanswered == 1 and 1.0 <= waited < 2.0, waited
        supported, reply = await asker.request_optional(cta.GetTemperatureOffsetRequest())
        assert supported is False and reply == cta.IntermediateReply(0x03, 0x82, 1)
        answers[cta.GetTemperatureOffsetRequest] = cta.TemperatureOffsetReply(0, 4, 1)
        supported, reply = await asker.request_optional(cta.GetTemperatureOffsetRequest())
        assert supported is True and reply == cta.TemperatureOffsetReply(0, 4, 1)
        # the Shed's late App ACK, arriving during the next request, is not taken for its answer
        late = asyncio.create_task(sgd.send(cta.AppAck(cta.Shed.OPCODE)))
        assert await asker.request(cta.OperationalStateQuery()) == cta.OperationalStateResponse(2)
        await late
        for task in (serve, route):
            task.cancel()


async def test_link_nak_07_means_unsupported() -> None:
    a, b = await pty_pair()
    raw = RawPeer(b)
    async with cta.Link(a, timing=FAST, name="ucm") as link:
        asker = UcmRequester(link, link_timeout_s=2.5)
        pending = asyncio.create_task(asker.request_optional(cta.GetAdvancedLoadUpRequest()))
        got, _ = await raw.read_exactly(8)
        assert got == frame("08 02 00 02 0C 00")
        await raw.write(bytes.fromhex("15 07"))
        assert await asyncio.wait_for(pending, 2.0) == (False, None)
    await b.close()


async def test_silent_sgd_is_a_link_timeout_after_the_floor() -> None:
    """No link ACK and nothing heard for longer than link_timeout_s: LinkTimeout after
    SEND_FLOOR_S (1 s), before the link's own three tries (1.6 s) are over."""
    a, b = await pty_pair()
    timing = replace(FAST, ack_timeout_s=0.2, retry_delay_s=0.5)
    async with cta.Link(a, timing=timing, name="ucm") as link:
        asker = UcmRequester(link, link_timeout_s=2.5)
        asker.last_heard -= 10.0  # the SGD has been silent for 10 s
        started = time.monotonic()
        with pytest.raises(cta.LinkTimeout, match="silent"):
            await asker.request(cta.OperationalStateQuery())
        took = time.monotonic() - started
        assert 0.95 <= took < 1.5, took
    await b.close()


@pytest.mark.parametrize(
    ("energy_wh", "duration_s", "expected"),
    [
        (2000.0, 1800.0, (30, 2000, UNITS.WH_1)),
        (500.0, 3600.0, (60, 500, UNITS.WH_1)),
        (65_534.0, 61.0, (2, 65_534, UNITS.WH_1)),  # minutes rounded up
        (65_535.0, 3600.0, (60, 6554, UNITS.WH_10)),  # 0xFFFF would mean "as much as possible"
        (18_000.0, 7200.0, (120, 18_000, UNITS.WH_1)),
        (1_000_000.0, 60.0, (1, 10_000, UNITS.WH_100)),
        (0.4, 60.0, (1, 1, UNITS.WH_1)),  # at least one count
        (1e9, 4e6, (0xFFFF, 0xFFFF, UNITS.WH_1000)),  # more than 65 534 kWh; 0xFFFF min
    ],
)
def test_advanced_load_up_request(
    energy_wh: float, duration_s: float, expected: tuple[int, int, int]
) -> None:
    request = advanced_load_up_request(energy_wh, duration_s)
    assert request == cta.SetAdvancedLoadUpRequest(*expected)


def test_advanced_load_up_request_encodes_like_the_spec_layout() -> None:
    # the notes' spec example layout (60 min, 5 x 100 Wh) with our finest-units choice
    request = advanced_load_up_request(500.0, 3600.0)
    assert request is not None
    assert request.encode() == frame("08 02 00 07 0C 00 00 3C 01 F4 00")
    assert advanced_load_up_request(0.0, 3600.0) is None
    assert advanced_load_up_request(100.0, 0.0) is None
