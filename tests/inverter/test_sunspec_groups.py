"""SEF's layout of point-sized repeating groups (705 curves, 711 controls) and their
nested scale factors, checked against pysunspec2's own decoder on random counts/values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sunspec2.device import Model

from sef.protocols.sunspec import SunSpecImage, model_def


def _pysunspec_model(img: SunSpecImage, model_id: int) -> Any:
    """pysunspec2's Model decoded from the raw registers of ``model_id`` in ``img``."""
    start = img.model_address[model_id] - img.base
    length = img.model(model_id).length
    regs = img.registers[start : start + length + 2]
    model = Model(model_id, model_addr=0, model_len=length, data=b"".join(
        r.to_bytes(2, "big") for r in regs))  # fmt: skip
    assert not model.error_info, model.error_info
    return model


@settings(max_examples=60, deadline=None)
@given(
    n_crv=st.integers(1, 4),
    n_pt=st.integers(1, 8),
    v_sf=st.integers(-2, 0),
    data=st.data(),
)
def test_705_layout_matches_pysunspec2(n_crv: int, n_pt: int, v_sf: int, data: Any) -> None:
    img = SunSpecImage([1, 705], counts={705: {"NCrv": n_crv, "NPt": n_pt}})
    img.set_many(705, {"V_SF": v_sf, "DeptRef_SF": -1, "RspTms_SF": 0, "Ena": 1})
    step = 10.0**v_sf
    written: dict[tuple[int, int], tuple[float, float]] = {}
    for _ in range(5):
        c, k = data.draw(st.integers(0, n_crv - 1)), data.draw(st.integers(0, n_pt - 1))
        v = data.draw(st.integers(0, 6000)) * step
        q = data.draw(st.integers(-1000, 1000)) / 10.0
        img.set_many(705, {f"Crv[{c}].Pt[{k}].V": v, f"Crv[{c}].Pt[{k}].Var": q})
        written[(c, k)] = (v, q)
    model = _pysunspec_model(img, 705)
    assert model.NCrv.value == n_crv and model.NPt.value == n_pt and model.Ena.value == 1
    assert len(model.Crv) == n_crv and all(len(c.Pt) == n_pt for c in model.Crv)
    for (c, k), (v, q) in written.items():
        assert model.Crv[c].Pt[k].V.cvalue == pytest.approx(v, abs=step / 2)
        assert model.Crv[c].Pt[k].Var.cvalue == pytest.approx(q, abs=0.05)
        # and SEF reads back what it wrote, through the same (nested) scale factor
        assert img.get(705, f"Crv[{c}].Pt[{k}].V") == pytest.approx(v, abs=step / 2)


@settings(max_examples=30, deadline=None)
@given(n_ctl=st.integers(1, 3), db=st.integers(0, 200), k=st.integers(1, 500))
def test_711_layout_matches_pysunspec2(n_ctl: int, db: int, k: int) -> None:
    img = SunSpecImage([711], counts={711: {"NCtl": n_ctl}})
    img.set_many(711, {"Db_SF": -3, "K_SF": -3, "RspTms_SF": 0})
    last = n_ctl - 1
    img.set_many(711, {f"Ctl[{last}].DbOf": db / 1000, f"Ctl[{last}].KOf": k / 1000})
    model = _pysunspec_model(img, 711)
    assert len(model.Ctl) == n_ctl
    assert model.Ctl[last].DbOf.cvalue == pytest.approx(db / 1000)
    assert model.Ctl[last].KOf.cvalue == pytest.approx(k / 1000)


def test_without_counts_the_fixed_part_only() -> None:
    partial = model_def(705)
    assert not partial.complete and "Ena" in partial.points and "NCrv" in partial.points
    assert not any(name.startswith("Crv") for name in partial.points)
    with pytest.raises(ValueError, match="counts"):
        SunSpecImage([705])
