"""PV inverter emulator over Modbus TCP, scanned, read and written by pysunspec2."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sunspec2.modbus.client as ssc
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.clock import Clock, ScaledClock
from sef.emulators._inverter_image import MODEL_IDS, VV_DEFAULT_PCT, InverterSpec, build_image
from sef.emulators.inverter import InverterEmulator
from sef.models.pv import PVFleet
from sef.models.pv_irradiance import ClearSky
from sef.protocols.sunspec.mdef import decode_point, encode_point

NOON = pd.Timestamp("2026-06-21T19:00Z").timestamp()  # solar noon at the default site
NIGHT = pd.Timestamp("2026-06-21T08:00Z").timestamp()


def clock_at(unix_s: float) -> ScaledClock:
    """A real-speed clock that reads ``unix_s`` now."""
    return ScaledClock(speed=1.0, sim_start=unix_s, real_anchor=time.time())


@pytest.fixture
async def emu() -> AsyncIterator[InverterEmulator]:
    emulator = InverterEmulator(port=0, clock=clock_at(NOON), tick_s=0.2)
    await emulator.start()
    task = asyncio.create_task(emulator.run())
    yield emulator
    task.cancel()
    await emulator.stop()


def _pysunspec(emulator: InverterEmulator, work: Callable[[Any], Any]) -> Any:
    assert emulator.address is not None
    host, port = emulator.address
    dev = ssc.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=host, ipport=port, timeout=15)
    try:
        dev.scan()
        return work(dev)
    finally:
        dev.close()


async def test_pysunspec_scans_and_reads_every_model(emu: InverterEmulator) -> None:
    def work(dev: Any) -> dict[int, dict[str, Any]]:
        out = {}
        for mid in MODEL_IDS:
            model = dev.models[mid][0]
            model.read()
            out[mid] = model.get_dict(computed=True)
        return out

    models = await asyncio.to_thread(_pysunspec, emu, work)
    assert sorted(models) == sorted(MODEL_IDS)
    common, meas, cap, ctl, vv, fd = (models[m] for m in MODEL_IDS)
    assert common["Mn"] == "SEF" and common["SN"].startswith("SEF-PV-")
    # 701: clear June noon, 6 kWp on a 5 kW inverter: clipped at the rating
    assert meas["W"] == pytest.approx(5000, abs=2)
    assert meas["PF"] == pytest.approx(1.0) and meas["Var"] == 0
    assert meas["LNV"] == pytest.approx(240.0) and meas["Hz"] == pytest.approx(60.0)
    assert meas["A"] == pytest.approx(5000 / 240, abs=0.01)
    assert meas["InvSt"] == 3 and meas["ConnSt"] == 1 and meas["DERMode"] & 0b101 == 0b101
    assert meas["TotWhInj"] >= 0 and meas["TmpCab"] > meas["TmpAmb"] == pytest.approx(20.0)
    # 702: ratings
    assert cap["WMaxRtg"] == 5000 and cap["VAMaxRtg"] == 5000 and cap["VarMaxInjRtg"] == 2200
    assert cap["VNomRtg"] == 240 and cap["NorOpCatRtg"] == 1 and cap["CtrlModes"] == 0b111111
    assert cap["PFOvrExtRtg"] == pytest.approx(0.8)
    # 704: nothing enabled, limit at 100 %
    assert ctl["WMaxLimPctEna"] == 0 and ctl["WMaxLimPct"] == pytest.approx(100.0)
    assert ctl["PFWInj"]["PF"] == pytest.approx(1.0)
    # 705: two curves of four points, the IEEE 1547 category B default
    assert vv["NCrv"] == 2 and vv["NPt"] == 4 and vv["Ena"] == 0
    pts = [(p["V"], p["Var"]) for p in vv["Crv"][0]["Pt"]]
    assert pts == [pytest.approx(p) for p in VV_DEFAULT_PCT]
    assert vv["Crv"][0]["ReadOnly"] == 1 and vv["Crv"][1]["ReadOnly"] == 0
    # 711: readable
    assert fd["NCtl"] == 1 and fd["Ctl"][0]["DbOf"] == pytest.approx(0.036)
    assert fd["Ctl"][0]["KOf"] == pytest.approx(0.05)


async def test_704_limit_written_by_pysunspec_changes_the_output(emu: InverterEmulator) -> None:
    def work(dev: Any) -> tuple[float, float, int, int]:
        ctl = dev.models[704][0]
        ctl.WMaxLimPct.cvalue = 40.0
        ctl.WMaxLimPctEna.value = 1
        ctl.write()
        meas = dev.models[701][0]
        meas.read()
        return meas.W.cvalue, meas.ThrotPct.value, meas.ThrotSrc.value, meas.InvSt.value

    w, throt_pct, src, inv_st = await asyncio.to_thread(_pysunspec, emu, work)
    assert w == pytest.approx(2000, abs=1)  # 40 % of WMax 5000 W
    assert throt_pct == 60 and src & 1 and inv_st == 4  # MAX_W, THROTTLED
    assert emu.image.get_raw(704, "WMaxLimPct") == 4000  # WMaxLimPct_SF -2: exact scaling
    emu.image.set(704, "WMaxLimPctEna", 0)
    emu.advance()
    assert float(emu.model.p_kw[0]) == pytest.approx(5.0, abs=1e-3)


async def test_power_factor_and_kva(emu: InverterEmulator) -> None:
    def work(dev: Any) -> tuple[float, float, float]:
        ctl = dev.models[704][0]
        ctl.PFWInj.PF.cvalue = 0.9
        ctl.PFWInj.Ext.value = 1  # under-excited: absorb vars
        ctl.PFWInjEna.value = 1
        ctl.write()
        meas = dev.models[701][0]
        meas.read()
        return meas.W.cvalue, meas.Var.cvalue, meas.PF.cvalue

    w, var, pf = await asyncio.to_thread(_pysunspec, emu, work)
    assert w == pytest.approx(4500, abs=1)  # 5 kVA x 0.9
    assert var == pytest.approx(-4500 * math.tan(math.acos(0.9)), abs=1)
    assert pf == pytest.approx(0.9, abs=1e-3)


async def test_volt_var_adopt_curve_and_respond(emu: InverterEmulator) -> None:
    emu.grid_v = 240 * 1.05  # 105 % VNom: halfway down the absorbing slope

    def work(dev: Any) -> tuple[float, int]:
        vv = dev.models[705][0]
        crv = vv.Crv[1]
        crv.Pt[3].Var.cvalue = -30.0
        vv.write()
        vv.AdptCrvReq.value = 2
        vv.Ena.value = 1
        vv.write()
        vv.read()
        meas = dev.models[701][0]
        meas.read()
        return meas.Var.cvalue, vv.AdptCrvRslt.value

    var, result = await asyncio.to_thread(_pysunspec, emu, work)
    assert result == 1  # COMPLETED
    assert emu.image.get(705, "Crv[0].Pt[3].Var") == pytest.approx(-30.0)
    # halfway from 0 % at 102 % V to -30 % at 108 %: -15 % of VarMaxAbs 2200 var
    assert var == pytest.approx(-0.15 * 2200, abs=2)


async def test_bad_writes_are_refused(emu: InverterEmulator) -> None:
    def work(dev: Any) -> list[str]:
        errors = []
        ctl = dev.models[704][0]
        for point, value in (("WMaxLimPct", 150.0), ("WMaxLimPctEna", 7)):
            try:
                getattr(ctl, point).cvalue = value
                getattr(ctl, point).write()
            except Exception as exc:
                errors.append(f"{point}: {exc}")
        vv = dev.models[705][0]
        try:
            vv.Crv[0].Pt[0].V.cvalue = 90.0  # the active curve is read-only
            vv.Crv[0].Pt[0].V.write()
        except Exception as exc:
            errors.append(f"Crv[0]: {exc}")
        return errors

    errors = await asyncio.to_thread(_pysunspec, emu, work)
    assert len(errors) == 3, errors
    assert emu.image.get(704, "WMaxLimPct") == pytest.approx(100.0)
    assert emu.image.get(705, "Crv[0].Pt[0].V") == pytest.approx(92.0)


class ManualClock(Clock):
    """A clock the test moves by hand (wall and monotonic time together), s."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def spec(self) -> str:
        return "real"


