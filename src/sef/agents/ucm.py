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
from collections.abc import Sequence
from typing import ClassVar

from sef.agents._declare import AboutInfo
from sef.agents._der import DERAgent
from sef.agents._device import DeviceAdapter, DeviceStatus
from sef.bus import BrokerURL
from sef.clock import Clock
from sef.interface import Command, EnergyEvent, Variant
from sef.protocols import cta2045 as cta
from sef.security import Security
from sef.tasks import TaskSet

__all__ = ["CtaWaterHeater", "UCMAgent", "event_message"]

log = logging.getLogger("sef.agent.ucm")

TEMPERATURE_EVERY = 4
"""Poll the present tank temperature on every 4th exchange (telemetry ``Tank_Temp_C``)."""
_OPTED_OUT = {cta.OperationalState.IDLE_OPTED_OUT, cta.OperationalState.RUNNING_OPTED_OUT}


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


class CtaWaterHeater(DeviceAdapter):
    """A CTA-2045 water heater (SGD) on a serial port, a pty or CTA-2045-over-TCP."""

    comm_errors: ClassVar[tuple[type[BaseException], ...]] = (cta.CtaError, OSError, TimeoutError)

    def __init__(
        self,
        *,
        serial_port: str | None = None,
        tcp: tuple[str, int] | None = None,
        heartbeat_s: float = 30.0,
        link_timeout_s: float = 2.5,
        timing: cta.LinkTiming | None = None,
    ) -> None:
        self.retarget(serial_port=serial_port, tcp=tcp)
        self.heartbeat_s, self.link_timeout_s, self.timing = heartbeat_s, link_timeout_s, timing
        self.link: cta.Link | None = None
        self.intermediate = False
        self.device_info: cta.GetInformationReply | None = None
        self.op_state: int | None = None
        self.power_w: float | None = None
        self.tank_temp_c: float | None = None
        self.energy_used_wh: float | None = None
        self.stored_wh: float | None = None
        self.capacity_wh: float | None = None
        self.override_msg = False
        self.refused = ""
        self.last_message: cta.BasicMessage | None = None
        self._polls = 0
        self._last_ok = 0.0  # loop time of the last answer from the SGD, real s
        self._next_heartbeat = 0.0
        self._receivers = TaskSet("ucm")

    def retarget(
        self, *, serial_port: str | None = None, tcp: tuple[str, int] | None = None
    ) -> None:
        """Use another port from the next connection on (e.g. a new pty path)."""
        if (serial_port is None) == (tcp is None):
            raise ValueError("give exactly one of serial_port and tcp")
        self.serial_port, self.tcp = serial_port, tcp

    @property
    def override(self) -> bool:
        """Customer override in effect (``11 01`` received, or an Opted Out state)."""
        return self.override_msg or self.op_state in _OPTED_OUT

    async def connect(self) -> None:
        """Open the port, start the link, check Basic DR support, ask for the device info."""
        transport: cta.Transport
        if self.serial_port is not None:
            transport = cta.open_serial(self.serial_port)
        else:
            assert self.tcp is not None
            transport = await asyncio.wait_for(cta.open_tcp(*self.tcp), 2.0)
        self.link = link = cta.Link(transport, timing=self.timing, name=f"UCM {transport.name}")
        await link.start()
        self._receivers.spawn(self._receive(link), name=f"ucm-receive:{self.host.agent_id}")
        if not await link.query_type_supported(0x08, 0x01):
            raise cta.CtaError("the SGD does not support Basic DR")
        self.intermediate = await link.query_type_supported(0x08, 0x02)
        if self.intermediate:
            with contextlib.suppress(cta.LinkNak):
                info = await link.request(cta.GetInformationRequest(), cta.GetInformationReply)
                self.device_info = info
                log.info(
                    "%s: SGD type %d, model %r, serial %r",
                    self.host.agent_id,
                    info.device_type,
                    info.model,
                    info.serial,
                )
        self._next_heartbeat = 0.0
        self._last_ok = asyncio.get_running_loop().time()

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        """Send the event's Basic DR message with the time it has left (s, rounded up)."""
        assert self.link is not None
        message = event_message(event.cmd, 0.0 if left_s is None else max(1.0, left_s))
        reply = await self._request(self.link, message)
        self.last_message = message
        self.refused = ""
        if isinstance(reply, cta.AppNak):
            self.refused = f"{type(message).__name__}: App NAK {reply.reason}"
            log.warning("%s: SGD refused %r: App NAK %s", self.host.agent_id, message, reply.reason)
            self.override_msg |= reply.reason == cta.AppNakReason.CUSTOMER_OVERRIDE

    async def read(self) -> None:
        """Heartbeat when due, operational state, commodities, every 4th time the tank."""
        link = self.link
        assert link is not None
        now = asyncio.get_running_loop().time()
        if now >= self._next_heartbeat:
            await self._request(link, cta.OutsideCommStatus(cta.CommStatus.CONNECTED))
            self._next_heartbeat = now + self.heartbeat_s
        state = await self._request(link, cta.OperationalStateQuery(), cta.OperationalStateResponse)
        if isinstance(state, cta.OperationalStateResponse):
            self.op_state = state.state
        if self.intermediate:
            reply = await self._request(
                link, cta.CommodityReadRequest(), (cta.CommodityReadReply, cta.IntermediateReply)
            )
            if isinstance(reply, cta.CommodityReadReply):
                self._read_commodities(reply)
            if self._polls % TEMPERATURE_EVERY == 0:  # each exchange costs ~0.2 s of link
                temp = await self._request(
                    link,
                    cta.GetPresentTemperatureRequest(),
                    (cta.PresentTemperatureReply, cta.IntermediateReply),
                )
                if isinstance(temp, cta.PresentTemperatureReply):
                    self.tank_temp_c = temp.celsius
        self._polls += 1

    async def close(self) -> None:
        """Close the link and stop its receiver."""
        link, self.link = self.link, None
        if link is not None:
            await link.close()
        await self._receivers.close()

    async def _request(
        self, link: cta.Link, message: cta.Message, expect: cta.Expectation = None
    ) -> cta.Message:
        """``link.request`` bounded so that a silent SGD is noticed ``link_timeout_s`` after
        its last answer."""
        loop = asyncio.get_running_loop()
        budget = max(0.5, self._last_ok + self.link_timeout_s - loop.time())
        try:
            reply = await asyncio.wait_for(link.request(message, expect), budget)
        except TimeoutError:
            raise cta.ResponseTimeout(
                f"no answer from the SGD to {message!r} within {budget:.1f} s"
            ) from None
        self._last_ok = loop.time()
        return reply

    def _read_commodities(self, reply: cta.CommodityReadReply) -> None:
        power = reply.get(cta.CommodityCode.ELECTRICITY_CONSUMED)
        if power is not None:
            self.power_w = float(power.instantaneous)
            self.energy_used_wh = float(power.cumulative)
        total = reply.get(cta.CommodityCode.TOTAL_ENERGY_STORAGE)
        if total is not None:
            self.capacity_wh = float(total.cumulative)
        present = reply.get(cta.CommodityCode.PRESENT_ENERGY_STORAGE)
        if present is not None:
            self.stored_wh = float(present.cumulative)

    async def _receive(self, link: cta.Link) -> None:
        """Note and answer what the SGD starts: override, unsolicited state, UTC time..."""
        async for message in link:
            if isinstance(message, cta.CustomerOverride):
                log.info(
                    "%s: customer override %s",
                    self.host.agent_id,
                    "in effect" if message.active else "ended",
                )
                self.override_msg = message.active
            elif isinstance(message, cta.OperationalStateResponse):
                self.op_state = message.state
            try:
                self.host.changed()
                reply = cta.ucm_answer(message, self.host.clock.now())
                if reply is not None:
                    await link.send(reply)
            except cta.CtaError as exc:
                log.warning("%s: answer to %r failed: %s", self.host.agent_id, message, exc)
            except Exception:  # odd input must not end the receive loop
                log.exception("%s: error handling %r", self.host.agent_id, message)
        if self.link is link:  # the peer closed the link (not our close())
            self.host.device_lost(cta.LinkClosed(f"{link.name} closed"))

    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        """CTA-2045 keys: powers in W, energies in Wh."""
        values: dict[str, Variant] = {
            "Link": Variant("s", "up" if status.healthy else "down"),
            "Override": Variant("b", self.override),
        }
        if status.fault:
            values["Link_Fault"] = Variant("s", status.fault[:200])
        if self.refused:
            values["Refused"] = Variant("s", self.refused)
        if self.last_message is not None:
            values["CTA_Message"] = Variant("s", self.last_message.encode().hex(" "))
        if self.op_state is not None:
            values["Op_State"] = Variant("s", cta.state_name(self.op_state))
            values["Op_State_Code"] = Variant("y", self.op_state & 0xFF)
        for key, reading in (
            ("Power_W", self.power_w),
            ("Energy_Used_Wh", self.energy_used_wh),
            ("Energy_Stored_Wh", self.stored_wh),
            ("Energy_Capacity_Wh", self.capacity_wh),
            ("Tank_Temp_C", self.tank_temp_c),
        ):
            if reading is not None:
                values[key] = Variant("d", reading)
        if self.device_info is not None:
            values["Device_Model"] = Variant("s", self.device_info.model or "")
            values["Device_Serial"] = Variant("s", self.device_info.serial or "")
        return values


