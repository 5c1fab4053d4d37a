"""The UCM (Universal Communication Module): ``edu.pdx.powerlab.demo`` ⇄ CTA-2045.

The UCM drives a CTA-2045 water heater (an SGD, or SEF's SGD emulator) over a serial
port (19200 8N1; a pty path works too) or CTA-2045-over-TCP, and implements the demo
interface on the bus. Each event of an ``EnergyMethod`` sequence becomes one Basic DR
message; its duration goes into the message's duration byte (``n`` = 2·n² s, rounded
**up** so an event is never shortened; 0 = "until further notice"; > 129 032 s = 0xFF):

=============  =========================  ==============================================
event          CTA-2045 message           why
=============  =========================  ==============================================
shed           Shed ``01 nn``             curtail (setpoint setback); rate ignored
endshed        End Shed ``02 00``         back to normal operation
idle           End Shed ``02 00``         "normal operation" is a water heater's idle
charge         Load Up ``17 nn``          heat now (store energy); rate ignored: a
                                          resistance heater has one power level
discharge      Critical Peak ``0A nn``    a water heater cannot deliver energy; the
                                          closest is the deepest comfort-preserving
                                          curtailment; rate ignored
=============  =========================  ==============================================

Grid Emergency (``0B``, element lockout) is not reachable from the demo interface.
The sequencer also enforces every timed event's end on the clock: when the last timed
event of a sequence ends, the UCM sends End Shed (the duration byte only bounds the
event should the UCM die). A new call replaces the running event with its own message.

Timing (real seconds; the link is real I/O whatever the clock's speed): Outside Comm
Status ``0E 01`` at connect and every ``heartbeat_s`` (default 30 s; the notes ask for
≤ 60 s, the SGD gives up after ~300 s); Operational State Query and Commodity Read
every ``poll_s`` (default 1 s), each followed by a ``Telemetry`` publish.

Faults: a link error (no link ACK after 3 tries, no application response in 3 s, the
pty or TCP peer closing, the serial port vanishing) sets ``Link`` to ``"down"`` with
``Link_Fault`` at once; a closed port is noticed immediately, a silent SGD
``link_timeout_s`` (2.5 s) after its last answer (at least ``poll_s`` + 0.5 s). The
UCM reopens the port with backoff (0.5 s doubling to ``max_backoff_s``), redoes the
start-up exchange, and re-sends the running event with its remaining duration. A
customer override (``11 01`` from the SGD) is App-ACKed and reported (``Override``); so
is an App NAK (``Refused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from sef.agents._declare import AboutInfo
from sef.agents._der import DERAgent
from sef.bus import BrokerURL
from sef.clock import Clock
from sef.interface import DEMO_INTERFACE, Command, EnergyEvent, Variant
from sef.protocols import cta2045 as cta

__all__ = ["UCMAgent", "event_message", "state_name"]

log = logging.getLogger("sef.agent.ucm")

_OPTED_OUT = {cta.OperationalState.IDLE_OPTED_OUT, cta.OperationalState.RUNNING_OPTED_OUT}
_CTA_EPOCH_UNIX = int(cta.CTA_EPOCH.timestamp())


def event_message(cmd: Command, duration_s: float) -> cta.BasicMessage:
    """The Basic DR message for a demo-interface command lasting ``duration_s`` s (0 = open)."""
    code = cta.encode_duration(duration_s) if duration_s > 0 else cta.DURATION_UNSPECIFIED
    if cmd is Command.SHED:
        return cta.Shed(code)
    if cmd is Command.CHARGE:
        return cta.LoadUp(code)
    if cmd is Command.DISCHARGE:
        return cta.CriticalPeak(code)
    return cta.EndShed()


def state_name(code: int) -> str:
    """Name of an operational state code (``STATE_<n>`` when unknown)."""
    try:
        return cta.OperationalState(code).name
    except ValueError:
        return f"STATE_{code}"


class UCMAgent(DERAgent):
    """Water-heater agent over a CTA-2045 link.

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        serial_port: serial device or pty slave path (exclusive with ``tcp``).
        tcp: ``(host, port)`` of a CTA-2045-over-TCP SGD (exclusive with ``serial_port``).
        poll_s: real seconds between state/commodity polls (and telemetry publishes).
        heartbeat_s: real seconds between Outside Comm Status messages (≤ 60).
        max_backoff_s: longest real wait between reconnection attempts.
        link_timeout_s: the link is down when the SGD has not answered for this long,
            real s (a request gets at least 0.5 s); raise it for SGDs slower than ~1 s.
        timing: link timing (default: the CTA-2045 values).
    """

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: BrokerURL | str, *,
                 serial_port: str | None = None, tcp: tuple[str, int] | None = None,
                 poll_s: float = 1.0, heartbeat_s: float = 30.0, max_backoff_s: float = 4.0,
                 link_timeout_s: float = 2.5,
                 timing: cta.LinkTiming | None = None, clock: Clock | None = None,
                 groups: Sequence[str] = (), keepalive_s: int = 10) -> None:
        super().__init__(agent_id, broker, clock=clock, groups=groups, keepalive_s=keepalive_s,
                         about=AboutInfo(app_name="SEF UCM", model_number="sef-ucm",
                                         description="water-heater agent over CTA-2045"))
        self.serial_port, self.tcp = serial_port, tcp
        self._check_target()
        self.poll_s, self.heartbeat_s, self.max_backoff_s = poll_s, heartbeat_s, max_backoff_s
        self.link_timeout_s = link_timeout_s
        self._last_ok = 0.0  # loop time of the last answer from the SGD, real s
        self.timing = timing
        self.link: cta.Link | None = None
        self.link_up = False
        self.link_fault = ""
        self.link_changes: list[tuple[float, bool]] = []  # (time.monotonic(), up)
        self.intermediate = False
        self.device_info: cta.GetInformationReply | None = None
        self.op_state: int | None = None
        self.power_w: float | None = None
        self.tank_temp_c: float | None = None
        self._polls = 0
        self.energy_used_wh: float | None = None
        self.stored_wh: float | None = None
        self.capacity_wh: float | None = None
        self.override_msg = False
        self.refused = ""
        self.last_message: cta.BasicMessage | None = None
        self.sent: list[cta.BasicMessage] = []  # DR messages delivered, for tests
        self._dirty = True
        self._generation = 0
        self._next_heartbeat = 0.0
        self._event_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def _check_target(self) -> None:
        if (self.serial_port is None) == (self.tcp is None):
            raise ValueError("give exactly one of serial_port and tcp")

    @property
    def override(self) -> bool:
        """Customer override in effect (``11 01`` received, or an Opted Out state)."""
        return self.override_msg or self.op_state in _OPTED_OUT

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName",
                          self.about.fields(self.agent_id)["DeviceName"])
        self._publish()
        self._task = asyncio.create_task(self._run(), name=f"ucm:{self.agent_id}")

    async def on_stop(self) -> None:
        self._stopping = True
        await self.sequencer.cancel()
        for task in (self._task, *self._tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.link is not None:
            await self.link.close()

    def retarget(self, *, serial_port: str | None = None,
                 tcp: tuple[str, int] | None = None) -> None:
        """Use another port from now on (e.g. a new pty path); the link is reopened."""
        self.serial_port, self.tcp = serial_port, tcp
        self._check_target()
        self._lost(cta.LinkClosed("port changed"))


    # -- events -------------------------------------------------------------------------
    async def _apply(self, event: EnergyEvent) -> None:
        self._generation += 1
        self._dirty = True
        if self.link_up and self.link is not None:
            try:
                await self._send_event(self.link)
            except cta.CtaError as exc:
                self._lost(exc)
        self._publish()
        self._wake.set()

    async def _send_event(self, link: cta.Link) -> None:
        async with self._event_lock:
            if not self._dirty:
                return  # sent meanwhile by the other task
            generation = self._generation
            ends = self.sequencer.current_ends
            remaining = 0.0 if ends is None else max(1.0, ends - self.clock.now())
            message = event_message(self.sequencer.current.cmd, remaining)
            reply = await self._request(link, message)
            self.last_message = message
            self.sent.append(message)
            del self.sent[:-100]
            self.refused = ""
            if isinstance(reply, cta.AppNak):
                self.refused = f"{type(message).__name__}: App NAK {reply.reason}"
                log.warning("%s: SGD refused %r: App NAK %s", self.agent_id, message,
                            reply.reason)
                if reply.reason == cta.AppNakReason.CUSTOMER_OVERRIDE:
                    self.override_msg = True
            if generation == self._generation:
                self._dirty = False

    # -- link ----------------------------------------------------------------------------
    async def _open(self) -> cta.Transport:
        if self.serial_port is not None:
            return cta.open_serial(self.serial_port)
        assert self.tcp is not None
        return await asyncio.wait_for(cta.open_tcp(*self.tcp), 2.0)

    async def _connect(self) -> cta.Link:
        transport = await self._open()
        link = cta.Link(transport, timing=self.timing, name=f"UCM {transport.name}")
        await link.start()
        self.link = link
        self._spawn(self._receive(link))
        if not await link.query_type_supported(0x08, 0x01):
            raise cta.CtaError("the SGD does not support Basic DR")
        self.intermediate = await link.query_type_supported(0x08, 0x02)
        if self.intermediate:
            with contextlib.suppress(cta.LinkNak):
                info = await link.request(cta.GetInformationRequest(), cta.GetInformationReply)
                self.device_info = info
                log.info("%s: SGD type %d, model %r, serial %r", self.agent_id,
                         info.device_type, info.model, info.serial)
        self._next_heartbeat = 0.0
        self._last_ok = asyncio.get_running_loop().time()
        self._dirty = True  # (re-)send the running event
        return link

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            self._wake.clear()
            try:
                link = self.link if self.link is not None else await self._connect()
                await self._exchange(link)
                self._set_up()
                backoff, delay = 0.5, self.poll_s
            except (cta.CtaError, OSError, TimeoutError) as exc:
                self._lost(exc)
                delay, backoff = backoff, min(2 * backoff, self.max_backoff_s)
            except Exception as exc:  # keep trying whatever the device does
                log.exception("%s: unexpected error on the link", self.agent_id)
                self._lost(exc)
                delay = backoff
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _exchange(self, link: cta.Link) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_heartbeat:
            await self._request(link, cta.OutsideCommStatus(cta.CommStatus.CONNECTED))
            self._next_heartbeat = now + self.heartbeat_s
        if self._dirty:
            await self._send_event(link)
        state = await self._request(link, cta.OperationalStateQuery(),
                                    cta.OperationalStateResponse)
        if isinstance(state, cta.OperationalStateResponse):
            self.op_state = state.state
        if self.intermediate:
            reply = await self._request(link, cta.CommodityReadRequest(),
                                        (cta.CommodityReadReply, cta.IntermediateReply))
            if isinstance(reply, cta.CommodityReadReply):
                self._read_commodities(reply)
            if self._polls % TEMPERATURE_EVERY == 0:  # each exchange costs ~0.2 s of link
                temp = await self._request(link, cta.GetPresentTemperatureRequest(),
                                           (cta.PresentTemperatureReply, cta.IntermediateReply))
                if isinstance(temp, cta.PresentTemperatureReply):
                    self.tank_temp_c = _to_celsius(temp.temperature, temp.units)
        self._polls += 1
        self._publish()

    async def _request(self, link: cta.Link, message: cta.Message,
                       expect: cta.Expectation = None) -> cta.Message:
        """``link.request`` bounded so that a silent SGD is noticed ``link_timeout_s`` after
        its last answer."""
        loop = asyncio.get_running_loop()
        budget = max(0.5, self._last_ok + self.link_timeout_s - loop.time())
        try:
            reply = await asyncio.wait_for(link.request(message, expect), budget)
        except TimeoutError:
            raise cta.ResponseTimeout(f"no answer from the SGD to {message!r} within "
                                      f"{budget:.1f} s") from None
        self._last_ok = loop.time()
        return reply

    def _read_commodities(self, reply: cta.CommodityReadReply) -> None:
        power = reply.get(cta.CommodityCode.ELECTRICITY_CONSUMED)
        if power is not None:
            self.power_w, self.energy_used_wh = float(power.instantaneous), float(
                power.cumulative)
        total = reply.get(cta.CommodityCode.TOTAL_ENERGY_STORAGE)
        if total is not None:
            self.capacity_wh = float(total.cumulative)
        present = reply.get(cta.CommodityCode.PRESENT_ENERGY_STORAGE)
        if present is not None:
            self.stored_wh = float(present.cumulative)

    async def _receive(self, link: cta.Link) -> None:
        """Answer what the SGD starts: override, unsolicited state, UTC time, sleep/wake."""
        try:
            async for message in link:
                try:
                    await self._unsolicited(link, message)
                except cta.CtaError as exc:
                    log.warning("%s: answer to %r failed: %s", self.agent_id, message, exc)
                except Exception:  # odd input must not end the receive loop
                    log.exception("%s: error handling %r", self.agent_id, message)
        finally:
            if self.link is link and not self._stopping:
                self._lost(cta.LinkClosed(f"{link.name} closed"))

    async def _unsolicited(self, link: cta.Link, message: cta.Message) -> None:
        reply: cta.Message | None = None
        if isinstance(message, cta.CustomerOverride):
            log.info("%s: customer override %s", self.agent_id,
                     "in effect" if message.active else "ended")
            self.override_msg = message.active
            reply = cta.AppAck(message.OPCODE)
        elif isinstance(message, cta.OperationalStateResponse):
            self.op_state = message.state
            reply = cta.AppAck(message.OPCODE)
        elif isinstance(message, cta.Sleep | cta.Wake):
            reply = cta.AppAck(message.OPCODE)
        elif isinstance(message, cta.GetUtcTimeRequest):
            reply = cta.UtcTimeReply(utc_seconds=max(0, int(self.clock.now()) - _CTA_EPOCH_UNIX))
        elif isinstance(message, cta.BasicMessage) and not isinstance(
                message, cta.AppAck | cta.AppNak):
            reply = cta.AppNak(cta.AppNakReason.OPCODE1_NOT_SUPPORTED)
        elif isinstance(message, cta.IntermediateMessage) and not message.opcodes[1] & 0x80:
            op1, op2 = message.opcodes
            reply = cta.IntermediateReply(op1, op2 | 0x80, cta.ResponseCode.NOT_IMPLEMENTED)
        self._publish()
        if reply is not None:
            await link.send(reply)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _set_up(self) -> None:
        if not self.link_up:
            log.info("%s: CTA-2045 link up", self.agent_id)
            self.link_up, self.link_fault = True, ""
            self.link_changes.append((time.monotonic(), True))
            self._publish()

    def _lost(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self.link_up or text != self.link_fault:
            log.warning("%s: CTA-2045 link down: %s", self.agent_id, text)
        if self.link_up:
            self.link_changes.append((time.monotonic(), False))
        self.link_up, self.link_fault, self._dirty = False, text, True
        link, self.link = self.link, None
        if link is not None and not self._stopping:
            self._spawn(link.close())
        self._publish()
        self._wake.set()

    def telemetry(self) -> dict[str, Variant]:
        """The ``Telemetry`` value (``a{sv}``): powers in W, energies in Wh."""
        event = self.sequencer.current
        values: dict[str, Variant] = {
            "TimeStamp": Variant("u", max(0, int(self.clock.now()))),
            "Event": Variant("s", event.cmd.value),
            "Event_Rate_kW": Variant("n", event.rate_kw),
            "Link": Variant("s", "up" if self.link_up else "down"),
            "Override": Variant("b", self.override),
        }
        if self.link_fault:
            values["Link_Fault"] = Variant("s", self.link_fault[:200])
        if self.refused:
            values["Refused"] = Variant("s", self.refused)
        if self.last_message is not None:
            values["CTA_Message"] = Variant("s", self.last_message.encode().hex(" "))
        if self.op_state is not None:
            values["Op_State"] = Variant("s", state_name(self.op_state))
            values["Op_State_Code"] = Variant("y", self.op_state & 0xFF)
        for key, reading in (("Power_W", self.power_w), ("Energy_Used_Wh", self.energy_used_wh),
                             ("Energy_Stored_Wh", self.stored_wh),
                             ("Energy_Capacity_Wh", self.capacity_wh),
                             ("Tank_Temp_C", self.tank_temp_c)):
            if reading is not None:
                values[key] = Variant("d", reading)
        if self.device_info is not None:
            values["Device_Model"] = Variant("s", self.device_info.model or "")
            values["Device_Serial"] = Variant("s", self.device_info.serial or "")
        return values

    def _publish(self) -> None:
        self.set_property(DEMO_INTERFACE, "Telemetry", self.telemetry())


TEMPERATURE_EVERY = 4
"""Poll the present tank temperature on every 4th exchange (telemetry ``Tank_Temp_C``)."""


def _to_celsius(value: float, units: int) -> float:
    """A CTA-2045 temperature in °C (``units`` 0 = °F, 1 = °C)."""
    return round((value - 32.0) * 5.0 / 9.0, 2) if units == cta.TemperatureUnits.FAHRENHEIT \
        else float(value)
