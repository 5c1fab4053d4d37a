"""A fleet of emulated devices and their agents, each in its own process.

Battery ``i``: ``sef emulate battery`` (SunSpec Modbus TCP) + ``sef bis``. Water heater
``j``: ``sef emulate waterheater --pty`` (CTA-2045 SGD on a pseudo-terminal) +
``sef ucm`` on that pty. PV system ``k``: ``sef emulate inverter`` + ``sef inverter``; EV
charger ``l``: ``sef evse`` (OCPP central system) + ``sef emulate evse`` (charge point)
(:mod:`sef.demo._der`). The feeder: ``sef emulate meter`` (SunSpec meter on Modbus TCP)
measuring the scenario's base load plus every device, which reports its AC power to the
meter's CT input (``--ct``), + ``sef meter`` publishing ``Net_Power_kW``. All share one
scaled clock through ``SEF_CLOCK``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sef.clock import Clock
from sef.demo._der import (
    CHARGER_KW,
    EV_GROUP,
    EV_METER_INTERVAL_S,
    PV_GROUP,
    EVSession,
    OcppCredentials,
    PVSite,
)
from sef.demo._processes import DemoProcesses

__all__ = ["BATTERY_GROUP", "HEATER_GROUP", "METER_GROUP", "METER_ID", "Fleet", "fleet_identities"]

BATTERY_GROUP = "batteries"
HEATER_GROUP = "waterheaters"
METER_GROUP = "meters"
METER_ID = "meter-1"
"""The feeder meter agent's id (and certificate identity)."""
METER_MAX_KW = 100.0
"""Largest |power| the feeder meter's registers hold, kW (10-W steps)."""


def fleet_identities(
    batteries: int, waterheaters: int, pv: int = 0, evs: int = 0
) -> list[tuple[str, tuple[str, ...]]]:
    """Every agent of the demo fleet with its groups (one certificate each)."""
    return [
        *((f"battery-{i + 1}", (BATTERY_GROUP,)) for i in range(batteries)),
        *((f"waterheater-{j + 1}", (HEATER_GROUP,)) for j in range(waterheaters)),
        *((f"pv-{k + 1}", (PV_GROUP,)) for k in range(pv)),
        *((f"evse-{m + 1}", (EV_GROUP,)) for m in range(evs)),
        (METER_ID, (METER_GROUP,)),
    ]


def _insecure_ocpp(session: EVSession) -> OcppCredentials:
    return OcppCredentials("ws", [], ["--insecure"], {})


