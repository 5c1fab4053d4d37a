"""The DER-interface agent: one device-session template for every device family.

:class:`DERAgent` implements ``edu.pdx.powerlab.demo`` on the bus and drives a
:class:`~sef.agents.DeviceAdapter` (the only device-specific code):

* **event sequence**: ``EnergyMethod`` replaces the running sequence
  (:class:`~sef.agents._sequence.EventSequencer`); each event is applied at once when
  the device is healthy, else as soon as it is reachable again;
* **polling**: ``read()`` every ``poll_s`` (real seconds, or clock seconds with
  ``poll_on_clock``), followed by a ``Telemetry`` publish;
* **faults and backoff**: an error marks the device faulty (telemetry, one log line per
  distinct fault), closes the link and retries after ``backoff_s[0]`` doubling to
  ``backoff_s[1]`` real seconds; after reconnecting the running event is re-applied;
* **fail-safe**: after each healthy poll the adapter re-arms the device's own revert
  timer (``rearm``); when no EMS host is online for ``host_loss_grace_s`` the
  :class:`~sef.agents._host_loss.HostLossPolicy` ends open-ended events;
* **nameplate**: after a successful connect and each healthy poll, the adapter's
  ``nameplate()`` is published as the ``Nameplate`` property when it changed;
* **readback**: after each poll, a mismatch reported by ``readback()`` (another client
  changed the device's controls) is logged, shown in telemetry (``Control_Mismatch``)
  and the running event is re-asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Generic, TypeVar

from sef.agents._base import Agent
from sef.agents._declare import AboutInfo, Outcome, method
from sef.agents._device import DeviceAdapter, DeviceStatus
from sef.agents._host_loss import DEFAULT_GRACE_S, HostLossPolicy
from sef.agents._sequence import EventSequencer
from sef.bus import BrokerURL, ErrorName
from sef.clock import Clock
from sef.interface import DEMO_INTERFACE, EnergyEvent, Variant, parse_events
from sef.security import Security
from sef.tasks import TaskSet

__all__ = ["DERAgent"]

log = logging.getLogger("sef.agent")

DeviceT = TypeVar("DeviceT", bound=DeviceAdapter)

CLOSE_TIMEOUT_S = 5.0
"""Longest real wait for an adapter's ``close()``."""


