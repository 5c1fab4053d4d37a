"""The body of ``sef demo``: broker, fleet, EMS with store, API and dashboard, control app.

Each battery emulator, BIS, SGD emulator and UCM (and, with ``--pv``/``--evs``, each PV
inverter emulator, inverter agent, EVSE agent and charge point) is its own process; the
EMS (registry, store, REST API, dashboard, live control app) runs in this one. The clock
is scaled and starts a little before midnight so every process is up when the scenario's
day begins.

Secure by default: a throwaway CA for this run (``OUT/pki``, :mod:`sef.demo._secure`)
issues the EMS's and every agent's certificate, Mosquitto runs in mutual-TLS + ACL mode,
every process gets its ``--cert/--key/--ca``, and the dashboard needs the admin token
printed at start. ``--insecure`` (or no Mosquitto: the embedded broker has no
client-certificate TLS) runs plain text, and says so.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from sef.clock import ScaledClock
from sef.control.controllers import make_controller
from sef.control.live import LiveControl, wait_for_fleet
from sef.control.report import write_report
from sef.control.scenario import Scenario, load_scenario, scenario_from_dict
from sef.demo._der import EnergyMeter, ev_sessions, pv_sites, wait_for_agents
from sef.demo._fleet import Fleet, fleet_identities
from sef.demo._secure import DemoPki, mosquitto_available
from sef.discovery import verified_broker_tls
from sef.ems import EMS
from sef.ems.render import agents_table
from sef.ems.store import Store
from sef.security import Role

if TYPE_CHECKING:
    from sef.ems.api import ApiServer

__all__ = ["EMS_ID", "DemoOptions", "demo_scenario", "run_demo"]

EMS_ID = "demo-ems"
"""The demo EMS's id (and certificate identity)."""

LEAD_IN_REAL_S = 20.0
"""Real seconds between the start and the scenario's midnight: time for processes to boot."""


@dataclass
class DemoOptions:
    """What ``sef demo`` runs. Durations in hours of simulated time; speed dimensionless."""

    hours: float = 24.0
    speed: float = 720.0
    batteries: int = 3
    waterheaters: int = 3
    pv: int = 0
    """PV systems (inverter emulator + agent each): measured, not controlled."""
    evs: int = 0
    """EV chargers (OCPP charge point + central-system agent each): measured load."""
    out: Path = Path("sef-demo-report")
    api: tuple[str, int] = ("127.0.0.1", 8080)
    broker: str | None = None
    browser: bool = True
    live_table: bool = True
    controller: str = "mpc"
    insecure: bool = False
    """Plain-text MQTT, no certificates, a dashboard without login (a lab only)."""


def demo_scenario(batteries: int, waterheaters: int, hours: float) -> Scenario:
    """The built-in ``small`` scenario, resized: base load grows with the fleet."""
    base = load_scenario("small")
    raw: dict[str, Any] = {**base.source}
    size = max(batteries, waterheaters) / 3.0
    raw["base_load"] = {**raw["base_load"], "scale": float(raw["base_load"]["scale"]) * size}
    raw["batteries"] = {**raw["batteries"], "count": batteries}
    raw["water_heaters"] = {**raw["water_heaters"], "count": waterheaters}
    raw["duration_h"] = 24.0
    from importlib import resources

    with resources.as_file(resources.files("sef.control.scenarios")) as folder:
        scenario = scenario_from_dict(raw, folder)
    scenario.name = f"demo ({batteries} batteries, {waterheaters} water heaters, {hours:g} h)"
    return scenario


def _view(
    ems: EMS, live: LiveControl | None, clock: ScaledClock, lines: list[str], url: str
) -> Group:
    status = Table.grid(padding=(0, 2))
    status.add_row("simulated time", f"{clock.datetime():%Y-%m-%d %H:%M} UTC")
    status.add_row("dashboard", url)
    if live is not None and live.history:
        last = live.history[-1]
        errors = [h.net_kw - h.target_kw for h in live.history[1:]]
        rmse = math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else 0.0
        status.add_row("net load / target", f"{last.net_kw:6.1f} kW / {last.target_kw:6.1f} kW")
        status.add_row("tracking RMSE so far", f"{rmse:.2f} kW over {len(errors)} steps")
    return Group(
        agents_table(ems.agents(), "SEF demo: agents"),
        Panel(status, title="control"),
        Panel("\n".join(lines[-6:]) or "starting ...", title="log"),
    )


