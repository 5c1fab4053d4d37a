"""The PV inverter emulator's SunSpec image: chain, scale factors and initial values.

Chain at protocol address 40000: ``SunS``, 1 (common), 701 (DER AC measurement), 702 (DER
capacity), 704 (DER AC controls), 705 (volt-var, 2 curves × 4 points), 711 (frequency
droop, 1 control), end marker. Scale factors are fixed at start-up so every value of
the ratings fits its 16-bit register; see ``docs/inverter.md`` for the map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sef
from sef.models.pv_irradiance import Site
from sef.protocols.sunspec import SunSpecImage, choose_sf

__all__ = [
    "CTRL_MODES",
    "F_NOM_HZ",
    "MODEL_IDS",
    "REPEAT_COUNTS",
    "VV_DEFAULT_PCT",
    "InverterSpec",
    "build_image",
]

#: Models served, in chain order.
MODEL_IDS: tuple[int, ...] = (1, 701, 702, 704, 705, 711)
#: Sizes of the point-sized repeating groups.
REPEAT_COUNTS: dict[int, dict[str, int]] = {705: {"NCrv": 2, "NPt": 4}, 711: {"NCtl": 1}}
#: Nominal grid frequency (Hz).
F_NOM_HZ = 60.0
#: IEEE 1547-2018 category B default volt-var curve: (V in % of VNom, Q in % of VarMax).
VV_DEFAULT_PCT: tuple[tuple[float, float], ...] = ((92.0, 44.0), (98.0, 0.0), (102.0, 0.0),
                                                   (108.0, -44.0))  # fmt: skip
#: 702 CtrlModes bits: MAX_W, FIXED_W, FIXED_VAR, FIXED_PF, VOLT_VAR, FREQ_WATT.
CTRL_MODES = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5)


@dataclass(frozen=True)
class InverterSpec:
    """What the emulated PV system is.

    Attributes:
        dc_kwp: PV array DC rating (kWp at STC).
        ac_kw: inverter active-power rating (kW).
        kva: inverter apparent-power rating (kVA), >= ``ac_kw``.
        var_max_pct: reactive capability, injection and absorption (% of ``kva``);
            IEEE 1547 category B asks for 44 %.
        v_nom: nominal AC voltage (V), single phase.
        pf_min: lowest power factor the inverter accepts (both excitations).
        tilt_deg, azimuth_deg: array orientation (degrees; azimuth 180 = south).
        site: location for the sun and clear sky.
        cloud_seed: seed of the cloudiness process; None = clear sky.
        irradiance_csv: a measured-irradiance CSV path (overrides clear sky).
        temp_air_c: air temperature (°C) when the CSV has none.
    """

    dc_kwp: float = 6.0
    ac_kw: float = 5.0
    kva: float = 5.0
    var_max_pct: float = 44.0
    v_nom: float = 240.0
    pf_min: float = 0.8
    tilt_deg: float = 30.0
    azimuth_deg: float = 180.0
    site: Site = field(default_factory=Site)
    cloud_seed: int | None = None
    irradiance_csv: str | None = None
    temp_air_c: float = 20.0

    def __post_init__(self) -> None:
        if not (0 < self.ac_kw <= self.kva and self.dc_kwp > 0 and self.v_nom > 0):
            raise ValueError("need dc_kwp > 0, 0 < ac_kw <= kva and v_nom > 0")
        if not (0 < self.pf_min <= 1 and 0 <= self.var_max_pct <= 100):
            raise ValueError("need 0 < pf_min <= 1 and 0 <= var_max_pct <= 100")

    @property
    def var_max(self) -> float:
        """Reactive-power capability (var)."""
        return self.kva * 1000.0 * self.var_max_pct / 100.0


def build_image(spec: InverterSpec, unit: int, serial: str) -> SunSpecImage:
    """The register image with ratings, scale factors and the initial controls set."""
    img = SunSpecImage(MODEL_IDS, counts=REPEAT_COUNTS)
    w, va, var = spec.ac_kw * 1000.0, spec.kva * 1000.0, spec.var_max
    amax = va / spec.v_nom
    md = f"SEF-PV-{spec.dc_kwp:g}kWp-{spec.ac_kw:g}kW"
    img.set_many(1, {"Mn": "SEF", "Md": md, "Opt": "emulator", "Vr": sef.__version__,
                     "SN": serial, "DA": unit})  # fmt: skip
    w_sf = choose_sf(va * 1.1, signed=True, min_sf=0)
    v_sf = choose_sf(spec.v_nom * 1.3, min_sf=-1)
    a_sf = choose_sf(amax * 1.3, signed=True, min_sf=-2)
    img.set_many(701, {
        "A_SF": a_sf, "V_SF": v_sf, "Hz_SF": -3, "W_SF": w_sf, "PF_SF": -3, "VA_SF": w_sf,
        "Var_SF": w_sf, "TotWh_SF": 0, "TotVarh_SF": 0, "Tmp_SF": -1,
        "ACType": 0, "St": 1, "InvSt": 3, "ConnSt": 1, "Alrm": 0, "DERMode": 1,
        "TotWhInj": 0, "TotWhAbs": 0, "TotVarhInj": 0, "TotVarhAbs": 0, "MnAlrmInfo": "",
    })  # fmt: skip
    img.set_many(702, {
        "W_SF": choose_sf(va, min_sf=0), "PF_SF": -3, "VA_SF": choose_sf(va, min_sf=0),
        "Var_SF": choose_sf(va, min_sf=0), "V_SF": v_sf, "A_SF": choose_sf(amax, min_sf=-2),
        "S_SF": 0,
    })  # fmt: skip
    img.set_many(702, {
        "WMaxRtg": w, "WOvrExtRtg": w, "WOvrExtRtgPF": spec.pf_min, "WUndExtRtg": w,
        "WUndExtRtgPF": spec.pf_min, "VAMaxRtg": va, "VarMaxInjRtg": var, "VarMaxAbsRtg": var,
        "VNomRtg": spec.v_nom, "VMaxRtg": 1.1 * spec.v_nom, "VMinRtg": 0.88 * spec.v_nom,
        "AMaxRtg": amax, "PFOvrExtRtg": spec.pf_min, "PFUndExtRtg": spec.pf_min,
        "NorOpCatRtg": 1, "AbnOpCatRtg": 1, "CtrlModes": CTRL_MODES, "IntIslandCatRtg": 0,
        "WMax": w, "WMaxOvrExt": w, "WOvrExtPF": spec.pf_min, "WMaxUndExt": w,
        "WUndExtPF": spec.pf_min, "VAMax": va, "VarMaxInj": var, "VarMaxAbs": var,
        "VNom": spec.v_nom, "VMax": 1.1 * spec.v_nom, "VMin": 0.88 * spec.v_nom, "AMax": amax,
        "PFOvrExt": spec.pf_min, "PFUndExt": spec.pf_min, "IntIslandCat": 0,
    })  # fmt: skip
    img.set_many(704, {
        "PF_SF": -3, "WMaxLimPct_SF": -2, "WSet_SF": 0, "WSetPct_SF": -2, "VarSet_SF": 0,
        "VarSetPct_SF": -2,
        "PFWInjEna": 0, "PFWInjEnaRvrt": 0, "PFWInjRvrtTms": 0, "PFWInjRvrtRem": 0,
        "PFWAbsEna": 0, "PFWAbsEnaRvrt": 0, "PFWAbsRvrtTms": 0, "PFWAbsRvrtRem": 0,
        "WMaxLimPctEna": 0, "WMaxLimPct": 100.0, "WMaxLimPctRvrt": 100.0,
        "WMaxLimPctEnaRvrt": 0, "WMaxLimPctRvrtTms": 0, "WMaxLimPctRvrtRem": 0,
        "WSetEna": 0, "WSetMod": 1, "WSet": w, "WSetRvrt": w, "WSetPct": 100.0,
        "WSetPctRvrt": 100.0, "WSetEnaRvrt": 0, "WSetRvrtTms": 0, "WSetRvrtRem": 0,
        "VarSetEna": 0, "VarSetMod": 4, "VarSetPri": 1, "VarSet": 0, "VarSetRvrt": 0,
        "VarSetPct": 0.0, "VarSetPctRvrt": 0.0, "VarSetEnaRvrt": 0, "VarSetRvrtTms": 0,
        "VarSetRvrtRem": 0, "WRmp": 0, "WRmpRef": 1, "VarRmp": 0, "AntiIslEna": 1,
        "PFWInj.PF": 1.0, "PFWInj.Ext": 1, "PFWInjRvrt.PF": 1.0, "PFWInjRvrt.Ext": 1,
        "PFWAbs.PF": 1.0, "PFWAbs.Ext": 1, "PFWAbsRvrt.PF": 1.0, "PFWAbsRvrt.Ext": 1,
    })  # fmt: skip
    img.set_many(705, {"V_SF": -1, "DeptRef_SF": -1, "RspTms_SF": 0, "Ena": 0,
                       "AdptCrvReq": 0, "AdptCrvRslt": 1, "RvrtTms": 0, "RvrtRem": 0,
                       "RvrtCrv": 0})  # fmt: skip
    for c in range(REPEAT_COUNTS[705]["NCrv"]):
        img.set_many(705, {
            f"Crv[{c}].ActPt": len(VV_DEFAULT_PCT), f"Crv[{c}].DeptRef": 1,
            f"Crv[{c}].Pri": 1, f"Crv[{c}].VRef": 100.0, f"Crv[{c}].VRefAuto": 100.0,
            f"Crv[{c}].VRefAutoEna": 0, f"Crv[{c}].VRefAutoTms": 0, f"Crv[{c}].RspTms": 5,
            f"Crv[{c}].ReadOnly": 1 if c == 0 else 0,
        })  # fmt: skip
        for k, (v_pct, q_pct) in enumerate(VV_DEFAULT_PCT):
            img.set_many(705, {f"Crv[{c}].Pt[{k}].V": v_pct, f"Crv[{c}].Pt[{k}].Var": q_pct})
    img.set_many(711, {"Db_SF": -3, "K_SF": -3, "RspTms_SF": 0, "Ena": 0, "AdptCtlReq": 0,
                       "AdptCtlRslt": 1, "RvrtTms": 0, "RvrtRem": 0, "RvrtCtl": 0,
                       "Ctl[0].DbOf": 0.036, "Ctl[0].DbUf": 0.036, "Ctl[0].KOf": 0.05,
                       "Ctl[0].KUf": 0.05, "Ctl[0].RspTms": 5, "Ctl[0].PMin": 0,
                       "Ctl[0].ReadOnly": 0})  # fmt: skip
    return img
