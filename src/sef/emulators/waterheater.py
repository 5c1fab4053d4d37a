"""SGD emulator: the water-heater model behind the SGD side of a CTA-2045 link.

One :class:`~sef.models.waterheater.WaterHeaterModel` (``n = 1``) is stepped on the clock
(``tick_s`` real seconds apart, and before every answer) with a hot-water draw profile
indexed by the clock's UTC time of day (default: the DOE 24-h medium pattern). A
:class:`~sef.protocols.cta2045.Link` on the SGD side answers the UCM:

==========================================  ==================================================
received                                    answer
==========================================  ==================================================
Shed / Critical Peak / Grid Emergency       App ACK, event applied with the decoded duration
                                            (2·n² s, clock s; 0 = until End Shed); App NAK 05
                                            instead while the customer override is in effect
                                            and ``nak_on_override`` is set
Load Up / End Shed                          App ACK, applied
Outside Comm Status ``0E xx``               App ACK; feeds the comm watchdog (below)
Customer Override ``11 xx`` (VB accepts it) App ACK, override set / cleared
Simple Time Sync, Pending Event Time/Type   App ACK (informational)
Power Level, prices, Time Remaining,        App NAK 01 (opcode1 not supported)
Grid Guidance, Sleep, Wake
Operational State Query ``12 00``           Operational State Response ``13 ss`` (model state)
unknown Basic opcode1                       link ACK, App NAK ``04 01`` (done by the Link)
Intermediate DR requests                    see :mod:`._waterheater_intermediate` (setpoints,
                                            temperature offset, Advanced Load Up, commodities,
                                            device info, UTC time)
==========================================  ==================================================

The link runs in real time, so the comm watchdog does too: with no Outside Comm Status
for ``comm_timeout_s`` **real** seconds (default 300 s, reference notes §5.2) the running
event ends. (The model's own watchdog counts clock seconds and is disabled here.)

A customer override is pressed with :meth:`SGDEmulator.press_override` (the ``sef emulate
waterheater`` process toggles it on ``SIGUSR1``): the model opts out of curtailment
(states 11 / 12) and the SGD sends ``11 01`` (``11 00`` when released) to the UCM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sef.clock import Clock, default_clock
from sef.models.draws import doe_medium_draw_profile
from sef.models.waterheater import WaterHeaterModel, WaterHeaterParams
from sef.models.waterheater_dr import DRSettings
from sef.protocols import cta2045 as cta

from ._waterheater_intermediate import IntermediateSide, c_to_f, f_to_c

__all__ = ["SGDEmulator", "c_to_f", "f_to_c", "run_sgd_emulator"]

log = logging.getLogger("sef.emulator.waterheater")

_DAY_S = 86400.0
_MIN_STEP_S = 1e-3
_INFORMATIONAL = (cta.SimpleTimeSync, cta.PendingEventTime, cta.PendingEventType)


class SGDEmulator:
    """One emulated CTA-2045 electric water heater (model + link handler).

    Args:
        clock: time source (default :func:`sef.clock.default_clock`).
        params: tank parameters (default: 50-gal, 2 nodes, 2 × 4.5 kW).
        dr: DR behaviour (its ``heartbeat_timeout_s`` is replaced, see module doc).
        draws: hot-water flow per ``draw_step_s`` step of one day, L/min, from 00:00 UTC
            (default: DOE medium pattern); ``()`` for no draws.
        draw_step_s: length of one ``draws`` step, clock s.
        tick_s: real seconds between background model steps.
        comm_timeout_s: comm watchdog, real s (``inf`` disables it).
        nak_on_override: answer curtailment with App NAK 05 while overridden (else ACK).
        serial: serial number reported by GetInformation (≤ 16 ASCII characters).
        timing: link timing (default: the CTA-2045 values).
    """

    vendor_id = 0x5345  # "SE"
    model_name = "SEF-EWH-50"
    device_type: int = cta.DeviceType.ELECTRIC_WATER_HEATER
    """CTA-2045 device type in GetInformation (the UCM's ``Heater_Type``): 0x0003 (heat
    pump) for a tank with ``heater_type`` ``"heat_pump"``, else 0x0002 (electric)."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        params: WaterHeaterParams | None = None,
        dr: DRSettings | None = None,
        draws: NDArray[np.float64] | None = None,
        draw_step_s: float = 60.0,
        tick_s: float = 0.05,
        comm_timeout_s: float = 300.0,
        nak_on_override: bool = False,
        serial: str = "SEF-WH-0001",
        timing: cta.LinkTiming | None = None,
    ) -> None:
        self.clock = clock or default_clock()
        settings = dataclasses.replace(dr or DRSettings(), heartbeat_timeout_s=math.inf)
        params = params or WaterHeaterParams()
        self.model = WaterHeaterModel(params, n=1, dr=settings)
        if _is_heat_pump(params):
            self.device_type = cta.DeviceType.HEAT_PUMP_WATER_HEATER
        self.draws = (
            doe_medium_draw_profile(draw_step_s)
            if draws is None
            else np.asarray(draws, dtype=np.float64)
        )
        self.draw_step_s = draw_step_s
        self.tick_s = tick_s
        self.comm_timeout_s = comm_timeout_s
        self.nak_on_override = nak_on_override
        self.serial = serial
        self.timing = timing
        self.link: cta.Link | None = None
        self.received: list[cta.Message] = []  # every application message, for tests
        self.intermediate = IntermediateSide(self)  # Intermediate DR answers and state
        self.override_acks = 0  # App ACKs 03 11 received for our 11 xx messages
        self.started_s = self._last_s = self.clock.now()  # clock s of the model's t_s = 0
        self._last_heartbeat: float | None = None  # loop time (real s)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- model ---------------------------------------------------------------------
    @property
    def power_w(self) -> float:
        """Mean element power over the last model step, W."""
        return float(self.model.power_kw[0]) * 1000.0

    @property
    def state(self) -> int:
        """CTA-2045 operational state code of the model."""
        return int(self.model.operational_state[0])

    @property
    def override(self) -> bool:
        """Customer override in effect."""
        return bool(self.model.override[0])

    def draw_at(self, t_s: float) -> float:
        """Hot-water flow at clock time ``t_s`` (Unix s), L/min."""
        if len(self.draws) == 0:
            return 0.0
        index = int((t_s % _DAY_S) // self.draw_step_s) % len(self.draws)
        return float(self.draws[index])

    def advance(self) -> None:
        """Step the model from the last step to the clock's now (draw-step aligned)."""
        now = self.clock.now()
        t = self._last_s
        if now - t < _MIN_STEP_S:
            return
        if now - t > _DAY_S:  # a long pause (suspended process): do not replay days
            t = now - _DAY_S
        while now - t >= _MIN_STEP_S:
            boundary = (math.floor(t / self.draw_step_s) + 1) * self.draw_step_s
            end = min(now, boundary)
            self.model.step(end - t, self.draw_at(t))
            t = end
        self._last_s = now
        self._check_watchdog()

    def _check_watchdog(self) -> None:
        if self._last_heartbeat is None:
            return
        if asyncio.get_running_loop().time() - self._last_heartbeat > self.comm_timeout_s:
            log.warning(
                "SGD: no Outside Comm Status for %.0f s: back to normal", self.comm_timeout_s
            )
            self.model.end_shed()
            self.intermediate.end_advanced_load_up()
            self._last_heartbeat = None

    async def run_model(self) -> None:
        """Step the model every ``tick_s`` real seconds until cancelled."""
        while True:
            self.advance()
            await asyncio.sleep(self.tick_s)

    # -- customer override ------------------------------------------------------------
    def press_override(self, on: bool | None = None) -> None:
        """Set (``True``), clear (``False``) or toggle (``None``) the customer override,
        and tell the UCM with ``11 01`` / ``11 00``."""
        active = (not self.override) if on is None else on
        self.advance()
        self.model.customer_override(None, active)
        log.info("SGD: customer override %s", "on" if active else "off")
        if self.link is not None and not self.link.closed:
            self._spawn(self._notify_override(self.link, active))

    async def _notify_override(self, link: cta.Link, active: bool) -> None:
        try:
            await link.request(cta.CustomerOverride(active), cta.AppAck)
            self.override_acks += 1
        except cta.CtaError as exc:
            log.warning("SGD: customer override not acknowledged: %s", exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- link --------------------------------------------------------------------------
    async def serve(self, transport: cta.Transport) -> None:
        """Answer the UCM over ``transport`` until the link closes."""
        link = cta.Link(transport, timing=self.timing, name=f"SGD {transport.name}")
        self.link = link
        try:
            async with link:
                async for message in link:
                    try:
                        reply = self.handle(message)
                    except Exception:  # a bug or odd value must not end the emulator
                        log.exception("SGD: error handling %r", message)
                        continue
                    if reply is not None:
                        try:
                            await link.send(reply)
                        except cta.CtaError as exc:
                            log.warning("SGD: reply %r not delivered: %s", reply, exc)
        finally:
            if self.link is link:
                self.link = None

    def handle(self, message: cta.Message) -> cta.Message | None:
        """The application answer to ``message`` (``None``: nothing to send)."""
        self.received.append(message)
        del self.received[:-200]
        self.advance()
        if isinstance(message, cta.BasicMessage):
            return self._basic(message)
        if isinstance(message, cta.IntermediateMessage):
            return self.intermediate.handle(message)
        return None

    def _basic(self, msg: cta.BasicMessage) -> cta.Message | None:
        m = self.model
        op = msg.OPCODE
        if isinstance(msg, cta.Shed | cta.CriticalPeak | cta.GridEmergency):
            if self.override and self.nak_on_override:
                return cta.AppNak(cta.AppNakReason.CUSTOMER_OVERRIDE)
            start = (
                m.shed
                if isinstance(msg, cta.Shed)
                else m.critical_peak
                if isinstance(msg, cta.CriticalPeak)
                else m.grid_emergency
            )
            start(None, msg.duration_s or None)
            self.intermediate.end_advanced_load_up()  # a new event replaces it
        elif isinstance(msg, cta.LoadUp):
            m.load_up(None, msg.duration_s or None)
            self.intermediate.end_advanced_load_up()
        elif isinstance(msg, cta.EndShed):
            m.end_shed()
            self.intermediate.end_advanced_load_up()
        elif isinstance(msg, cta.OutsideCommStatus):
            m.heartbeat(None, msg.value)
            if msg.value == cta.CommStatus.NO_CONNECTION:
                self.intermediate.end_advanced_load_up()
            self._last_heartbeat = (
                None
                if msg.value == cta.CommStatus.NO_CONNECTION
                else asyncio.get_running_loop().time()
            )
        elif isinstance(msg, cta.CustomerOverride):
            m.customer_override(None, msg.active)
        elif isinstance(msg, cta.OperationalStateQuery):
            return cta.OperationalStateResponse(self.state)
        elif not isinstance(msg, _INFORMATIONAL):
            # Power Level, prices, …: App NAK 04 01; App ACK / NAK / state responses: None
            return cta.not_implemented_answer(msg)
        log.info("SGD: %r applied, state %d", msg, self.state)
        return cta.AppAck(op)


async def run_sgd_emulator(
    *,
    pty: bool = False,
    serial: str | None = None,
    tcp_port: int | None = None,
    host: str = "127.0.0.1",
    emulator: SGDEmulator | None = None,
    clock: Clock | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run an SGD emulator until cancelled, on exactly one transport.

    Args:
        pty: create a pseudo-terminal; ``on_ready`` gets its slave path (give it to the UCM).
        serial: open this serial port (19200 8N1); reopened 1 s after it fails.
        tcp_port: listen on ``host:tcp_port`` (0 = free port); one UCM at a time, a new
            connection replaces the old one. ``on_ready`` gets ``HOST:PORT``.
        host: address to listen on with ``tcp_port``.
        emulator: the emulator to run (default: a new :class:`SGDEmulator` on ``clock``).
        clock: the clock of a new emulator (default: ``SEF_CLOCK`` or real time).
        on_ready: called once with where the UCM connects (pty path, port or ``HOST:PORT``).
    """
    if sum((pty, serial is not None, tcp_port is not None)) != 1:
        raise ValueError("choose exactly one of pty, serial, tcp_port")
    sgd = emulator or SGDEmulator(clock)
    stepper = asyncio.create_task(sgd.run_model(), name="sgd-model")
    ready = on_ready or (lambda where: None)
    try:
        if pty:
            transport = cta.open_pty()
            ready(transport.slave_path)
            await sgd.serve(transport)
        elif serial is not None:
            first = True
            while True:
                try:
                    port = cta.open_serial(serial)
                except OSError as exc:
                    log.warning("SGD: cannot open %s: %s", serial, exc)
                else:
                    if first:
                        ready(serial)
                        first = False
                    await sgd.serve(port)
                await asyncio.sleep(1.0)
        else:
            await _serve_tcp(sgd, host, tcp_port or 0, ready)
    finally:
        stepper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stepper


async def _serve_tcp(sgd: SGDEmulator, host: str, port: int, ready: Callable[[str], None]) -> None:
    async with await cta.listen_tcp(host, port) as listener:
        ready(f"{listener.host}:{listener.port}")
        current: asyncio.Task[None] | None = None
        try:
            while True:
                connection = await listener.accept()
                if current is not None:
                    current.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await current
                current = asyncio.create_task(sgd.serve(connection), name="sgd-link")
        finally:
            if current is not None:
                current.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await current


def _is_heat_pump(params: WaterHeaterParams) -> bool:
    """The tank's ``heater_type`` (one value, or the first device's) is ``heat_pump``."""
    kind = getattr(params, "heater_type", "resistance")
    return (kind if isinstance(kind, str) else next(iter(kind), "")) == "heat_pump"