class DERAgent(Agent, Generic[DeviceT]):
    """An ``edu.pdx.powerlab.demo`` agent driving one device through ``device``.

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        device: the device adapter.
        poll_s: time between polls (and telemetry publishes), real s.
        backoff_s: first and longest wait between reconnection attempts, real s.
        poll_on_clock: ``poll_s`` is in clock seconds (a model on the scaled clock).
        host_loss_grace_s: real seconds without an online host (EMS) before the
            host-loss policy makes the device safe (:mod:`sef.agents._host_loss`).
        clock, groups, keepalive_s, about, security, sign_telemetry: as for
            :class:`~sef.agents.Agent`.
    """

    interfaces = (DEMO_INTERFACE,)

    def __init__(
        self,
        agent_id: str,
        broker: BrokerURL | str,
        device: DeviceT,
        *,
        poll_s: float = 1.0,
        backoff_s: tuple[float, float] | None = None,
        poll_on_clock: bool = False,
        host_loss_grace_s: float = DEFAULT_GRACE_S,
        clock: Clock | None = None,
        groups: Sequence[str] = (),
        keepalive_s: int = 10,
        about: AboutInfo | None = None,
        security: Security | None = None,
        sign_telemetry: bool = False,
    ) -> None:
        super().__init__(
            agent_id,
            broker,
            clock=clock,
            groups=groups,
            keepalive_s=keepalive_s,
            about=about,
            security=security,
            sign_telemetry=sign_telemetry,
        )
        self.device = device
        self.poll_s = poll_s
        self.backoff_s = backoff_s or (poll_s, 4 * poll_s)
        self.poll_on_clock = poll_on_clock
        self.sequencer = EventSequencer(self.clock, self._on_event)
        self.host_loss = HostLossPolicy(
            agent_id, self.sequencer, self._host_lost, grace_s=host_loss_grace_s
        )
        self.status = DeviceStatus(healthy=False)
        self.mismatches = 0
        self._connected = False  # connect() succeeded and close() has not run since
        self._dirty = True  # the running event still needs applying
        self._generation = 0  # bumped by each new event
        self._backing_off = False
        self._apply_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks = TaskSet(agent_id)
        device.attach(self)

    # -- DeviceHost ---------------------------------------------------------------------
    @property
    def current_event(self) -> EnergyEvent:
        return self.sequencer.current

    def changed(self) -> None:
        self._publish()

    def device_lost(self, exc: BaseException) -> None:
        self._fault(exc)
        if not self._backing_off:
            self._wake.set()  # reconnect now; a failed attempt then backs off

    def _call_arriving(self, interface: str, method: str) -> bool:
        """Let the adapter read what a command will need while the call is checked."""
        if interface != DEMO_INTERFACE or method != "EnergyMethod" or not self._connected:
            return False
        return self.device.prepare()

    # -- the interface ------------------------------------------------------------------
    @method(DEMO_INTERFACE, "EnergyMethod")
    async def energy_method(self, cmds: list[tuple[str, int, int]]) -> Outcome:
        """Run an event sequence from now, replacing the running one.

        The reply says whether the first event reached the device: applied, not applied
        (the device cannot be reached: its fault), or accepted (the device is still being
        connected; the event is applied as soon as it answers).
        """
        events = parse_events(cmds)
        log.info("%s: new sequence %s", self.agent_id, [e.as_tuple() for e in events])
        await self.sequencer.replace(events)
        if not self._dirty:
            return Outcome(applied=True)
        if self.status.fault:
            return Outcome(False, ErrorName.DEVICE_UNREACHABLE, self.status.fault)
        return Outcome(applied=None)

    def telemetry(self) -> dict[str, Variant]:
        """The ``Telemetry`` value (``a{sv}``): the event, the device's keys, the mismatch."""
        event = self.sequencer.current
        return {
            "TimeStamp": Variant("u", max(0, int(self.clock.now()))),
            "Event": Variant("s", event.cmd.value),
            "Event_Rate_kW": Variant("n", event.rate_kw),
            **self.device.telemetry(self.status),
            "Control_Mismatch": Variant("b", bool(self.status.mismatch)),
        }

    # -- lifecycle ----------------------------------------------------------------------
    async def on_start(self) -> None:
        self.set_property(
            DEMO_INTERFACE, "AssetName", self.about.fields(self.agent_id)["DeviceName"]
        )
        self._publish()
        self._tasks.spawn(self._supervise(), name=f"device:{self.agent_id}")
        self._tasks.spawn(self.host_loss.watch(), name=f"host-loss:{self.agent_id}")

    async def on_stop(self) -> None:
        await self.sequencer.cancel()
        await self._tasks.close()
        await self._close_device()

    # -- the session ----------------------------------------------------------------------
    async def _on_event(self, event: EnergyEvent) -> None:
        self._generation += 1
        self._dirty = True
        if self._connected and self.status.healthy:
            try:
                await self._apply_running()
            except Exception as exc:
                _raise_if_cancelling(exc)
                self._fault(exc)
        self._publish()
        self._wake.set()

    async def _apply_running(self) -> None:
        async with self._apply_lock:
            if not self._dirty:
                return  # applied meanwhile by the poll loop
            generation = self._generation
            await self.device.apply(self.sequencer.current, self._left_s())
            if generation == self._generation:
                self._dirty = False

    async def _supervise(self) -> None:
        first_s, longest_s = self.backoff_s
        backoff_s = first_s
        while True:
            _raise_if_cancelling()  # a cancellation a device library swallowed
            self._wake.clear()
            try:
                if not self._connected:
                    await self._close_device()
                    await self.device.connect()
                    self._connected, self._dirty = True, True
                    self._publish_nameplate()
                if self._dirty:
                    await self._apply_running()
                generation = self._generation
                await self.device.read()
                await self._check_readback(generation)
                await self.device.rearm(self.sequencer.current, self._left_s())
                self._publish_nameplate()
                self._healthy()
                delay_s, backoff_s = self._poll_real_s(), first_s
            except Exception as exc:
                _raise_if_cancelling(exc)
                self._fault(exc)
                delay_s, backoff_s = backoff_s, min(2 * backoff_s, longest_s)
            self._backing_off = not self.status.healthy
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that lands as the event is set (a stop then hung)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._wake.wait()

    async def _check_readback(self, generation: int) -> None:
        """Compare the controls just read with the running event (unless a new event was
        applied since the read started)."""
        fresh = not self._dirty and generation == self._generation
        mismatch = self.device.readback() if fresh else None
        if mismatch:
            self.mismatches += 1
            if mismatch != self.status.mismatch:
                log.warning(
                    "%s: device controls changed behind the agent's back (%s); re-asserting %s",
                    self.agent_id,
                    mismatch,
                    self.sequencer.current.as_tuple(),
                )
            self.status = DeviceStatus(True, mismatch=mismatch)
            self._dirty = True
            await self._apply_running()
        elif self.status.mismatch:
            log.info("%s: device controls match the running event again", self.agent_id)
            self.status = DeviceStatus(True)

    def _healthy(self) -> None:
        if not self.status.healthy:
            log.info("%s: device reachable", self.agent_id)
            self.status = DeviceStatus(True, mismatch=self.status.mismatch)
        self._publish()

    def _fault(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, self.device.comm_errors):
            log.error("%s: unexpected device error", self.agent_id, exc_info=exc)
        elif self.status.healthy or text != self.status.fault:
            log.warning("%s: device fault: %s", self.agent_id, text)
        self.status = DeviceStatus(False, fault=text)
        self._connected, self._dirty = False, True
        self._publish()

    async def _close_device(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.device.close()
        except Exception as exc:  # a close that fails must not stop the reconnection
            _raise_if_cancelling(exc)
            log.warning("%s: closing the device link failed: %s", self.agent_id, exc)

    def _left_s(self) -> float | None:
        """Clock seconds left of the running event (None = open-ended)."""
        ends = self.sequencer.current_ends
        return None if ends is None else max(0.0, ends - self.clock.now())

    def _host_lost(self) -> bool:
        """No host in charge: the broker is lost, or every host seen says offline."""
        if self.bus.connections and not self.bus.connected:
            return True
        return bool(self.host_online) and not any(self.host_online.values())

    def _poll_real_s(self) -> float:
        return self.clock.to_real(self.poll_s) if self.poll_on_clock else self.poll_s

    def _publish(self) -> None:
        self.set_property(DEMO_INTERFACE, "Telemetry", self.telemetry())

    def _publish_nameplate(self) -> None:
        """Publish the adapter's ``Nameplate`` when known and changed (retained)."""
        nameplate = self.device.nameplate()
        if nameplate is not None and self.set_property(DEMO_INTERFACE, "Nameplate", nameplate):
            log.info("%s: nameplate %s", self.agent_id, _render(nameplate))


def _render(values: dict[str, Variant]) -> str:
    """``key=value`` pairs of an ``a{sv}`` for a log line."""
    return ", ".join(f"{key}={item.value}" for key, item in values.items())


def _raise_if_cancelling(cause: Exception | None = None) -> None:
    """Raise :class:`asyncio.CancelledError` if the current task is being cancelled.

    A device library may swallow a cancellation or turn it into an error of its own
    (pymodbus raises an I/O error for a request cancelled mid-flight); taken for a device
    fault, it would keep the loop running and make the agent's stop hang.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
