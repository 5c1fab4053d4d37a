"""Support for the OpenADR 2.0b end-to-end acceptance tests (``test_acceptance_oadr2b.py``).

* :func:`e2e_stack`: the test's Mosquitto, an EMS **with a SQLite store** (so its command
  log is real) on a scaled clock, batteries of given ratings (BIS agents → SunSpec battery
  emulators over Modbus TCP) and CTA-2045 water heaters (UCM agents → SGD emulators over a
  real pty), in the groups of :mod:`dr_stack`;
* :func:`vtn_and_config`: the openleadr VTN of :mod:`oadr2b_vtn` (plain, or mutual TLS +
  XML signatures with SEF's PKI) and the VEN configuration that reaches it;
* :class:`CallTimes`: every ``EMS.call`` with its real time;
* :class:`Truth`: the emulators' own readings sampled in the background (what the agents
  read from the devices), for checking the reports the VTN receives;
* :func:`running_ven`: all of it, with the adapter registered through a ``DrBridge``.

Imported by bare name (tests/openadr is on sys.path while its tests run, and on mypy's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dr_stack import BATTERY_GROUPS, DrStack, _ready, stop_stack, ucm_on_pty
from oadr2b_vtn import Pki, TestVtn, make_pki

from sef.agents.bis import BISAgent
from sef.clock import ScaledClock
from sef.ems import EMS
from sef.ems.store import Store
from sef.emulators.battery import BatteryEmulator
from sef.emulators.waterheater import SGDEmulator
from sef.models.battery import BatteryParams
from sef.models.waterheater import WaterHeaterParams
from sef.models.waterheater_dr import DRMode
from sef.openadr import DrBridge, Oadr2bAdapter, Oadr2bConfig
from support import wait_for
from ucm_helpers import FAST

ENERGY_METHOD = "EnergyMethod"


@contextlib.asynccontextmanager
async def e2e_stack(
    broker_url: str,
    workdir: Path,
    *,
    ratings_kw: tuple[float, ...] = (8.0, 4.0),
    heaters: int = 1,
    speed: float = 60.0,
    soc: float = 0.6,
    heater_initial_c: float | None = None,
) -> AsyncIterator[DrStack]:
    """Start the stack; yields once every agent is online with nameplate and telemetry.

    ``ratings_kw``: one battery per rating (charge = discharge rating, kW; capacity 7.5 h
    of it, kWh), ``bat-1`` … in that order. ``heater_initial_c``: the tanks' starting
    temperature, °C (default: at the setpoint, so the elements stay off; 38 °C heats at
    4.5 kW for ~36 clock min). The EMS keeps its command log in ``workdir/ems.db``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    clock = ScaledClock(speed=speed)
    store = Store.open(f"sqlite:///{workdir / 'ems.db'}", durable=False)
    stack = DrStack(clock, EMS(broker_url, "ems-e2e", clock=clock, keepalive_s=5, store=store))
    try:
        await stack.ems.start()
        for i, rating in enumerate(ratings_kw, start=1):
            params = BatteryParams(rated_power_kw=rating, capacity_kwh=7.5 * rating)
            emulator = BatteryEmulator(
                port=0, clock=clock, params=params, soc=soc, tick_s=speed * 0.02
            )
            _, port = await emulator.start()
            stack.tasks.append(asyncio.create_task(emulator.run()))
            name = f"bat-{i}"
            stack.batteries[name] = emulator
            stack.agents[name] = BISAgent(
                name,
                broker_url,
                modbus_host="127.0.0.1",
                modbus_port=port,
                poll_s=0.1,
                clock=clock,
                groups=BATTERY_GROUPS,
                keepalive_s=2,
            )
        for i in range(1, heaters + 1):
            tank = WaterHeaterParams(initial_c=heater_initial_c)
            sgd = SGDEmulator(
                clock, params=tank, timing=FAST, draws=np.zeros(0), serial=f"SEF-WH-{i:04d}"
            )
            name = f"wh-{i}"
            stack.heaters[name] = sgd
            stack.agents[name] = await ucm_on_pty(sgd, name, broker_url, clock, stack.tasks)
        for agent in stack.agents.values():
            await agent.start()
        await wait_for(lambda: _ready(stack), 15.0)
        yield stack
    finally:
        await stop_stack(stack)
        store.close()