def test_limit_reverts_after_its_time() -> None:
    clock = ManualClock(NOON)
    emulator = InverterEmulator(port=0, clock=clock)
    emulator.image.set_many(704, {"WMaxLimPctRvrtTms": 30, "WMaxLimPctRvrt": 100.0})
    emulator.image.set_many(704, {"WMaxLimPct": 10.0, "WMaxLimPctEna": 1})
    emulator.apply({(704, "WMaxLimPct"): 10.0})
    clock.t += 10.0
    emulator.advance()
    assert float(emulator.model.p_kw[0]) == pytest.approx(0.5, abs=1e-3)
    assert emulator.image.get(704, "WMaxLimPctRvrtRem") == 20
    clock.t += 25.0
    emulator.advance()
    assert emulator.image.get(704, "WMaxLimPctEna") == 0
    assert emulator.image.get(704, "WMaxLimPctRvrtRem") == 0
    assert float(emulator.model.p_kw[0]) == pytest.approx(5.0, abs=1e-3)
    # 30 s at 0.5 kW, then 5 s at 5 kW: the energy counter saw the revert at its instant
    assert emulator.wh_injected == pytest.approx((30 * 500 + 5 * 5000) / 3600, abs=0.5)


async def test_night_sleeps_and_fault_trips() -> None:
    night = InverterEmulator(port=0, clock=clock_at(NIGHT))
    assert night.image.get(701, "W") == 0 and night.image.get(701, "InvSt") == 1
    day = InverterEmulator(port=0, clock=clock_at(NOON))
    day.set_fault(True)
    assert day.image.get(701, "W") == 0 and day.image.get(701, "InvSt") == 6
    day.set_fault(False)
    assert day.image.get(701, "W") == pytest.approx(5000, abs=2)


