"""The rig of ``bench/openadr_latency.py``: an EMS on a scaled clock with ``bat-1`` …
``bat-N`` (BIS agents → SunSpec battery emulators over Modbus TCP, the pieces
``tests/openadr/dr_stack.py`` starts), every ``EMS.call`` timestamped, and every change of
a battery emulator's setpoint timestamped where it happens (the emulator's write hook).

Groups: every battery is in ``batteries`` and ``feeder-1``, and ``bat-k`` alone in
``site-k``, so events can target the fleet, one site (a group) or one agent (a resource).

Also the pieces both parts of the bench share: the 2.0b VTN + bridge, the bridge's
arrival/decision times, percentiles. ``tests`` and ``tests/openadr`` must be on
``sys.path`` (the bench puts them there) for the test VTNs and the stack's teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from dr_stack import stop_stack
from oadr2b_vtn import TestVtn, make_pki

from sef.agents.bis import BISAgent
from sef.clock import ScaledClock
from sef.ems import EMS
from sef.emulators.battery import BatteryEmulator
from sef.interface import DEMO_INTERFACE
from sef.openadr import DrBridge, DrEvent, Oadr2bAdapter, Oadr2bConfig, OptDecision

ENERGY_METHOD = "EnergyMethod"
SPEED = 60.0
"""EMS clock speed: a 60-s interval lasts 1 s real."""
POLL_S = 1.0
"""The 2.0b VTN's poll interval (real s), and the OpenADR 3 adapter's (clock s / SPEED)."""


@dataclass(frozen=True)
class CallSeen:
    """One ``EMS.call``: ``mono`` real s (``time.monotonic()``), ``clock_s`` EMS clock
    (Unix s), target, method, args, sender (``sent_by``)."""

    mono: float
    clock_s: float
    target: str
    method: str
    args: list[Any]
    sent_by: str | None

    @property
    def span_s(self) -> float:
        """Clock seconds the ``EnergyMethod`` sequence of this call lasts (Σ durations)."""
        if self.method != ENERGY_METHOD or not self.args:
            return 0.0
        return float(sum(float(step[2]) for step in self.args[0]))


@dataclass
class Rig:
    """The running rig."""

    clock: ScaledClock
    ems: EMS
    batteries: dict[str, BatteryEmulator] = field(default_factory=dict)
    agents: dict[str, BISAgent] = field(default_factory=dict)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    calls: list[CallSeen] = field(default_factory=list)
    setpoints: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Agent → ``(time.monotonic(), setpoint W)`` at every change seen by the emulator."""

    def calls_by(self, sent_by: str) -> list[CallSeen]:
        """The ``EnergyMethod`` calls of one sender, oldest first."""
        return [c for c in self.calls if c.method == ENERGY_METHOD and c.sent_by == sent_by]

    def setpoint_w(self, agent: str) -> float:
        """The battery emulator's setpoint now, W (+ = charge)."""
        return self.batteries[agent].setpoint_w()

    def first_change_after(self, agent: str, mono: float) -> float | None:
        """``time.monotonic()`` of the first setpoint change to a non-zero value after
        ``mono``, if any."""
        return next((t for t, w in self.setpoints[agent] if t >= mono and w != 0.0), None)

    def _record_calls(self) -> None:
        original = self.ems.call

        async def call(target: Any, interface: str, method: str, args: Any, **kw: Any) -> Any:
            seen = CallSeen(
                time.monotonic(),
                self.clock.now(),
                str(target),
                method,
                list(args),
                kw.get("sent_by"),
            )
            self.calls.append(seen)
            return await original(target, interface, method, args, **kw)

        self.ems.call = call  # type: ignore[method-assign]

    def _probe(self, name: str, emulator: BatteryEmulator) -> None:
        """Wrap the emulator's write hook: after each stored Modbus write, note the
        setpoint if it changed."""
        changes = self.setpoints.setdefault(name, [(time.monotonic(), emulator.setpoint_w())])
        original = emulator._apply

        def apply(new: dict[tuple[int, str], Any]) -> None:
            original(new)
            watts = emulator.setpoint_w()
            if changes[-1][1] != watts:
                changes.append((time.monotonic(), watts))

        emulator._apply = apply  # type: ignore[method-assign]

    def ready(self) -> bool:
        """Every agent online at the EMS with groups, nameplate and power telemetry."""
        for name in self.agents:
            record = self.ems.registry.get(name)
            if record is None or record.online is not True or not record.groups:
                return False
            if not record.prop(DEMO_INTERFACE, "Nameplate"):
                return False
            telemetry = record.prop(DEMO_INTERFACE, "Telemetry") or {}
            if "Sys_Power_kW" not in telemetry:
                return False
        return True


