"""The device side of a DER agent: one adapter class per device family.

An adapter knows how to talk to one kind of device (a SunSpec battery over Modbus, a
CTA-2045 water heater, a model in the same process) and nothing else. It implements
four coroutines and its telemetry map:

========================  ==================================================================
``connect()``             open the link and learn the device (ratings, models, capabilities)
``read()``                one poll: read the device's state into the adapter
``apply(event, left_s)``  make the device do ``event`` for ``left_s`` more seconds (None =
                          open-ended)
``close()``               close the link (called after a fault, before reconnecting, and at
                          shutdown)
``telemetry(status)``     the adapter's ``Telemetry`` keys, given the session's status
``readback()``            optional: a description of how the device's controls differ from
                          what was applied (another client changed them), else ``None``
``rearm(event, left_s)``  optional: re-arm the device's own revert timer (after each poll)
``prepare()``             optional: start the side-effect-free reads ``apply`` will need,
                          while an arriving command is being checked
``nameplate()``           optional: the device's ratings (the ``Nameplate`` property,
                          :mod:`sef.agents._nameplate`), ``None`` until they are known
========================  ==================================================================

Everything else — when to poll, backoff after a fault, fault reporting, re-applying the
running event after a reconnection or a readback mismatch, the event sequence and the
telemetry publishes — belongs to :class:`sef.agents.DERAgent`, which drives the adapter.
An exception of one of :attr:`DeviceAdapter.comm_errors` means "the device cannot be
reached" (logged once per distinct fault); any other exception is logged with its
traceback and handled the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from sef.interface import EnergyEvent, Variant

if TYPE_CHECKING:
    from sef.clock import Clock

__all__ = ["DeviceAdapter", "DeviceHost", "DeviceStatus"]


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """The device session as the agent sees it.

    Attributes:
        healthy: the last poll succeeded (the device answers).
        fault: why the device cannot be reached (``""`` while healthy).
        mismatch: how the device's controls differ from the running event (``""`` when
            they match or the adapter does not read them back).
    """

    healthy: bool
    fault: str = ""
    mismatch: str = ""


class DeviceHost(Protocol):
    """What an adapter may ask of the agent that drives it."""

    agent_id: str
    clock: Clock

    @property
    def current_event(self) -> EnergyEvent:
        """The event the device should be running now."""

    def changed(self) -> None:
        """The adapter's state changed outside a poll: publish telemetry now."""

    def device_lost(self, exc: BaseException) -> None:
        """The link failed outside a poll (e.g. the peer closed it): reconnect."""


class DeviceAdapter(ABC):
    """Base of a device family's adapter; see the module docstring for the contract.

    The agent calls :meth:`attach` before anything else, so :attr:`host` is set in every
    other method. ``apply`` is never called twice at once, but may run during ``read``.
    """

    comm_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError, TimeoutError)
    """Exceptions that mean the device cannot be reached (others are logged as bugs)."""

    host: DeviceHost

    def attach(self, host: DeviceHost) -> None:
        self.host = host

    @abstractmethod
    async def connect(self) -> None:
        """Open the link; raise one of :attr:`comm_errors` when the device is not there."""

    @abstractmethod
    async def read(self) -> None:
        """Poll the device once."""

    @abstractmethod
    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        """Make the device run ``event`` for ``left_s`` more clock seconds (None = open)."""

    @abstractmethod
    async def close(self) -> None:
        """Close the link; must not raise, and must leave the adapter ready to reconnect."""

    @abstractmethod
    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        """The device's ``Telemetry`` keys (the agent adds ``TimeStamp`` and the event)."""

    def prepare(self) -> bool:
        """Start the side-effect-free device reads that the next :meth:`apply` needs.

        Called on the event loop when a call on the agent's energy interface arrives,
        *before* it is parsed or its envelope verified: the read then overlaps the check
        (an ECDSA verification, ~0.1-0.3 ms) instead of following it. It must not change
        the device, must return at once (start a task), and must expect the call to be
        refused. Returns whether it started a read. The default starts none.
        """
        return False

    def nameplate(self) -> dict[str, Variant] | None:
        """The device's ``Nameplate`` (``a{sv}``, keys in :mod:`sef.agents._nameplate`),
        or ``None`` while it is not known.

        The agent publishes it after each successful :meth:`connect` and healthy poll
        whenever it differs from the value last published (so a retained value that does
        not change is published once). The default knows none.
        """
        return None

    def readback(self) -> str | None:
        """How the device's controls differ from the last :meth:`apply`, if they do."""
        return None

    async def rearm(self, event: EnergyEvent, left_s: float | None) -> None:
        """Re-arm the device's own fail-safe (e.g. a revert timer) after a healthy poll.

        Called after every successful poll with the running event and its clock seconds
        left (None = open-ended); a device that reverts by itself when nobody re-arms it
        stays safe if the agent dies. The default does nothing.
        """
        return None
