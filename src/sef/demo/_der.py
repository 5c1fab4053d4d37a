"""The demo's PV inverters and EV chargers: who they are, how they start, what they did.

PV system ``i`` (``pv-i``): ``sef emulate inverter`` (SunSpec 700-series over Modbus TCP)
+ ``sef inverter``. Sites vary a little (:func:`pv_sites`: 4-9 kWp, DC/AC ratio 1.15,
tilt 20-35°, azimuth 160-200°, own cloud seed), all at 40° N, 0° E so that solar noon
is near 12:00 UTC: the demo's clock and its base-load profile run in UTC.

EV charger ``j`` (``evse-j``): ``sef evse`` (the OCPP central system) listening for its
charge point ``evse-j-cp``, + ``sef emulate evse`` (an OCPP 1.6J charge point) charging
one session of the home-charging generator (:func:`sef.models.ev_sessions.home_sessions`,
seed ``j``, on the scenario's day: plug-in 14:00-23:30, leave next morning). The session
goes to the emulator through its options (``--arrive-at`` as a clock time, ``--stay``,
``--need``, ``--battery``, ``--ev-max-kw``, ``--soc``), so its times hold however long
the emulator takes to start.

Both report their AC power to the feeder meter's CT input (+ = consuming: PV < 0). The
control app does not steer them (it controls batteries and water heaters): they are
measured load, seen in the feeder's net power.

Security of the OCPP link (secure demo): OCPP Security Profile 3 *and* 2. The listener
is ``wss://`` with a server certificate ``evse-j-ocpp`` from the demo's CA (role
gateway, SAN 127.0.0.1/localhost, no home: no rights on the broker); the charge point
presents ``evse-j-cp`` (role gateway, no home) whose common name must be its id, and a
random per-charger Basic-auth password (``OUT/pki/ocpp-passwords``, mode 0600; the
emulator gets it in ``SEF_OCPP_PASSWORD``, not on its command line).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sef.models.ev_sessions import home_sessions

__all__ = [
    "EV_GROUP",
    "PV_GROUP",
    "EVSession",
    "EnergyMeter",
    "OcppCredentials",
    "PVSite",
    "counters",
    "ev_sessions",
    "pv_sites",
    "wait_for_agents",
]

PV_GROUP = "pv"
EV_GROUP = "evs"
PV_LATITUDE, PV_LONGITUDE = 40.0, 0.0
"""The demo's PV sites (°): solar noon near 12:00 UTC, the clock's time zone."""
CHARGER_KW = 11.0
"""Every demo charger's rating (kW): 16 A three-phase."""
EV_METER_INTERVAL_S = 300.0
"""Clock seconds between a charge point's meter values."""


@dataclass(frozen=True)
class PVSite:
    """One demo PV system: array rating ``dc_kwp`` (kWp), inverter ``ac_kw`` (kW), tilt
    and azimuth (°), cloudiness seed."""

    agent_id: str
    dc_kwp: float
    ac_kw: float
    tilt_deg: float
    azimuth_deg: float
    clouds: int

    def emulator_args(self) -> list[str]:
        """``sef emulate inverter`` options for this site."""
        return [
            *("--dc-kwp", f"{self.dc_kwp:g}", "--ac-kw", f"{self.ac_kw:g}"),
            *("--lat", f"{PV_LATITUDE:g}", "--lon", f"{PV_LONGITUDE:g}"),
            *("--tilt", f"{self.tilt_deg:g}", "--azimuth", f"{self.azimuth_deg:g}"),
            *("--clouds", str(self.clouds)),
        ]


@dataclass(frozen=True)
class EVSession:
    """One demo EV's session: plug-in and unplug times (clock s), energy need (kWh,
    battery side), battery (kWh), on-board charger limit (kW), SOC at plug-in."""

    agent_id: str
    arrival_s: float
    departure_s: float
    need_kwh: float
    battery_kwh: float
    max_kw: float
    soc0: float

    @property
    def charge_point(self) -> str:
        """The charge point's OCPP identity (and its certificate's common name)."""
        return f"{self.agent_id}-cp"

    def emulator_args(self) -> list[str]:
        """``sef emulate evse`` session options."""
        return [
            *("--arrive-at", f"{self.arrival_s:.0f}"),
            *("--stay", f"{(self.departure_s - self.arrival_s) / 3600.0:.4f}"),
            *("--need", f"{self.need_kwh:.3f}", "--battery", f"{self.battery_kwh:g}"),
            *("--ev-max-kw", f"{self.max_kw:g}", "--soc", f"{self.soc0:.4f}"),
        ]


@dataclass(frozen=True)
class OcppCredentials:
    """The options that secure one charger's OCPP link (empty lists: insecure ``ws://``).

    Attributes:
        scheme: ``wss`` or ``ws``.
        agent: extra ``sef evse`` options (listener certificate, client CA, passwords).
        emulator: extra ``sef emulate evse`` options (CA, client certificate).
        emulator_env: environment of the emulator (its password).
    """

    scheme: str
    agent: list[str]
    emulator: list[str]
    emulator_env: dict[str, str]