async def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.005) -> bool:
    """Wait until ``predicate()`` holds (True) or ``timeout_s`` real s pass (False)."""
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(step_s)
    return True


@contextlib.asynccontextmanager
async def rig(
    broker_url: str, *, batteries: int = 4, speed: float = 60.0, soc: float = 0.6
) -> AsyncIterator[Rig]:
    """Start the rig; yields once every agent is online with nameplate and telemetry.

    Args:
        broker_url: the Mosquitto the EMS and agents use.
        batteries: how many batteries (8 kW, 60 kWh each: the emulator's default).
        speed: EMS clock speed (clock s per real s).
        soc: initial state of charge, 0..1.
    """
    clock = ScaledClock(speed=speed)
    r = Rig(clock, EMS(broker_url, "ems-bench", clock=clock, keepalive_s=5))
    r._record_calls()
    try:
        await r.ems.start()
        for i in range(1, batteries + 1):
            emulator = BatteryEmulator(port=0, clock=clock, soc=soc, tick_s=speed * 0.02)
            _, port = await emulator.start()
            r.tasks.append(asyncio.create_task(emulator.run()))
            name = f"bat-{i}"
            r.batteries[name] = emulator
            r._probe(name, emulator)
            r.agents[name] = BISAgent(
                name,
                broker_url,
                modbus_host="127.0.0.1",
                modbus_port=port,
                poll_s=0.1,
                clock=clock,
                groups=("batteries", "feeder-1", f"site-{i}"),
                keepalive_s=2,
            )
        for agent in r.agents.values():
            await agent.start()
        if not await wait_until(r.ready, 30.0):
            raise RuntimeError("the agents did not come online within 30 s")
        yield r
    finally:
        await stop_stack(r)


def stats_ms(values: list[float]) -> dict[str, float]:
    """p50 / p95 / max of real seconds, in ms."""
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    a = np.asarray(values) * 1000.0
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def instrument(bridge: DrBridge) -> tuple[dict[str, float], dict[str, float]]:
    """Wrap ``bridge.on_event``: when each event id first arrived and was first decided."""
    arrived: dict[str, float] = {}
    decided: dict[str, float] = {}
    original = bridge.on_event

    async def on_event(event: DrEvent) -> OptDecision:
        arrived.setdefault(event.event_id, time.monotonic())
        decision = await original(event)
        decided.setdefault(event.event_id, time.monotonic())
        return decision

    bridge.on_event = on_event  # type: ignore[method-assign]
    return arrived, decided


def ignore_opt(ven_id: str, event_id: str, opt_type: str) -> None:
    """Openleadr wants a callback per event; the VTN wrapper records the opts."""


@contextlib.asynccontextmanager
async def oadr2b_bridge(
    r: Rig, tls: bool, workdir: Path
) -> AsyncIterator[tuple[TestVtn, DrBridge]]:
    """An openleadr VTN (plain, or mutual TLS + signatures) and a bridge whose 2.0b
    adapter is registered with it."""
    pki = make_pki(workdir / f"ca-{uuid.uuid4().hex[:6]}") if tls else None
    vtn = TestVtn(pki=pki, expected_ven_fingerprint=pki.ven_fingerprint if pki else None)
    with contextlib.redirect_stdout(io.StringIO()):  # openleadr prints a banner
        await vtn.start()
    tls_fields: dict[str, Any] = {}
    if pki is not None:
        tls_fields = {
            "cert": pki.ven_cert,
            "key": pki.ven_key,
            "ca_file": pki.ca,
            "vtn_fingerprint": pki.vtn_fingerprint,
        }
    config = Oadr2bConfig(
        vtn_url=vtn.url,
        ven_name="sef-bench",
        report_groups=("feeder-1",),
        report_interval_s=1,
        register_timeout_s=30,
        **tls_fields,
    )
    bridge = DrBridge(r.ems, rng_seed=1)
    try:
        await bridge.attach(Oadr2bAdapter(config, clock=r.clock))
        yield vtn, bridge
    finally:
        await bridge.close()
        await vtn.stop()
