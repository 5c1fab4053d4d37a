"""The seam between SEF and a demand-response protocol: :class:`VenAdapter` (one per
protocol: OpenADR 2.0b, OpenADR 3, later IEEE 2030.5) and :class:`DrSink` (the bridge that
acts on events), so no protocol library leaks past its adapter module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sef.openadr._model import DrEvent, OptDecision, TelemetrySample

__all__ = ["AdapterStatus", "DrSink", "VenAdapter"]


@dataclass
class AdapterStatus:
    """An adapter's health, for the API and the dashboard.

    Attributes:
        source: the adapter (``"oadr2b"``, ``"oadr3"``).
        vtn: the VTN's URL.
        registered: whether the VTN accepted this VEN.
        ven_id: the id the VTN gave this VEN (``None`` before registration).
        last_ok_s: EMS clock time of the last good exchange with the VTN, Unix s.
        errors: failed exchanges since start.
        last_error: the newest failure, in words.
        programs: the programs (market contexts) seen.
    """

    source: str
    vtn: str
    registered: bool = False
    ven_id: str | None = None
    last_ok_s: float | None = None
    errors: int = 0
    last_error: str | None = None
    programs: list[str] = field(default_factory=list)


class DrSink(Protocol):
    """What an adapter calls; implemented by :class:`sef.openadr.DrBridge`."""

    async def on_event(self, event: DrEvent) -> OptDecision:
        """A new event, or a new modification of one: decide, act, answer. Never raises:
        a failure is an opt-out with its reason."""
        ...

    async def on_cancel(self, source: str, event_id: str, modification: int) -> None:
        """The VTN cancelled the event: stop it and return the devices to normal."""
        ...

    def telemetry(self, group: str) -> TelemetrySample | None:
        """The group's aggregated telemetry now (``"*"``: the whole fleet), ``None`` if no
        member reports any."""
        ...


class VenAdapter(Protocol):
    """One protocol's VEN: registers with its VTN, hands events to a :class:`DrSink`,
    answers opts and sends reports."""

    source: str

    async def start(self, sink: DrSink) -> None:
        """Register and start polling (or subscribing); returns once registered.

        Raises:
            ConnectionError: the VTN refused or could not be reached.
        """
        ...

    async def stop(self) -> None:
        """Stop polling and reporting; idempotent."""
        ...

    def status(self) -> AdapterStatus:
        """Health and registration, now."""
        ...