def test_emulator_output_is_the_model() -> None:
    spec = InverterSpec(dc_kwp=3.0, ac_kw=5.0, kva=5.0)
    emulator = InverterEmulator(port=0, clock=clock_at(NOON), spec=spec)
    fleet = PVFleet(dc_kwp=3.0, ac_kw=5.0, source=ClearSky(spec.site))
    expected = fleet.available_kw(pd.DatetimeIndex([pd.Timestamp(NOON, unit="s", tz="UTC")]))
    assert emulator.image.get(701, "W") == pytest.approx(expected[0, 0] * 1000, abs=2)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["W", "Var", "PF", "A", "LNV", "Hz", "TotWhInj", "TmpCab"]),
    value=st.floats(-1e6, 1e12, allow_nan=False),
)
def test_701_codec_round_trip(name: str, value: float) -> None:
    """Every value the image accepts decodes to itself within half a scale step."""
    img = build_image(InverterSpec(), 1, "x")
    p = img.model(701).point(name)
    sf = img.sf_of(701, p)
    assert sf is not None
    try:
        regs = encode_point(p, value, sf)
    except ValueError:
        return  # out of range for the type: refused with a clear error, never wrapped
    back = decode_point(p, regs, sf)
    assert isinstance(back, int | float)
    assert abs(back - value) <= 0.5 * 10.0**sf + 1e-9 * abs(value)


def test_emulator_sources_clouds_and_csv(tmp_path: Path) -> None:
    cloudy = InverterEmulator(port=0, clock=clock_at(NOON), spec=InverterSpec(cloud_seed=3))
    w = cloudy.image.get(701, "W")
    assert isinstance(w, int) and 0 < w <= 5000
    csv = tmp_path / "irr.csv"
    csv.write_text("time,ghi,dni,dhi\n2026-06-21T18:00Z,300,0,300\n2026-06-21T20:00Z,300,0,300\n")
    dim = InverterEmulator(port=0, clock=clock_at(NOON), spec=InverterSpec(irradiance_csv=str(csv)))
    w = dim.image.get(701, "W")
    # 300 W/m² diffuse only on a 30° tilt: about 0.28 x 6 kWp, far below the clear-sky 5 kW
    assert isinstance(w, int) and 1000 < w < 2200