def pv_sites(n: int) -> list[PVSite]:
    """``n`` PV systems that vary a little, the same ones every run."""
    sites = []
    for i in range(n):
        rng = random.Random(1000 + i)
        dc = round(rng.uniform(4.0, 9.0), 1)
        sites.append(
            PVSite(
                f"pv-{i + 1}",
                dc_kwp=dc,
                ac_kw=round(dc / 1.15, 1),
                tilt_deg=round(rng.uniform(20.0, 35.0)),
                azimuth_deg=round(rng.uniform(160.0, 200.0)),
                clouds=i + 1,
            )
        )
    return sites


def ev_sessions(n: int, day0_s: float) -> list[EVSession]:
    """``n`` EV sessions from the home-charging generator on the day that starts at
    ``day0_s`` (clock s, midnight), EV ``j`` from seed ``j`` (the same every run)."""
    out = []
    for j in range(n):
        s = home_sessions(1, seed=j + 1, day0_s=day0_s)
        out.append(
            EVSession(
                f"evse-{j + 1}",
                arrival_s=float(s.arrival_s[0]),
                departure_s=float(s.departure_s[0]),
                need_kwh=float(s.need_kwh[0]),
                battery_kwh=float(s.battery_kwh[0]),
                max_kw=float(s.max_rate_kw[0]),
                soc0=float(s.soc0[0]),
            )
        )
    return out


async def wait_for_agents(ems: Any, agent_ids: Iterable[str], timeout_s: float = 60.0) -> None:
    """Wait (real s) until every agent is online in ``ems``'s registry with telemetry.

    Raises:
        TimeoutError: naming the agents still missing.
    """
    from sef.interface import DEMO_INTERFACE

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    wanted = list(agent_ids)
    while True:
        missing = []
        for agent_id in wanted:
            record = ems.registry.get(agent_id)
            if record is None or not record.online or not record.prop(DEMO_INTERFACE, "Telemetry"):
                missing.append(agent_id)
        if not missing:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"not online with telemetry after {timeout_s:g} s: {missing}")
        await asyncio.sleep(0.2)


def _plain(value: Any) -> Any:
    """A telemetry value as the registry keeps it: ``[signature, value]`` → value."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        return value[1]
    return value


def counters(ems: Any, pv_ids: Iterable[str], ev_ids: Iterable[str]) -> dict[str, float]:
    """The energy counters the agents last reported, kWh: a PV inverter's
    ``Energy_Produced_Wh`` (since its emulator started), a charger's ``EV_Energy_kWh``
    (delivered in the present session); NaN where none was reported."""
    from sef.interface import DEMO_INTERFACE

    def last(agent_id: str, key: str) -> float:
        record = ems.registry.get(agent_id)
        telemetry = record.prop(DEMO_INTERFACE, "Telemetry") if record else None
        value = _plain(telemetry.get(key)) if isinstance(telemetry, Mapping) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            return math.nan
        return float(value) if math.isfinite(value) else math.nan

    out = {a: last(a, "Energy_Produced_Wh") / 1000.0 for a in pv_ids}
    out.update({a: last(a, "EV_Energy_kWh") for a in ev_ids})
    return out


@dataclass
class EnergyMeter:
    """Sums the PV and EV energy counters the agents report, over a run: a rise adds
    its difference, a fall (a charger's new session) adds the new value.

    Args:
        ems: the running EMS (its registry has the telemetry; its clock is the demo's).
        pv_ids, ev_ids: the inverter and charger agents.
        until_s: clock time (Unix s) of the run's end: :meth:`run` stops reading there,
            even if the control loop runs late.
    """

    ems: Any
    pv_ids: list[str]
    ev_ids: list[str]
    until_s: float = math.inf
    kwh: dict[str, float] = field(default_factory=dict)
    done: bool = False
    _last: dict[str, float] = field(default_factory=dict)

    def sample(self) -> None:
        """Read every counter once (call often: a session that ends between two reads
        with its counter reset loses what it gained since the earlier read)."""
        for agent_id, value in counters(self.ems, self.pv_ids, self.ev_ids).items():
            if math.isnan(value):
                continue
            last = self._last.get(agent_id)
            if last is not None:
                gain = value - last if value >= last else value
                self.kwh[agent_id] = self.kwh.get(agent_id, 0.0) + gain
            self._last[agent_id] = value

    async def run(self, period_s: float = 0.2) -> None:
        """Sample every ``period_s`` real s until the clock reaches ``until_s`` (or
        cancelled)."""
        while self.ems.clock.now() < self.until_s:
            self.sample()
            await asyncio.sleep(min(period_s, max(0.0, self.ems.clock.to_real(
                self.until_s - self.ems.clock.now()))))  # fmt: skip
        self.sample()
        self.done = True

    def summary(self) -> dict[str, Any]:
        """PV energy produced and EV energy delivered, kWh, per agent and in total."""
        if not self.done:
            self.sample()
        pv = {a: self.kwh.get(a, 0.0) for a in self.pv_ids}
        ev = {a: self.kwh.get(a, 0.0) for a in self.ev_ids}
        return {
            "pv_systems": len(pv),
            "pv_energy_kwh": round(sum(pv.values()), 3),
            "pv_energy_kwh_by_agent": {a: round(v, 3) for a, v in pv.items()},
            "ev_chargers": len(ev),
            "ev_energy_kwh": round(sum(ev.values()), 3),
            "ev_energy_kwh_by_agent": {a: round(v, 3) for a, v in ev.items()},
        }
