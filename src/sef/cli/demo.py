"""``sef demo``: a live look at the bus: one EMS and two battery agents on a broker.

The demo starts Mosquitto on a free port (or uses ``--broker``), starts two
virtual-battery agents as their own processes on a scaled clock, shows the EMS's view
of them live, sends one event sequence to their group, then kills one agent with
SIGKILL to show the EMS marking it offline while keeping its last known telemetry.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel

from sef.broker import BrokerNotFound, Mosquitto
from sef.clock import ScaledClock
from sef.ems import EMS

console = Console()


def _spawn_agent(agent_id: str, broker: str, clock_spec: str,
                 soc: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SEF_CLOCK": clock_spec}
    return subprocess.Popen(
        [sys.executable, "-m", "sef", "agent", "virtual-battery", "--id", agent_id, "--broker",
         broker, "--group", "demo", "--soc", str(soc), "--step", "60", "--keepalive", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run_demo(broker: str, seconds: float, speed: float,
                   show: bool = True) -> dict[str, dict[str, Any]]:
    """Run the foundation demo against ``broker``; return the EMS's final agent summaries."""
    clock = ScaledClock(speed=speed)
    spec = clock.spec()
    ems = EMS(broker, "demo-ems", clock=clock, keepalive_s=5)
    await ems.start()
    agents = {"battery-1": _spawn_agent("battery-1", broker, spec, 0.4),
              "battery-2": _spawn_agent("battery-2", broker, spec, 0.7)}
    log_lines: list[str] = []
    from sef.cli.bus_commands import agents_table

    def view() -> Group:
        lines = "\n".join(log_lines[-8:]) or "waiting for agents ..."
        return Group(agents_table(ems.agents(), f"EMS view — simulated {clock.datetime():%H:%M}"),
                     Panel(lines, title="what the demo does"))

    def say(text: str) -> None:
        log_lines.append(f"[{clock.datetime():%H:%M}] {text}")
        if not show:
            print(text, flush=True)

    started = time.monotonic()
    sent = killed = False
    try:
        with Live(view(), console=console, refresh_per_second=4, transient=False,
                  auto_refresh=show) if show else _NullLive() as live:
            while time.monotonic() - started < seconds:
                await asyncio.sleep(0.25)
                online = [a for a in ems.agents() if a.online]
                if not sent and len(online) == 2:
                    say(f"discovered {', '.join(a.agent_id for a in online)} in "
                        f"{time.monotonic() - started:.1f} s; sending group:demo "
                        "charge 4 kW 30 min, then discharge 8 kW 30 min")
                    replies = await ems.call("group:demo", "edu.pdx.powerlab.demo",
                                             "EnergyMethod", [[["charge", 4, 1800],
                                                               ["discharge", 8, 1800]]])
                    say("replies: " + ", ".join(f"{r.agent} {'ok' if r.ok else r.error}"
                                                 for r in replies))
                    sent = True
                if sent and not killed and time.monotonic() - started > seconds * 0.7:
                    say("SIGKILL battery-2: the broker publishes its last will")
                    agents["battery-2"].send_signal(signal.SIGKILL)
                    killed = True
                live.update(view())
        return {a.agent_id: a.summary() for a in ems.agents()}
    finally:
        for process in agents.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in agents.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        await ems.stop()


class _NullLive:
    def __enter__(self) -> _NullLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, renderable: object) -> None:
        return None


def demo(
    broker: str | None = typer.Option(None, "--broker", "-b",
                                      help="Use this broker instead of starting Mosquitto."),
    seconds: float = typer.Option(20.0, "--seconds", help="How long the demo runs, real s."),
    speed: float = typer.Option(360.0, "--speed", help="Simulated seconds per real second."),
    headless: bool = typer.Option(False, "--headless", help="No live table; print lines."),
    as_json: bool = typer.Option(False, "--json", help="Print the final agent list as JSON."),
) -> None:
    """One EMS and two battery agents on a broker, live."""
    mosquitto: Mosquitto | None = None
    if broker is None:
        try:
            mosquitto = Mosquitto().start()
        except BrokerNotFound as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
        broker = mosquitto.url
        console.print(f"Mosquitto started on {broker}")
    try:
        summary = asyncio.run(run_demo(broker, seconds, speed, show=not headless and not as_json))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        if mosquitto is not None:
            mosquitto.stop()
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        for agent_id, info in summary.items():
            console.print(f"{agent_id}: {info['status']}, last telemetry kept: "
                          f"{'yes' if info['properties'] else 'no'}")
