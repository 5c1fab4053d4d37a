"""The firmware date's month byte is the calendar month (issue 13 §3), checked against the
byte-exact DeviceInfoResponse frame of EPRI's C++ library unit test (an independent vector
with its own check bytes 5B F1)."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from cta_helpers import frame
from sef.protocols import cta2045 as cta

# EPRI CTA-2045-UCM-CPP-Library, test/test/unit/CEA2045MesssageUnitTest.cpp, "DeviceInfoResponse"
EPRI_DEVICE_INFO = bytes.fromhex(
    "08 02 00 35 01 81 00 31 30 44 55 00 00 55 66 20 21 22 23 00"
    + " 30" * 32
    + " 01 01 01 00 00 5B F1"
)


def test_epri_device_info_frame_month_is_the_byte() -> None:
    assert len(EPRI_DEVICE_INFO) == 59
    assert frame(EPRI_DEVICE_INFO[:-2].hex(" ")) == EPRI_DEVICE_INFO  # check bytes agree
    msg = cta.decode(EPRI_DEVICE_INFO)
    assert isinstance(msg, cta.GetInformationReply)
    assert msg.firmware == cta.FirmwareInfo(2001, 1, 1, 0, 0)
    assert msg.firmware.date == date(2001, 1, 1)
    assert msg.model == "0" * 16 and msg.serial == "0" * 16
    assert msg.encode() == EPRI_DEVICE_INFO  # encode and decode agree, byte for byte


def test_intwine_ucm_date_and_a_zero_based_sender() -> None:
    # Intwine's UCM firmware fills its date as year 16, month 9, day 21 (no -1 conversion)
    assert cta.FirmwareInfo(2016, 9, 21).encode() == bytes([16, 9, 21, 0, 0])
    # a 0-based sender's January (month byte 0) still decodes, just not as a date
    zero = cta.FirmwareInfo(2016, 0, 21)
    assert zero.date is None


@given(st.dates(date(2000, 1, 1), date(2255, 12, 31)), st.integers(0, 255), st.integers(0, 255))
def test_firmware_date_round_trips_with_month_unchanged(day: date, major: int, minor: int) -> None:
    info = cta.FirmwareInfo(day.year, day.month, day.day, major, minor)
    wire = info.encode()
    assert wire[1] == day.month
    reply = cta.GetInformationReply(model="m", serial="s", firmware=info)
    decoded = cta.decode(reply.encode())
    assert isinstance(decoded, cta.GetInformationReply) and decoded.firmware is not None
    assert decoded.firmware.date == day
