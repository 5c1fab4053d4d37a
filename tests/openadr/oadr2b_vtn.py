"""A real openleadr 2.0b VTN on loopback for the adapter tests, plain or mTLS + signatures.

:class:`TestVtn` runs openleadr's ``OpenADRServer`` on a free 127.0.0.1 port with a 1-s poll
(the minimum openleadr can express), registers any VEN (checking the TLS fingerprint when a
``expected_ven_fingerprint`` is given: openleadr exempts registration from its own check),
records every opt that reaches it (all ``oadrCreatedEvent`` responses, not only the first
one per event that openleadr's ``callback`` reports) and every report value.

:func:`make_pki` issues the certificates from SEF's own CA (``sef.security``).

Workarounds for openleadr's VTN (``docs/openadr-plan.md`` quirks) live here, not in src:
``add_raw_event`` drops ``active_period.tolerance`` (set again afterwards).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openleadr import OpenADRServer, objects, utils

from sef.broker import free_port
from sef.openadr import DrEvent, OptDecision, TelemetrySample
from sef.security import CertificateAuthority, Role

VTN_ID = "SEF-TEST-VTN"
MARKET_CONTEXT = "http://sef.test/programs/dr1"


@dataclass(frozen=True)
class Pki:
    """Paths of the test certificates (PEM) from one SEF CA."""

    ca: Path
    vtn_cert: Path
    vtn_key: Path
    ven_cert: Path
    ven_key: Path

    @property
    def vtn_fingerprint(self) -> str:
        """The VTN certificate's OpenADR fingerprint."""
        return str(utils.certificate_fingerprint(self.vtn_cert.read_text()))

    @property
    def ven_fingerprint(self) -> str:
        """The VEN certificate's OpenADR fingerprint."""
        return str(utils.certificate_fingerprint(self.ven_cert.read_text()))


def make_pki(root: Path) -> Pki:
    """A SEF CA in ``root`` with a VTN leaf (broker role, SAN 127.0.0.1 + localhost) and a
    VEN leaf (the EMS role)."""
    ca = CertificateAuthority.init(root)
    _, vtn_key = ca.issue("test-vtn", Role.BROKER, hosts=("127.0.0.1", "localhost"))
    _, ven_key = ca.issue("ems-ven", Role.EMS)
    return Pki(
        ca=ca.ca_path,
        vtn_cert=ca.cert_path("test-vtn"),
        vtn_key=vtn_key,
        ven_cert=ca.cert_path("ems-ven"),
        ven_key=ven_key,
    )


@dataclass(frozen=True)
class OptSeen:
    """One opt answer that reached the VTN."""

    event_id: str
    modification: int
    opt: str
    at: float  # time.monotonic()


