"""Checksum against the worked example and the EPRI unit-test vectors (reference notes §4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cta_helpers import independent_check_bytes
from sef.protocols.cta2045 import checksum, verify_checksum

VALID = [
    "08 01 00 02 01 2B B5 68",  # worked example, Shed n = 0x2B
    "08 01 00 02 03 0E E9 4F",
    "08 01 00 02 03 0B EF 4C",
    "08 01 00 02 03 07 F7 48",
    "08 01 00 02 03 01 04 42",
    "08 01 00 02 01 01 0A 3E",
    "08 01 00 00 7E CD",  # MTSQ
    "08 03 00 02 18 00 BA 75",  # max payload query
    "08 02 00 02 01 01 04 43",  # GetInformation request
    "08 32 00 02 01 01 E2 34",  # unknown type, correct checksum
    "08 01 00 02 03 11 E3 52",  # App ACK of Customer Override (EPRI, live)
    "08 02 00 07 0C 00 00 3C 00 05 02 A9 4B",  # Advanced Load Up examples (notes, §7.1)
    "08 02 00 08 0C 00 00 1E 00 01 03 00 56 BE",
]


def sums_over(data: bytes) -> tuple[int, int]:
    s1, s2 = 0xAA, 0
    for b in data:
        s1 = (s1 + b) % 255
        s2 = (s2 + s1) % 255
    return s1, s2


def test_worked_example_step_by_step() -> None:
    data = bytes.fromhex("08 01 00 02 01 2B")
    expected_steps = [(178, 178), (179, 102), (179, 26), (181, 207), (182, 134), (225, 104)]
    for i, step in enumerate(expected_steps):
        assert sums_over(data[: i + 1]) == step
    assert checksum(data) == bytes.fromhex("B5 68")


@pytest.mark.parametrize("vector", VALID)
def test_valid_vectors(vector: str) -> None:
    raw = bytes.fromhex(vector)
    assert checksum(raw[:-2]) == raw[-2:]
    assert verify_checksum(raw)
    # Receiver method 2: sums over the whole frame, check bytes included, are both 0.
    assert sums_over(raw) == (0, 0)


def test_negative_vector() -> None:
    assert not verify_checksum(bytes.fromhex("08 01 00 02 03 02 04 42"))
    assert sums_over(bytes.fromhex("08 01 00 02 03 02 04 42")) != (0, 0)


def test_too_short() -> None:
    assert not verify_checksum(b"\x01")


@given(st.binary(max_size=300))
def test_check_bytes_match_notes_and_never_zero(data: bytes) -> None:
    ck = checksum(data)
    assert ck == independent_check_bytes(data)
    assert 1 <= ck[0] <= 255 and 1 <= ck[1] <= 255
    assert verify_checksum(data + ck)
