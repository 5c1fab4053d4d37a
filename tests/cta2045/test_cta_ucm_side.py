"""The UCM's answers to what an SGD starts, checked against captured bytes where we have them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sef.protocols import cta2045 as cta


def test_override_is_app_acked_with_the_epri_bytes() -> None:
    # App ACK of Customer Override as captured from EPRI's UCM library (test_cta_checksum)
    answer = cta.ucm_answer(cta.CustomerOverride(True), 0)
    assert answer is not None
    assert answer.encode() == bytes.fromhex("08 01 00 02 03 11 E3 52")


@pytest.mark.parametrize("message", [cta.OperationalStateResponse(2), cta.Sleep(), cta.Wake()])
def test_unsolicited_basic_messages_are_acked(message: cta.BasicMessage) -> None:
    assert cta.ucm_answer(message, 0) == cta.AppAck(message.OPCODE)


def test_utc_time_counts_from_the_cta_epoch() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
    answer = cta.ucm_answer(cta.GetUtcTimeRequest(), now)
    assert isinstance(answer, cta.UtcTimeReply)
    assert answer.utc_seconds == int(now - cta.CTA_EPOCH.timestamp())
    assert cta.ucm_answer(cta.GetUtcTimeRequest(), 0) == cta.UtcTimeReply(utc_seconds=0)


def test_unsupported_requests_are_refused_and_replies_not_answered() -> None:
    assert cta.ucm_answer(cta.Shed(0), 0) == cta.AppNak(cta.AppNakReason.OPCODE1_NOT_SUPPORTED)
    assert cta.ucm_answer(cta.AppAck(0x01), 0) is None
    answer = cta.ucm_answer(cta.CommodityReadRequest(), 0)
    assert answer == cta.IntermediateReply(0x06, 0x80, cta.ResponseCode.NOT_IMPLEMENTED)
    assert cta.ucm_answer(answer, 0) is None


def test_present_temperature_in_celsius() -> None:
    fahrenheit = cta.PresentTemperatureReply(units=cta.TemperatureUnits.FAHRENHEIT, temperature=140)
    assert fahrenheit.celsius == 60.0
    assert (
        cta.PresentTemperatureReply(units=cta.TemperatureUnits.CELSIUS, temperature=52).celsius
        == 52.0
    )