def energy_methods(stack: DrStack, sent_by_prefix: str = "openadr:") -> list[dict[str, Any]]:
    """The EMS command log's ``EnergyMethod`` rows whose sender starts with the prefix,
    oldest first."""
    assert stack.ems.store is not None
    rows = stack.ems.store.commands(limit=10_000)
    return [
        row
        for row in reversed(rows)
        if row["method"] == ENERGY_METHOD and str(row["sent_by"] or "").startswith(sent_by_prefix)
    ]


def sent_by(event_id: str) -> str:
    """The command log's sender of the bridge's commands for a 2.0b event."""
    return f"openadr:oadr2b:{event_id}"


# ---------------------------------------------------------------------- VTN


@contextlib.asynccontextmanager
async def vtn_and_config(
    tls: bool, workdir: Path, *, report_groups: tuple[str, ...] = ("feeder-1",)
) -> AsyncIterator[tuple[TestVtn, Oadr2bConfig, Pki | None]]:
    """A started openleadr VTN on loopback (poll 1 s; with ``tls``: mutual TLS, signed
    messages, only the VEN certificate registers) and the VEN configuration for it."""
    pki = make_pki(workdir / "ca") if tls else None
    vtn = TestVtn(pki=pki, expected_ven_fingerprint=pki.ven_fingerprint if pki else None)
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
        ven_name="sef-ems",
        report_groups=report_groups,
        report_interval_s=1,
        register_timeout_s=10,
        **tls_fields,
    )
    try:
        yield vtn, config, pki
    finally:
        await vtn.stop()


def on_clock(stack: DrStack, ahead_s: float) -> datetime:
    """The EMS clock ``ahead_s`` clock seconds from now, whole seconds, aware UTC (decision
    1 of issue 15: the test VTN stamps events on the EMS clock)."""
    return datetime.fromtimestamp(int(stack.clock.now() + ahead_s) + 1, UTC)


def real_mono_at(stack: DrStack, when: datetime) -> float:
    """``time.monotonic()`` at which the EMS clock reads ``when``, real s."""
    return time.monotonic() + stack.clock.to_real(when.timestamp() - stack.clock.now())


# ---------------------------------------------------------------------- calls