async def run_demo(options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo; return the report summary (also written to ``options.out``)."""
    console = console or Console()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    scenario = demo_scenario(options.batteries, options.waterheaters, options.hours)
    if options.pv or options.evs:
        scenario.name = scenario.name.replace(
            ",", f", {options.pv} PV systems, {options.evs} EV chargers,", 1
        )
    steps = min(scenario.steps, round(options.hours * 3600.0 / scenario.dt_s))
    today = datetime.now(tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start_s = today.timestamp() + 86400.0
    clock = ScaledClock(
        speed=options.speed, sim_start=start_s, real_anchor=time.time() + LEAD_IN_REAL_S
    )
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        if not options.live_table:
            console.print(text)

    broker = None
    broker_url = options.broker
    pki: DemoPki | None = None
    if broker_url is None and not options.insecure:
        why = mosquitto_available()
        if why is None:
            pki = await asyncio.to_thread(_demo_pki, out, options)
            broker_url = pki.url
            say(
                f"broker: mosquitto, mutual TLS + ACL, on {broker_url} (throwaway CA {out / 'pki'})"
            )
        else:
            console.print(
                f"[bold red]WARNING:[/] {why}. The embedded broker cannot check client "
                "certificates, so this demo runs INSECURE: plain-text MQTT, no certificates, "
                "unsigned commands, a dashboard without login. Install Mosquitto for the "
                "secure demo."
            )
    if broker_url is None:
        from sef.embedded_broker import start_broker

        broker = start_broker()
        broker_url = broker.url
        say(f"broker: {broker.kind} on {broker_url} (INSECURE: plain text)")
    security = pki.security(EMS_ID) if pki is not None else None
    fleet = Fleet(
        broker_url,
        clock,
        out / "logs",
        battery_soc=scenario.battery_soc0.tolist(),
        heater_temp_c=np.asarray(scenario.wh_params.initial_c).tolist(),
        base_kw=scenario.base_kw.tolist(),  # the metered feeder's base load
        base_dt_s=scenario.dt_s,
        agent_args=pki.cli_args if pki is not None else (lambda agent_id: ["--insecure"]),
        pv=pv_sites(options.pv),
        evs=ev_sessions(options.evs, start_s),
    )
    if pki is not None:
        fleet.ocpp = pki.ocpp
    store = Store.open(f"sqlite:///{(out / 'ems.db').resolve()}")
    ems = EMS(broker_url, EMS_ID, clock=clock, store=store, keepalive_s=5, security=security)
    if security is not None:
        ems.bus.tls = verified_broker_tls(security)  # the broker must prove its role too
    server = None
    try:
        await ems.start()
        server = await _serve_dashboard(ems, store, options, out, console, say)
        if options.browser:
            webbrowser.open(server.url if security is None else f"{server.url}/login")
        say(
            f"starting {options.batteries} battery emulators + BIS and {options.waterheaters} "
            "SGD emulators + UCM"
            + (f", {options.pv} PV inverter emulators + agents" if options.pv else "")
            + (f", {options.evs} OCPP charge points + EVSE agents" if options.evs else "")
            + " (one process each)"
        )
        await asyncio.to_thread(fleet.start)
        online = await wait_for_fleet(
            ems,
            scenario,
            options.batteries,
            options.waterheaters,
            meters=1 if fleet.meter_id else 0,
            timeout_s=60.0,
        )
        await wait_for_agents(ems, [*fleet.pv_ids, *fleet.ev_ids], timeout_s=60.0)
        found = len(online.batteries) + len(online.heaters) + len(online.meters)
        found += len(fleet.pv_ids) + len(fleet.ev_ids)
        der = (f", {len(fleet.pv_ids)} PV inverters" if fleet.pv_ids else "") + (
            f", {len(fleet.ev_ids)} EV chargers" if fleet.ev_ids else ""
        )
        say(
            f"all {found} agents online ({len(online.batteries)} batteries, "
            f"{len(online.heaters)} water heaters, {len(online.meters)} meters{der}); "
            f"control app "
            f"{options.controller} follows the target from midnight for {options.hours:g} h "
            "(the fleet is re-read from the registry at each re-plan)"
        )
        live = LiveControl(
            ems,
            scenario,
            make_controller(options.controller),
            start_s=start_s,
            # the baseline is the reference without control: no feeder guard either
            feeder_guard=options.controller != "baseline",
        )
        energy = EnergyMeter(ems, fleet.pv_ids, fleet.ev_ids, start_s + steps * scenario.dt_s)
        energy.sample()
        run = asyncio.create_task(live.run(steps))
        metering = asyncio.create_task(energy.run())
        if options.live_table:
            with Live(
                _view(ems, live, clock, lines, server.url), console=console, refresh_per_second=4
            ) as display:
                while not run.done():
                    await asyncio.sleep(0.25)
                    display.update(_view(ems, live, clock, lines, server.url))
        try:
            result = await run
        finally:
            metering.cancel()
        summary = write_report(out, scenario, [result])
        if fleet.pv_ids or fleet.ev_ids:
            summary["der"] = _der_summary(energy.summary(), out)
            console.print(
                f"PV: {summary['der']['pv_energy_kwh']:.1f} kWh produced by "
                f"{len(fleet.pv_ids)} systems; EVs: {summary['der']['ev_energy_kwh']:.1f} kWh "
                f"delivered by {len(fleet.ev_ids)} chargers (measured, not controlled)"
            )
        metrics = summary["controllers"][result.controller]
        console.print(f"report in {out}: {', '.join(summary['files'])}")
        console.print(
            f"tracking RMSE {metrics['rmse_kw']:.2f} kW, peak {metrics['peak_kw']:.1f}"
            f" kW, comfort violations {metrics['comfort_violations']:.0f}, "
            f"SOC violations {metrics['soc_violations']:.0f}"
        )
        return summary
    finally:
        fleet.stop()
        if server is not None:
            await server.stop()
        await ems.stop()
        store.close()
        if broker is not None:
            broker.stop()
        if pki is not None:
            pki.stop()


def _der_summary(der: dict[str, Any], out: Path) -> dict[str, Any]:
    """Add the PV and EV energy of the run to ``out/summary.json``; return it."""
    import json

    path = out / "summary.json"
    summary = json.loads(path.read_text())
    summary["der"] = der
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return der


def _demo_pki(out: Path, options: DemoOptions) -> DemoPki:
    """The throwaway CA with the EMS's and every agent's certificate (and the chargers'
    OCPP certificates and passwords), and its broker."""
    pki = DemoPki(out)
    pki.issue(EMS_ID, Role.EMS)
    identities = fleet_identities(options.batteries, options.waterheaters, options.pv, options.evs)
    for agent_id, groups in identities:
        pki.issue(agent_id, Role.AGENT, groups)  # the devices' agents and the feeder meter
    pki.issue_ocpp(ev_sessions(options.evs, 0.0))  # the ids only: times do not matter here
    pki.start_broker()
    return pki


async def _serve_dashboard(
    ems: EMS,
    store: Store,
    options: DemoOptions,
    out: Path,
    console: Console,
    say: Callable[[str], None],
) -> ApiServer:
    """Serve the API and dashboard (a free port if the asked one is taken). Secure: the
    store's tokens plus a throwaway admin token for this run, kept in memory, printed and
    written to ``out/dashboard-token`` (0600). Insecure: no login."""
    from sef.ems.api import ApiAuth, serve_api

    token = secrets.token_urlsafe(32)
    if ems.security is None:
        auth = ApiAuth.open()
    else:
        auth = ApiAuth.of_store(store)
        auth.add_token("demo", "admin", token)
    try:
        server = await serve_api(ems, *options.api, auth=auth)
    except OSError:
        server = await serve_api(ems, options.api[0], 0, auth=auth)
    say(f"EMS with store {out / 'ems.db'}; dashboard and API on {server.url}")
    if ems.security is None:
        console.print(f"dashboard: {server.url} (no login: INSECURE)")
        return server
    path = out / "dashboard-token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    console.print(
        f"dashboard: {server.url}/login with the admin token (this run only; also in "
        f"{path}; or send Authorization: Bearer):\n  {token}"
    )
    return server