@dataclass
class TestVtn:
    """openleadr VTN on loopback; ``await start()``, ``await stop()``."""

    __test__ = False  # not a pytest class

    pki: Pki | None = None
    expected_ven_fingerprint: str | None = None
    poll_s: int = 1
    report_rate_s: int = 1
    port: int = field(default_factory=free_port)
    vens: dict[str, dict[str, Any]] = field(default_factory=dict)
    opts: list[OptSeen] = field(default_factory=list)
    reports: dict[tuple[str, str], list[tuple[datetime, float]]] = field(default_factory=dict)
    cancelled: dict[str, Any] = field(default_factory=dict)
    server: Any = None

    @property
    def url(self) -> str:
        """The 2.0b base URL the VEN uses."""
        scheme = "https" if self.pki else "http"
        return f"{scheme}://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    async def start(self) -> TestVtn:
        """Bind and serve."""
        tls: dict[str, Any] = {}
        if self.pki is not None:
            tls = {
                "cert": str(self.pki.vtn_cert),
                "key": str(self.pki.vtn_key),
                "http_cert": str(self.pki.vtn_cert),
                "http_key": str(self.pki.vtn_key),
                "http_ca_file": str(self.pki.ca),
                "show_fingerprint": False,
            }
        server = OpenADRServer(
            vtn_id=VTN_ID,
            http_host="127.0.0.1",
            http_port=self.port,
            requested_poll_freq=timedelta(seconds=self.poll_s),
            ven_lookup=self._ven_lookup,
            **tls,
        )
        server.add_handler("on_create_party_registration", self._on_registration)
        server.add_handler("on_register_report", self._on_register_report)
        event_service = server.services["event_service"]
        created = event_service.handlers["oadrCreatedEvent"]

        async def record_created(payload: dict[str, Any]) -> Any:
            now = time.monotonic()
            for response in payload.get("event_responses") or ():
                self.opts.append(
                    OptSeen(
                        str(response["event_id"]),
                        int(response["modification_number"]),
                        str(response["opt_type"]),
                        now,
                    )
                )
            return await created(payload)

        event_service.handlers["oadrCreatedEvent"] = record_created
        self.server = server
        await server.run()
        return self

    async def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            await self.server.stop()

    # ------------------------------------------------------------------ VTN handlers

    async def _ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        return self.vens.get(ven_id)

    async def _on_registration(self, info: dict[str, Any]) -> tuple[str, str] | bool:
        fingerprint = info.get("fingerprint")
        if self.expected_ven_fingerprint and fingerprint != self.expected_ven_fingerprint:
            return False
        ven_id = info.get("ven_id") or f"VEN-{info['ven_name']}"
        self.vens[ven_id] = {
            "ven_id": ven_id,
            "ven_name": info["ven_name"],
            "registration_id": f"REG-{ven_id}",
            "fingerprint": fingerprint,
        }
        return ven_id, f"REG-{ven_id}"

    async def _on_register_report(
        self,
        ven_id: str,
        resource_id: str,
        measurement: str,
        unit: str,
        scale: str,
        min_sampling_interval: timedelta,
        max_sampling_interval: timedelta,
    ) -> tuple[Callable[[list[tuple[datetime, float]]], None], timedelta]:
        values = self.reports.setdefault((resource_id, measurement), [])

        def on_values(data: list[tuple[datetime, float]]) -> None:
            values.extend(data)

        return on_values, timedelta(seconds=self.report_rate_s)

    # ------------------------------------------------------------------ events

    def add_simple(
        self, ven_id: str, event_id: str, level: float, start: datetime, duration_s: float
    ) -> float:
        """A SIMPLE level event (one interval); returns ``time.monotonic()`` when queued."""
        self.server.add_event(
            ven_id=ven_id,
            signal_name="SIMPLE",
            signal_type="level",
            intervals=[
                {
                    "dtstart": start,
                    "duration": timedelta(seconds=duration_s),
                    "signal_payload": level,
                }
            ],
            event_id=event_id,
            market_context=MARKET_CONTEXT,
            callback=_ignore_opt,
        )
        return time.monotonic()

    def add_dispatch(
        self,
        ven_id: str,
        event_id: str,
        start: datetime,
        setpoints_kw: Sequence[float],
        interval_s: float,
        *,
        resource_id: str,
        startafter_s: float | None = None,
    ) -> float:
        """A LOAD_DISPATCH setpoint event with ``itemBase`` powerReal (W, scale k), one
        interval per setpoint, through ``add_raw_event`` (plus the tolerance workaround)."""
        step = timedelta(seconds=interval_s)
        tolerance = {"startafter": timedelta(seconds=startafter_s)} if startafter_s else None
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id,
                modification_number=0,
                market_context=MARKET_CONTEXT,
                event_status="far",
                created_date_time=datetime.now(UTC),
            ),
            active_period=objects.ActivePeriod(
                dtstart=start, duration=step * len(setpoints_kw), tolerance=tolerance
            ),
            event_signals=[
                objects.EventSignal(
                    intervals=[
                        objects.Interval(
                            dtstart=start + i * step, duration=step, signal_payload=kw, uid=i
                        )
                        for i, kw in enumerate(setpoints_kw)
                    ],
                    signal_name="LOAD_DISPATCH",
                    signal_type="setpoint",
                    signal_id=f"{event_id}-sig",
                    measurement=objects.Measurement(
                        name="powerReal",
                        description="RealPower",
                        unit="W",
                        scale="k",
                        power_attributes=objects.PowerAttributes(60, 240, True),
                    ),
                )
            ],
            targets=[objects.Target(ven_id=ven_id, resource_id=resource_id)],
            response_required="always",
        )
        self.server.add_raw_event(ven_id=ven_id, event=event, callback=_ignore_opt)
        if tolerance:  # quirk 6a: add_raw_event overwrote active_period, tolerance is gone
            utils.setmember(event, "active_period.tolerance", tolerance)
        return time.monotonic()

    def modify_level(self, ven_id: str, event_id: str, level: float) -> None:
        """Change a queued event's first payload and bump its modification number."""
        event = utils.find_by(self.server.events[ven_id], "event_descriptor.event_id", event_id)
        utils.getmember(event, "event_signals")[0].intervals[0]["signal_payload"] = level
        utils.increment_event_modification_number(event)
        self.server.events_updated[ven_id] = True

    def cancel(self, ven_id: str, event_id: str) -> None:
        """Cancel a queued event (status cancelled, modification + 1); the event object is
        kept in :attr:`cancelled` (the VTN forgets it once the VEN confirms)."""
        self.cancelled[event_id] = utils.find_by(
            self.server.events[ven_id], "event_descriptor.event_id", event_id
        )
        self.server.cancel_event(ven_id, event_id)

    def opts_for(self, event_id: str) -> list[OptSeen]:
        """The opts received for ``event_id``, oldest first."""
        return [o for o in self.opts if o.event_id == event_id]


def _ignore_opt(ven_id: str, event_id: str, opt_type: str) -> None:
    """Openleadr wants a callback per event; the opts are recorded by the handler wrapper."""


@dataclass
class RecordingSink:
    """A :class:`~sef.openadr.DrSink` that records what the adapter hands it.

    ``decide`` picks each event's answer (default: opt in); ``fail_on`` names event ids whose
    ``on_event`` raises; ``samples`` are served by :meth:`telemetry`.
    """

    decide: Callable[[DrEvent], OptDecision] = field(
        default=lambda event: OptDecision.opt_in("test")
    )
    fail_on: frozenset[str] = frozenset()
    samples: dict[str, TelemetrySample] = field(default_factory=dict)
    events: list[DrEvent] = field(default_factory=list)
    event_seen_at: dict[tuple[str, int], float] = field(default_factory=dict)
    cancels: list[tuple[str, str, int]] = field(default_factory=list)

    async def on_event(self, event: DrEvent) -> OptDecision:
        """Record and answer (or raise for ``fail_on``)."""
        self.event_seen_at.setdefault((event.event_id, event.modification), time.monotonic())
        self.events.append(event)
        if event.event_id in self.fail_on:
            raise RuntimeError(f"sink fails on {event.event_id}")
        return self.decide(event)

    async def on_cancel(self, source: str, event_id: str, modification: int) -> None:
        """Record the cancellation."""
        self.cancels.append((source, event_id, modification))

    def telemetry(self, group: str) -> TelemetrySample | None:
        """The configured sample of ``group``."""
        return self.samples.get(group)

    def versions(self, event_id: str) -> list[DrEvent]:
        """Every version of ``event_id`` handed over, oldest first."""
        return [e for e in self.events if e.event_id == event_id]