@dataclass
class CallTimes:
    """Every ``EMS.call`` (real time, target, args, sent_by), passed on unchanged."""

    ems: EMS
    calls: list[tuple[float, str, str, list[Any], str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        original = self.ems.call

        async def call(target: Any, interface: str, method: str, args: Any, **kw: Any) -> Any:
            self.calls.append(
                (time.monotonic(), str(target), method, list(args), kw.get("sent_by"))
            )
            return await original(target, interface, method, args, **kw)

        self.ems.call = call  # type: ignore[method-assign]

    def first(self, event_id: str) -> float | None:
        """``time.monotonic()`` of the first ``EnergyMethod`` call for a 2.0b event."""
        wanted = sent_by(event_id)
        return next(
            (t for t, _, method, _, by in self.calls if method == ENERGY_METHOD and by == wanted),
            None,
        )

    def sequences(self, target: str, event_id: str) -> list[list[list[Any]]]:
        """The sequences sent to ``target`` for a 2.0b event, in order."""
        wanted = sent_by(event_id)
        return [args[0] for _, t, _, args, by in self.calls if t == target and by == wanted]


# ---------------------------------------------------------------------- the devices' truth


@dataclass(frozen=True)
class Reading:
    """What the devices of a group report at one instant (EMS clock ``t_s``, Unix s).

    power_kw: Σ battery AC power (+ charge) and heater element power, kW;
    energy_kwh: Σ battery stored energy, kWh; voltage_v: mean battery DC bus voltage, V;
    current_a: Σ battery DC current (+ charge), A.
    """

    t_s: float
    power_kw: float
    energy_kwh: float
    voltage_v: float
    current_a: float


def _image(emulator: BatteryEmulator, model: int, name: str) -> float:
    value = emulator.image.get(model, name)
    return float(value) if isinstance(value, int | float) else float("nan")


def group_reading(stack: DrStack, batteries: list[str], heaters: list[str]) -> Reading:
    """The devices' own figures now: the battery emulators' SunSpec registers (802 W, V, A;
    713 WHAvail, the points the BIS reads) and the SGD emulators' element power."""
    bats = [stack.batteries[b] for b in batteries]
    power = sum(-_image(b, 802, "W") / 1000.0 for b in bats)
    power += sum(stack.heaters[h].power_w / 1000.0 for h in heaters)
    return Reading(
        t_s=stack.clock.now(),
        power_kw=power,
        energy_kwh=sum(_image(b, 713, "WHAvail") / 1000.0 for b in bats),
        voltage_v=sum(_image(b, 802, "V") for b in bats) / len(bats),
        current_a=sum(-_image(b, 802, "A") for b in bats),
    )


@dataclass
class Truth:
    """Samples :func:`group_reading` every ``step_s`` real s while running."""

    stack: DrStack
    batteries: list[str]
    heaters: list[str]
    step_s: float = 0.02
    readings: list[Reading] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.readings.append(group_reading(self.stack, self.batteries, self.heaters))
            await asyncio.sleep(self.step_s)

    def start(self) -> Truth:
        """Start sampling."""
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def span(self, what: str, t0_s: float, t1_s: float) -> tuple[float, float] | None:
        """(min, max) of ``what`` over the readings with ``t0_s <= t_s <= t1_s``."""
        values = [getattr(r, what) for r in self.readings if t0_s <= r.t_s <= t1_s]
        return (min(values), max(values)) if values else None


# ---------------------------------------------------------------------- the running VEN


@dataclass
class Ven:
    """The running end-to-end system of one test."""

    stack: DrStack
    vtn: TestVtn
    pki: Pki | None
    bridge: DrBridge
    adapter: Oadr2bAdapter
    calls: CallTimes
    ven_id: str
    sent_xml: list[str]

    def batteries_at(self, want_kw: dict[str, float]) -> bool:
        """Each named battery emulator's AC power is ``want_kw`` (kW, + charge)."""
        return all(
            self.stack.battery_kw(b) == pytest.approx(kw, abs=1e-6) for b, kw in want_kw.items()
        )

    def normal(self) -> bool:
        """Every battery idle and every heater in normal operation (at the emulators)."""
        return self.batteries_at({b: 0.0 for b in self.stack.batteries}) and all(
            self.stack.heater_mode(h) is DRMode.NORMAL for h in self.stack.heaters
        )


@contextlib.asynccontextmanager
async def running_ven(
    broker_url: str,
    workdir: Path,
    tls: bool,
    *,
    report_groups: tuple[str, ...] = ("feeder-1",),
    **stack_options: Any,
) -> AsyncIterator[Ven]:
    """Stack (``stack_options`` go to :func:`e2e_stack`) + VTN + adapter registered through
    the bridge."""
    async with (
        e2e_stack(broker_url, workdir / "stack", **stack_options) as stack,
        vtn_and_config(tls, workdir, report_groups=report_groups) as (vtn, config, pki),
    ):
        bridge = DrBridge(stack.ems, rng_seed=15)
        adapter = Oadr2bAdapter(config, clock=stack.clock)
        calls = CallTimes(stack.ems)
        await bridge.attach(adapter)
        try:
            ven_id = adapter.status().ven_id or ""
            assert ven_id in vtn.vens, "the VTN registered no such VEN"
            if pki is not None:  # the TLS client certificate the VTN saw is the VEN's
                assert vtn.vens[ven_id]["fingerprint"] == pki.ven_fingerprint
            ven = Ven(stack, vtn, pki, bridge, adapter, calls, ven_id, [])
            adapter._client.add_hook("before_send_xml", ven.sent_xml.append)
            yield ven
            status = adapter.status()  # every exchange with the VTN went through
            assert status.registered and status.errors == 0, status
            assert bridge.executor.calls_failed == 0  # every device answered its command
            if pki is not None:  # every message the VEN sent is signed (XMLDSig)
                assert ven.sent_xml and all("SignatureValue" in x for x in ven.sent_xml)
        finally:
            await bridge.close()


async def reached_by(
    predicate: Any, deadline_mono: float, *, grace_s: float = 3.0, step_s: float = 0.005
) -> float:
    """Wait until ``predicate()``; return the ``time.monotonic()`` it first held (waits
    ``grace_s`` past ``deadline_mono`` so a late arrival is measured, not cut off)."""
    await wait_for(predicate, max(0.1, deadline_mono + grace_s - time.monotonic()), step_s)
    return time.monotonic()
