"""SunSpec definitions, codec and register image (no network)."""

from __future__ import annotations

import pytest

from sef.protocols.sunspec import SunSpecImage, SunSpecValueError, choose_sf, model_def
from sef.protocols.sunspec.mdef import PointValue, decode_point, decode_raw, encode_point


@pytest.mark.parametrize(("mid", "length"), [(1, 66), (802, 62), (124, 24), (713, 7)])
def test_model_lengths(mid: int, length: int) -> None:
    assert model_def(mid).length == length


def test_point_offsets_from_definitions() -> None:
    m = model_def(802)
    assert (m.point("SoC").offset, m.point("V").offset, m.point("W").offset) == (11, 34, 47)
    assert m.point("SoC").sf == "SoC_SF"
    assert m.point("SetOp").writable and not m.point("SoC").writable
    c = model_def(124)
    assert (c.point("StorCtl_Mod").offset, c.point("InWRte").offset) == (5, 13)


def test_image_layout_matches_reference() -> None:
    img = SunSpecImage([1, 802, 124, 713])
    assert img.registers[:2] == [0x5375, 0x6E53]
    assert img.model_address == {1: 40002, 802: 40070, 124: 40134, 713: 40160}
    assert img.slice(40169, 2) == [0xFFFF, 0]
    assert img.end == 40171
    assert img.address(802, "SoC") == 40081
    assert img.address(124, "InWRte") == 40147


def test_image_scaled_set_get() -> None:
    img = SunSpecImage([802])
    img.set(802, "SoC_SF", -2)
    img.set(802, "SoC", 53.23)
    assert img.get_raw(802, "SoC") == 5323
    assert img.get(802, "SoC") == 53.23
    assert img.get(802, "DoD") is None  # never set → not implemented


@pytest.mark.parametrize(
    ("ptype", "size", "value", "sf", "regs"),
    [
        ("int16", 1, -1.5, -1, [0xFFF1]),
        ("uint16", 1, 65534, 0, [0xFFFE]),
        ("int32", 2, -2, 0, [0xFFFF, 0xFFFE]),
        ("uint32", 2, 70000, 0, [0x0001, 0x1170]),
        ("string", 2, "SEF", 0, [0x5345, 0x4600]),
    ],
)
def test_codec_roundtrip(
    ptype: str, size: int, value: PointValue, sf: int, regs: list[int]
) -> None:
    from sef.protocols.sunspec.mdef import PointDef

    p = PointDef("X", 2, size, ptype, None if sf == 0 else "X_SF", "RW", "", False, {})
    assert encode_point(p, value, sf) == regs
    assert decode_point(p, regs, sf) == value


def test_codec_limits() -> None:
    p = model_def(124).point("InWRte")  # int16
    with pytest.raises(SunSpecValueError):
        encode_point(p, 400.0, -2)  # raw 40000 > 32767
    with pytest.raises(SunSpecValueError):
        encode_point(p, -327.68, -2)  # raw 0x8000 means "not implemented"
    assert encode_point(p, None) == [0x8000]
    assert decode_raw(p, [0x8000]) is None
    with pytest.raises(SunSpecValueError):
        encode_point(model_def(1).point("Mn"), "x" * 33)


def test_choose_sf() -> None:
    assert choose_sf(60000, min_sf=0) == 0
    assert choose_sf(146.48) == -2
    assert choose_sf(40000, signed=True, min_sf=0) == 1