@dataclass
class Fleet:
    """Starts and stops the device processes.

    Args:
        broker: broker URL for the agents.
        clock: the shared clock (its spec goes to every process).
        log_dir: one log file per process.
        battery_soc: initial SOC of each battery (fraction); one battery per entry.
        heater_temp_c: initial tank temperature of each water heater (°C).
        bis_poll_s: BIS poll period (real s). ``ucm_poll_s``: UCM poll period (real s).
        meter_poll_s: meter agent poll period (real s): ``Net_Power_kW`` is the mean over it.
        agent_args: the security options of agent ``id`` (its ``--cert/--key/--ca``, or
            ``--insecure``).
        base_kw: the feeder's base load per ``base_dt_s`` step, kW (the scenario's
            ``base_kw``); None: the demo scenario's for this fleet size.
        base_start_s: clock time (Unix s) of ``base_kw[0]``, the scenario's start; the
            meter's profile repeats daily from there. None: 00:00 UTC.
        meter: run the feeder meter (emulator + agent).
        pv: the PV systems (:func:`sef.demo._der.pv_sites`); ``evs``: the EV sessions
            (:func:`sef.demo._der.ev_sessions`), one charger each.
        ocpp: the OCPP link's credentials of a charger (default: insecure ``ws://``).

    After :meth:`start`: ``meter_modbus`` (host, port) and ``meter_ct`` (host, port) of the
    meter emulator, ``meter_id`` its agent (``""`` if it could not start: ``notes`` says
    why).
    """

    broker: str
    clock: Clock
    log_dir: Path
    battery_soc: Sequence[float] = (0.5, 0.5, 0.5)
    heater_temp_c: Sequence[float] = (51.67, 51.67, 51.67)
    bis_poll_s: float = 0.1
    ucm_poll_s: float = 0.1
    meter_poll_s: float = 0.01
    agent_args: Callable[[str], list[str]] = field(default=lambda agent_id: ["--insecure"])
    base_kw: Sequence[float] | None = None
    base_dt_s: float = 60.0
    base_start_s: float | None = None
    meter: bool = True
    pv: Sequence[PVSite] = ()
    evs: Sequence[EVSession] = ()
    ocpp: Callable[[EVSession], OcppCredentials] = _insecure_ocpp
    pv_poll_s: float = 1.0
    """Inverter agent poll period (real s); it is also its Modbus reply timeout."""
    ev_poll_s: float = 0.5
    """EVSE agent telemetry period (real s)."""
    der_start_s: float = 120.0
    """Real s a PV or EV process may take to be ready (pvlib alone imports in 3-20 s on a
    loaded machine)."""
    battery_ids: list[str] = field(default_factory=list)
    heater_ids: list[str] = field(default_factory=list)
    pv_ids: list[str] = field(default_factory=list)
    ev_ids: list[str] = field(default_factory=list)
    meter_id: str = ""
    meter_modbus: tuple[str, int] | None = None
    meter_ct: tuple[str, int] | None = None
    notes: list[str] = field(default_factory=list)
    processes: DemoProcesses = field(init=False)

    def __post_init__(self) -> None:
        self.processes = DemoProcesses({"SEF_CLOCK": self.clock.spec()}, self.log_dir)

    def _battery(self, i: int) -> str:
        agent_id = f"battery-{i + 1}"
        port = self.processes.start(
            f"battery-emulator-{i + 1}",
            [
                "emulate",
                "battery",
                "--port",
                "0",
                "--soc",
                f"{self.battery_soc[i]:.4f}",
                *self._ct_args(f"battery-{i + 1}"),
            ],
            r"listening on [\d.]+:(\d+)",
        )
        self.processes.start(
            agent_id,
            [
                "bis",
                "--modbus",
                f"tcp://127.0.0.1:{port}",
                "--id",
                agent_id,
                "--broker",
                self.broker,
                "--group",
                BATTERY_GROUP,
                "--poll",
                str(self.bis_poll_s),
                "--keepalive",
                "5",
                *self.agent_args(agent_id),
            ],
            r"(starting)",
        )
        return agent_id

    def _heater(self, j: int) -> str:
        agent_id = f"waterheater-{j + 1}"
        where = self.processes.start(
            f"sgd-emulator-{j + 1}",
            [
                "emulate",
                "waterheater",
                "--pty",
                "--start-temp",
                f"{self.heater_temp_c[j]:.2f}",
                *self._ct_args(f"waterheater-{j + 1}"),
            ],
            r"ready on (\S+)",
        )
        self.processes.start(
            agent_id,
            [
                "ucm",
                "--serial",
                where,
                "--id",
                agent_id,
                "--broker",
                self.broker,
                "--group",
                HEATER_GROUP,
                "--poll",
                str(self.ucm_poll_s),
                *self.agent_args(agent_id),
            ],
            r"(starting|ucm)",
        )
        return agent_id

    def _pv(self, site: PVSite) -> str:
        """Start PV system ``site``: the inverter emulator, then ``sef inverter`` on it."""
        n = site.agent_id.rsplit("-", 1)[1]
        port = self.processes.start(
            f"inverter-emulator-{n}",
            ["emulate", "inverter", "--port", "0", *site.emulator_args(),
             *self._ct_args(site.agent_id)],
            r"listening on [\d.]+:(\d+)",
            timeout_s=self.der_start_s,
        )  # fmt: skip
        self.processes.start(
            site.agent_id,
            ["inverter", "--modbus", f"tcp://127.0.0.1:{port}", "--id", site.agent_id,
             "--broker", self.broker, "--group", PV_GROUP, "--poll", str(self.pv_poll_s),
             "--keepalive", "5", "--dc-kwp", f"{site.dc_kwp:g}",
             *self.agent_args(site.agent_id)],
            r"(starting)",
            timeout_s=self.der_start_s,
        )  # fmt: skip
        return site.agent_id

    def _ev(self, session: EVSession) -> str:
        """Start EV charger ``session``: ``sef evse`` (its OCPP listener on a free port),
        then the charge point, which must boot against it."""
        n = session.agent_id.rsplit("-", 1)[1]
        link = self.ocpp(session)
        url = self.processes.start(
            session.agent_id,
            ["evse", "--listen", f"{link.scheme}://127.0.0.1:0", "--id", session.agent_id,
             "--charge-point", session.charge_point, "--max-kw", f"{CHARGER_KW:g}",
             "--broker", self.broker, "--group", EV_GROUP, "--poll", str(self.ev_poll_s),
             "--keepalive", "5", *link.agent, *self.agent_args(session.agent_id)],
            r"OCPP on (wss?://\S+)",
            timeout_s=self.der_start_s,
        )  # fmt: skip
        self.processes.start(
            f"evse-emulator-{n}",
            ["emulate", "evse", "--ocpp", url, "--max-kw", f"{CHARGER_KW:g}",
             "--meter-interval", f"{EV_METER_INTERVAL_S:g}",
             *session.emulator_args(), *link.emulator,
             *self._ct_args(session.agent_id)],
            r"(booted)",
            timeout_s=self.der_start_s,
            env=link.emulator_env,
        )  # fmt: skip
        return session.agent_id

    def _ct_args(self, name: str) -> list[str]:
        """``--ct`` options that make a device report its power to the feeder meter."""
        if self.meter_ct is None:
            return []
        return ["--ct", f"{self.meter_ct[0]}:{self.meter_ct[1]}", "--ct-name", name]

    def _base_load_csv(self) -> Path:
        """Write the feeder's base load as ``time_s,kw`` for the meter emulator."""
        base = self.base_kw
        if base is None:
            from sef.demo._run import demo_scenario  # the demo's own scenario

            scenario = demo_scenario(len(self.battery_soc), len(self.heater_temp_c), 24.0)
            base, self.base_dt_s = scenario.base_kw.tolist(), scenario.dt_s
        self.log_dir.parent.mkdir(parents=True, exist_ok=True)
        path = self.log_dir.parent / "feeder_base_load.csv"  # beside the logs
        offset = (self.base_start_s or 0.0) % 86400.0
        day = base[: max(1, round(86400.0 / self.base_dt_s))]  # the profile repeats daily
        times = (round(offset + k * self.base_dt_s, 3) % 86400.0 for k in range(len(day)))
        rows = (f"{t:.3f},{kw:.4f}" for t, kw in zip(times, day, strict=True))
        path.write_text("time_s,kw\n" + "\n".join(rows) + "\n")
        return path

    def meter_max_kw(self) -> float:
        """Largest |power| the feeder meter must hold (kW): the base range plus every PV
        inverter's rating and every charger's."""
        return METER_MAX_KW + sum(p.ac_kw for p in self.pv) + CHARGER_KW * len(self.evs)

    def _meter_emulator(self) -> None:
        """Start the feeder meter emulator (before the devices: they report to it)."""
        found = self.processes.start(
            "meter-emulator",
            ["emulate", "meter", "--port", "0", "--ct-port", "0", "--max-kw",
             f"{self.meter_max_kw():g}", "--base-load", str(self._base_load_csv())],
            r"listening on ([\d.]+:\d+ unit \d+, CT on [\d.]+:\d+)",
        )  # fmt: skip
        modbus, _, ct = found.partition(" unit ")
        host, port = modbus.rsplit(":", 1)
        ct_host, ct_port = ct.split("CT on ", 1)[1].rsplit(":", 1)
        self.meter_modbus, self.meter_ct = (host, int(port)), (ct_host, int(ct_port))

    def _meter_agent(self) -> None:
        """Start ``sef meter`` on the meter emulator (when it has its credentials)."""
        assert self.meter_modbus is not None
        args = self.agent_args(METER_ID)
        if "--cert" in args and not Path(args[args.index("--cert") + 1]).exists():
            self.notes.append(f"no certificate for {METER_ID}: the meter agent is not started")
            return
        host, port = self.meter_modbus
        self.processes.start(
            METER_ID,
            ["meter", "--modbus", f"tcp://{host}:{port}", "--id", METER_ID, "--broker",
             self.broker, "--group", METER_GROUP, "--poll", str(self.meter_poll_s),
             "--keepalive", "5", *args],
            r"(starting)",
        )  # fmt: skip
        self.meter_id = METER_ID

    def start(self) -> None:
        """Start every device and agent (in parallel threads: each takes ~1 s to boot); the
        meter emulator first, so the devices can report their power to it."""
        if self.meter:
            self._meter_emulator()
        with ThreadPoolExecutor(max_workers=4) as pool:
            meter = pool.submit(self._meter_agent) if self.meter else None
            batteries = [pool.submit(self._battery, i) for i in range(len(self.battery_soc))]
            heaters = [pool.submit(self._heater, j) for j in range(len(self.heater_temp_c))]
            pv = [pool.submit(self._pv, site) for site in self.pv]
            evs = [pool.submit(self._ev, session) for session in self.evs]
            self.battery_ids = [f.result() for f in batteries]
            self.heater_ids = [f.result() for f in heaters]
            self.pv_ids = [f.result() for f in pv]
            self.ev_ids = [f.result() for f in evs]
            if meter is not None:
                meter.result()

    def stop(self) -> None:
        self.processes.stop_all()
