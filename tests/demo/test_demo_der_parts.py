"""The demo's PV sites, EV sessions and energy sums (sef.demo._der), without processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sef.demo._der import EnergyMeter, ev_sessions, pv_sites
from sef.demo._fleet import fleet_identities
from sef.interface import DEMO_INTERFACE

DAY0 = 1_796_688_000.0  # 2026-12-08 00:00 UTC


def test_pv_sites_vary_a_little_and_are_the_same_every_run() -> None:
    sites = pv_sites(50)
    assert sites == pv_sites(50) and sites[:3] == pv_sites(3)
    assert [s.agent_id for s in sites[:2]] == ["pv-1", "pv-2"]
    assert all(4.0 <= s.dc_kwp <= 9.0 and s.ac_kw < s.dc_kwp for s in sites)
    assert all(20 <= s.tilt_deg <= 35 and 160 <= s.azimuth_deg <= 200 for s in sites)
    assert len({s.dc_kwp for s in sites}) > 10 and len({s.clouds for s in sites}) == 50
    args = sites[0].emulator_args()
    assert args[args.index("--lon") + 1] == "0" and args[args.index("--clouds") + 1] == "1"


def test_ev_sessions_are_the_generators_on_the_scenario_day() -> None:
    sessions = ev_sessions(20, DAY0)
    assert sessions[:2] == ev_sessions(2, DAY0)  # EV j's session does not depend on N
    for s in sessions:
        assert DAY0 + 14 * 3600 <= s.arrival_s <= DAY0 + 23.5 * 3600
        assert DAY0 + 29 * 3600 <= s.departure_s <= DAY0 + 34 * 3600  # 05:00-10:00 next day
        assert 0 < s.need_kwh <= s.battery_kwh and s.max_kw in (7.2, 11.0)
    first = sessions[0]
    args = first.emulator_args()
    assert float(args[args.index("--arrive-at") + 1]) == round(first.arrival_s)
    stay_h = float(args[args.index("--stay") + 1])
    assert abs(stay_h * 3600 - (first.departure_s - first.arrival_s)) < 1.0
    assert first.charge_point == "evse-1-cp"


def test_fleet_identities_have_their_groups() -> None:
    ids = dict(fleet_identities(1, 1, pv=2, evs=1))
    assert ids["pv-2"] == ("pv",) and ids["evse-1"] == ("evs",) and "meter-1" in ids
    assert "pv-1" not in dict(fleet_identities(1, 1))


@dataclass
class _Record:
    values: dict[str, Any]
    online: bool = True

    def prop(self, interface: str, name: str) -> dict[str, Any]:
        assert (interface, name) == (DEMO_INTERFACE, "Telemetry")
        return {k: ["d", v] for k, v in self.values.items()}


@dataclass
class _Registry:
    agents: dict[str, _Record] = field(default_factory=dict)

    def get(self, agent_id: str) -> _Record | None:
        return self.agents.get(agent_id)


@dataclass
class _Ems:
    registry: _Registry


@given(st.lists(st.floats(0.0, 20.0), min_size=1, max_size=30))
def test_energy_meter_sums_rises_and_counts_a_new_session_from_zero(steps: list[float]) -> None:
    registry = _Registry({"pv-1": _Record({"Energy_Produced_Wh": 1000.0})})
    meter = EnergyMeter(_Ems(registry), ["pv-1"], ["evse-1"])
    meter.sample()  # evse-1 not reported yet: nothing
    wh = 1000.0
    for gain in steps:
        wh += gain * 1000.0
        registry.agents["pv-1"].values["Energy_Produced_Wh"] = wh
        meter.sample()
    registry.agents["evse-1"] = _Record({"EV_Energy_kWh": 4.0})
    meter.sample()
    registry.agents["evse-1"].values["EV_Energy_kWh"] = 9.5
    meter.sample()
    registry.agents["evse-1"].values["EV_Energy_kWh"] = 0.5  # a new session
    summary = meter.summary()
    assert abs(summary["pv_energy_kwh"] - round(sum(steps), 3)) < 2e-3
    assert summary["ev_energy_kwh"] == 6.0  # 9.5 - 4.0, then 0.5 of the new session
    assert summary["pv_systems"] == 1 and summary["ev_chargers"] == 1
