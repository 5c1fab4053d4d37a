"""The UCM (Universal Communication Module): ``edu.pdx.powerlab.demo`` ⇄ CTA-2045.

The UCM drives a CTA-2045 water heater (an SGD, or SEF's SGD emulator) over a serial
port (19200 8N1; a pty path works too) or CTA-2045-over-TCP. Each event of an
``EnergyMethod`` sequence becomes one Basic DR message (:func:`event_message`: shed →
Shed ``01 nn``, endshed and idle → End Shed ``02 00``, charge → Load Up ``17 nn``,
discharge → Critical Peak ``0A nn``; ``nn`` = the duration byte, rounded up). With
``use_advanced_load_up``, a timed charge with a rate is followed by Set Advanced Load Up
(rate × duration of energy) when the SGD answers Get Advanced Load Up. The sequencer
ends timed events on the clock.

``poll_s`` real seconds after each poll ends, the next: Operational State Query,
Commodity Read, every 4th time the tank temperature, every 16th the temperature offset;
Outside Comm Status every ``heartbeat_s``. An SGD that stops link-ACKing is gone
(``Link`` down, the port is reopened with backoff); one that link-ACKs a command without
answering is there: the command is *unconfirmed*, tried again by the next two polls,
then reported (``Command_Fault``). The ``Nameplate`` combines what the SGD tells with
configuration (:mod:`sef.agents._ucm_nameplate`). ``docs/ucm.md`` has the tables and figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar

from sef.agents._declare import AboutInfo, Outcome, method
from sef.agents._der import DERAgent
from sef.agents._device import DeviceAdapter, DeviceStatus
from sef.agents._ucm_nameplate import NameplateOptions, SgdRatings
from sef.bus import BrokerURL
from sef.clock import Clock
from sef.interface import DEMO_INTERFACE, Command, EnergyEvent, Variant
from sef.protocols import cta2045 as cta
from sef.protocols.cta2045._ucm_side import UcmRequester, advanced_load_up_request
from sef.security import Security
from sef.tasks import TaskSet

__all__ = ["CtaWaterHeater", "UCMAgent", "event_message"]

log = logging.getLogger("sef.agent.ucm")

TEMPERATURE_EVERY = 4
"""Poll the present tank temperature on every 4th exchange (telemetry ``Tank_Temp_C``)."""
OFFSET_EVERY = 16
"""Poll the temperature offset on every 16th poll (``Temp_Offset_C``; it rarely changes)."""
COMMAND_TRIES = 3
"""Sends of a DR command that the SGD link-ACKs without answering before it is reported."""
_OPTED_OUT = {cta.OperationalState.IDLE_OPTED_OUT, cta.OperationalState.RUNNING_OPTED_OUT}
_UNSUPPORTED_NAKS = {cta.NakReason.UNSUPPORTED_MESSAGE_TYPE, cta.NakReason.REQUEST_NOT_SUPPORTED}


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


def _rc_name(code: int) -> str:
    try:
        return cta.ResponseCode(code).name
    except ValueError:
        return "unknown"


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
        use_advanced_load_up: bool = False,
        nameplate: NameplateOptions | None = None,
    ) -> None:
        self.retarget(serial_port=serial_port, tcp=tcp)
        self.ratings = SgdRatings(nameplate)  # for the Nameplate
        self.heartbeat_s, self.link_timeout_s, self.timing = heartbeat_s, link_timeout_s, timing
        self.use_advanced_load_up = use_advanced_load_up
        self.link: cta.Link | None = None
        self.requester: UcmRequester | None = None
        self.intermediate = False
        self.device_info: cta.GetInformationReply | None = None
        self.op_state: int | None = None
        self.power_w: float | None = None
        self.tank_temp_c: float | None = None
        self.temp_offset_c: float | None = None
        self.offset_supported: bool | None = None  # None: not known yet
        self.advanced_load_up = False  # the SGD answered Get Advanced Load Up
        self.load_up_wh: float | None = None  # asked by the running Advanced Load Up
        self.energy_used_wh: float | None = None
        self.stored_wh: float | None = None
        self.capacity_wh: float | None = None
        self.override_msg = False
        self.refused = ""
        self.last_message: cta.BasicMessage | None = None
        self.unconfirmed: cta.BasicMessage | None = None
        """The last DR command, while the SGD has link-ACKed it but not answered it."""
        self.command_tries = 0
        self.command_fault = ""
        self._polls = 0
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
        self.ratings.reset()
        self.link = link = cta.Link(transport, timing=self.timing, name=f"UCM {transport.name}")
        await link.start()
        self.requester = asker = UcmRequester(link, link_timeout_s=self.link_timeout_s)
        self._receivers.spawn(self._receive(link, asker), name=f"ucm-receive:{self.host.agent_id}")
        if not await link.query_type_supported(0x08, 0x01):
            raise cta.CtaError("the SGD does not support Basic DR")
        self.intermediate = await link.query_type_supported(0x08, 0x02)
        if self.intermediate:
            with contextlib.suppress(cta.LinkNak):
                info = await asker.request(cta.GetInformationRequest())
                if isinstance(info, cta.GetInformationReply):
                    self.device_info = info
                    log.info(
                        "%s: SGD type %d, model %r, serial %r",
                        self.host.agent_id,
                        info.device_type,
                        info.model,
                        info.serial,
                    )
            await self._read_offset(asker)
            _, reply = await asker.request_optional(cta.GetAdvancedLoadUpRequest())
            self.advanced_load_up = isinstance(reply, cta.AdvancedLoadUpReply)
        self._next_heartbeat = 0.0

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        """Send the event's Basic DR message with the time it has left (s, rounded up)."""
        assert self.requester is not None
        message = event_message(event.cmd, 0.0 if left_s is None else max(1.0, left_s))
        self.last_message, self.refused, self.command_fault = message, "", ""
        self.unconfirmed, self.command_tries, self.load_up_wh = message, 0, None
        await self._send_command(self.requester, message)
        alu = None
        if event.cmd is Command.CHARGE and left_s and self.use_advanced_load_up:
            alu = advanced_load_up_request(event.rate_kw * left_s / 3.6, left_s)  # Wh, s
        if alu is not None and self.advanced_load_up:
            await self._send_advanced_load_up(self.requester, alu)

    async def _send_advanced_load_up(
        self, asker: UcmRequester, alu: cta.SetAdvancedLoadUpRequest
    ) -> None:
        """Follow a Load Up with the amount to store (once; refusals go to ``Refused``)."""
        supported, reply = await asker.request_optional(alu)
        if supported is False:
            self.advanced_load_up = False
        if isinstance(reply, cta.IntermediateReply) and reply.response_code == 0:
            self.load_up_wh = alu.energy_wh
        elif reply is not None or supported is False:
            code = reply.response_code if isinstance(reply, cta.IntermediateReply) else None
            why = "link NAK" if code is None else f"response code {code} ({_rc_name(code)})"
            self.refused = f"SetAdvancedLoadUpRequest: {why}"
            self.override_msg |= code == cta.ResponseCode.CUSTOMER_OVERRIDE
            log.warning("%s: SGD refused %r (%s)", self.host.agent_id, alu, self.refused)

    async def _read_offset(self, asker: UcmRequester) -> None:
        """Get Temperature Offset (telemetry ``Temp_Offset_C``); not again once unsupported."""
        supported, reply = await asker.request_optional(cta.GetTemperatureOffsetRequest())
        if supported is False:
            self.offset_supported, self.temp_offset_c = False, None
        elif isinstance(reply, cta.TemperatureOffsetReply) and reply.response_code == 0:
            self.offset_supported = True
            celsius = reply.units == cta.TemperatureUnits.CELSIUS
            self.temp_offset_c = round(reply.offset * (1.0 if celsius else 5 / 9), 2)

    async def _send_command(self, asker: UcmRequester, message: cta.BasicMessage) -> None:
        """One try of a DR command; a command the SGD ACKs but does not answer stays
        :attr:`unconfirmed` (sent again by the next polls, up to :data:`COMMAND_TRIES`)."""
        self.command_tries += 1
        try:
            reply = await asker.request(message)
        except cta.LinkNak as exc:  # 15 06 / 15 07: the SGD does not support the message
            if exc.reason not in _UNSUPPORTED_NAKS:
                raise
            reply = None
            self._settle(message, f"{type(message).__name__}: link NAK {exc.reason:02X}")
        if reply is not None:
            self._confirm(message, reply)
        elif self.unconfirmed is message and self.command_tries >= COMMAND_TRIES:
            self.command_fault = (
                f"{type(message).__name__} ({message.encode().hex(' ')}): SGD link-ACKed but "
                f"sent no application response after {self.command_tries} tries"
            )
            log.warning("%s: %s", self.host.agent_id, self.command_fault)
            self.unconfirmed = None

    def _confirm(self, message: cta.BasicMessage, reply: cta.Message) -> None:
        """The SGD answered ``message`` (in time or late): App ACK, or App NAK = refused."""
        refused = ""
        if isinstance(reply, cta.AppNak):
            refused = f"{type(message).__name__}: App NAK {reply.reason}"
            log.warning("%s: SGD refused %r: App NAK %s", self.host.agent_id, message, reply.reason)
            self.override_msg |= reply.reason == cta.AppNakReason.CUSTOMER_OVERRIDE
        self._settle(message, refused)

    def _settle(self, message: cta.BasicMessage, refused: str) -> None:
        if self.unconfirmed is message:
            self.unconfirmed, self.command_fault = None, ""
        if self.last_message is message:
            self.refused = refused

    async def read(self) -> None:
        """An unconfirmed command's next try, heartbeat when due, operational state,
        commodities, every 4th time the tank. Unanswered queries keep the last readings."""
        asker = self.requester
        assert asker is not None
        pending = self.unconfirmed
        if pending is not None and self.command_tries < COMMAND_TRIES:
            await self._send_command(asker, pending)
        now = asyncio.get_running_loop().time()
        if now >= self._next_heartbeat:
            await asker.request(cta.OutsideCommStatus(cta.CommStatus.CONNECTED))
            self._next_heartbeat = now + self.heartbeat_s
        state = await asker.request(cta.OperationalStateQuery())
        if isinstance(state, cta.OperationalStateResponse):
            self.op_state = state.state
        if self.intermediate:
            reply = await asker.request(cta.CommodityReadRequest())
            if isinstance(reply, cta.CommodityReadReply):
                self._read_commodities(reply)
            if self._polls % TEMPERATURE_EVERY == 0:  # each exchange costs ~0.2 s of link
                temp = await asker.request(cta.GetPresentTemperatureRequest())
                if isinstance(temp, cta.PresentTemperatureReply):
                    self.tank_temp_c = temp.celsius
            if self._polls % OFFSET_EVERY == 0 and self.offset_supported is not False:
                await self._read_offset(asker)
            if self.ratings.setpoint_due:
                await self.ratings.read_setpoint(asker)
        self._polls += 1
        self.ratings.polled()

    def nameplate(self) -> dict[str, Variant] | None:
        """Device type, rated power, setpoint and storage read from the SGD, completed by
        configuration (:mod:`sef.agents._ucm_nameplate`); ``None`` before the first poll."""
        info = self.device_info
        return self.ratings.nameplate(info.device_type if info is not None else None)

    async def close(self) -> None:
        """Close the link and stop its receiver."""
        link, self.link, self.requester = self.link, None, None
        if link is not None:
            await link.close()
        await self._receivers.close()

    def _read_commodities(self, reply: cta.CommodityReadReply) -> None:
        self.ratings.commodities(reply)
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

    async def _receive(self, link: cta.Link, asker: UcmRequester) -> None:
        """Hand responses to the requester; note and answer what the SGD starts: override,
        unsolicited state, UTC time... A late answer confirms an unconfirmed command."""
        async for message in link:
            if asker.offer(message):
                continue
            pending = self.unconfirmed
            if pending is not None and pending.is_reply(message):
                self._confirm(pending, message)
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
        if self.unconfirmed is not None:
            values["Unconfirmed"] = Variant("s", self.unconfirmed.encode().hex(" "))
        if self.command_fault:
            values["Command_Fault"] = Variant("s", self.command_fault[:200])
        if self.requester is not None and self.requester.unanswered:
            values["Unanswered"] = Variant("u", self.requester.unanswered)
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
            ("Temp_Offset_C", self.temp_offset_c),
            ("Load_Up_Wh", self.load_up_wh),
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
        use_advanced_load_up: follow a timed ``charge`` with a rate by Set Advanced Load Up
            (rate × duration, Wh) when the SGD answers Get Advanced Load Up.
        nameplate: ``Nameplate`` values given by configuration (they win over the SGD's).
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
        use_advanced_load_up: bool = False,
        nameplate: NameplateOptions | None = None,
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
            use_advanced_load_up=use_advanced_load_up,
            nameplate=nameplate,
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

    @method(DEMO_INTERFACE, "EnergyMethod")
    async def energy_method(self, cmds: list[tuple[str, int, int]]) -> Outcome:
        """As :meth:`DERAgent.energy_method`; a first event the SGD link-ACKed but did not
        answer is *accepted, not confirmed* (no ``applied`` in the reply)."""
        outcome = await super().energy_method(cmds)
        if outcome.applied and self.device.unconfirmed is not None:
            return Outcome(applied=None)
        return outcome

    def retarget(
        self, *, serial_port: str | None = None, tcp: tuple[str, int] | None = None
    ) -> None:
        """Use another port from now on (e.g. a new pty path); the link is reopened."""
        self.device.retarget(serial_port=serial_port, tcp=tcp)
        self.device_lost(cta.LinkClosed("port changed"))