class UCMAgent(DERAgent[CtaWaterHeater]):
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

    def __init__(
        self,
        agent_id: str,
        broker: BrokerURL | str,
        *,
        serial_port: str | None = None,
        tcp: tuple[str, int] | None = None,
        poll_s: float = 1.0,
        heartbeat_s: float = 30.0,
        max_backoff_s: float = 4.0,
        link_timeout_s: float = 2.5,
        timing: cta.LinkTiming | None = None,
        clock: Clock | None = None,
        groups: Sequence[str] = (),
        keepalive_s: int = 10,
        security: Security | None = None,
        sign_telemetry: bool = False,
    ) -> None:
        device = CtaWaterHeater(
            serial_port=serial_port,
            tcp=tcp,
            heartbeat_s=heartbeat_s,
            link_timeout_s=link_timeout_s,
            timing=timing,
        )
        super().__init__(
            agent_id,
            broker,
            device,
            poll_s=poll_s,
            backoff_s=(0.5, max_backoff_s),
            clock=clock,
            groups=groups,
            keepalive_s=keepalive_s,
            security=security,
            sign_telemetry=sign_telemetry,
            about=AboutInfo(
                app_name="SEF UCM",
                model_number="sef-ucm",
                description="water-heater agent over CTA-2045",
            ),
        )

    def retarget(
        self, *, serial_port: str | None = None, tcp: tuple[str, int] | None = None
    ) -> None:
        """Use another port from now on (e.g. a new pty path); the link is reopened."""
        self.device.retarget(serial_port=serial_port, tcp=tcp)
        self.device_lost(cta.LinkClosed("port changed"))
