"""The OpenADR 2.0b VEN adapter, on openleadr's ``OpenADRClient`` (``docs/openadr.md``).

:class:`Oadr2bAdapter` registers with a VTN (plain HTTP, or mutual TLS with XML signatures),
polls at the rate the VTN asks, hands every new or modified event to a
:class:`~sef.openadr.DrSink` as a :class:`~sef.openadr.DrEvent`, answers with the sink's
opt through ``oadrCreatedEvent`` (never ``oadrCreateOpt``: the openleadr VTN answers it
with 404), passes cancellations to :meth:`DrSink.on_cancel`, and offers one
TELEMETRY_USAGE report per configured group (real power kW, stored energy kWh, voltage V,
current A) whose values it pulls from :meth:`DrSink.telemetry` when the VTN asks.

openleadr is imported in :meth:`Oadr2bAdapter.start` only, so importing this module (and
:mod:`sef.openadr`) does not need the ``openadr`` extra.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sef.clock import Clock
from sef.openadr._adapter import AdapterStatus, DrSink
from sef.openadr._model import EventStatus, Opt, OptDecision, TelemetrySample
from sef.openadr._oadr2b_events import EventFormatError, event_from_oadr2b

__all__ = ["Oadr2bAdapter", "Oadr2bConfig"]

log = logging.getLogger("sef.openadr")

SOURCE = "oadr2b"
REPORT_SPECIFIER_ID = "sef-telemetry"

REPORT_MEASUREMENTS: tuple[tuple[str, str, str, str, str], ...] = (
    # (r_id suffix, itemBase name, its description (fixed by the 2.0b schema), unit, scale)
    ("power_real", "powerReal", "RealPower", "W", "k"),
    ("stored_energy", "energyReal", "RealEnergy", "Wh", "k"),
    ("voltage", "voltage", "Voltage", "V", "none"),
    ("current", "current", "Current", "A", "none"),
)
"""The data points of each group's TELEMETRY_USAGE report. 2.0b has no "stored energy"
item and fixes ``energyReal``'s description to ``RealEnergy``, so stored energy is an
``energyReal`` point (kWh) whose ``rID`` says ``stored_energy``."""


@dataclass(frozen=True)
class Oadr2bConfig:
    """How the VEN reaches its VTN.

    Attributes:
        vtn_url: the VTN's 2.0b base URL, e.g. ``https://vtn.example/OpenADR2/Simple/2.0b``.
        ven_name: this VEN's name, as the utility registered it.
        ven_id: this VEN's id if the utility assigned one; ``None``: the VTN assigns it.
        cert: PEM client certificate (TLS client auth and XML signatures); ``None``: plain.
        key: its PEM private key.
        ca_file: PEM CA bundle that the VTN's TLS certificate is checked against
            (required with ``cert``: openleadr cannot build a TLS context without it).
        vtn_fingerprint: the VTN certificate's OpenADR fingerprint (last 10 bytes of
            SHA-256, ``AA:BB:…``); when set, VTN messages must be signed by that cert.
        disable_signature: send unsigned XML even with a certificate.
        check_hostname: check the VTN certificate's name against the URL.
        report_groups: groups offered as TELEMETRY_USAGE reports (``"*"``: whole fleet).
        report_interval_s: the sampling interval offered for the reports, s (integer ≥ 1;
            the VTN picks the rate).
        grid_hertz: the grid frequency stated with the real-power report item, Hz.
        grid_voltage_v: the nominal voltage stated with it, V.
        register_timeout_s: how long :meth:`Oadr2bAdapter.start` waits for registration, s.
        stop_grace_s: how long :meth:`Oadr2bAdapter.stop` lets an exchange in flight finish, s.
    """

    vtn_url: str
    ven_name: str
    ven_id: str | None = None
    cert: Path | None = None
    key: Path | None = None
    ca_file: Path | None = None
    vtn_fingerprint: str | None = None
    disable_signature: bool = False
    check_hostname: bool = True
    report_groups: tuple[str, ...] = ("*",)
    report_interval_s: int = 10
    grid_hertz: int = 50
    grid_voltage_v: int = 230
    register_timeout_s: float = 15.0
    stop_grace_s: float = 2.0

    def __post_init__(self) -> None:
        """Check the combination of TLS settings and the report interval."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        if self.cert is not None and self.ca_file is None:
            raise ValueError("ca_file is required with a client certificate")
        if int(self.report_interval_s) != self.report_interval_s or self.report_interval_s < 1:
            raise ValueError("report_interval_s must be a whole number of seconds >= 1")


class _DropCancelledJobs(logging.Filter):
    """Drops apscheduler's "Error running job" records for jobs cancelled at shutdown."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


_CANCELLED_FILTER = _DropCancelledJobs()


class _ReportsWithValues(asyncio.Queue[Any]):
    """openleadr's queue of outgoing reports, dropping reports without any interval."""

    async def put(self, item: Any) -> None:
        """Queue ``item`` (an openleadr ``Report``) if it carries at least one value."""
        if getattr(item, "intervals", None):
            await super().put(item)


class Oadr2bAdapter:
    """OpenADR 2.0b VEN on openleadr; implements :class:`~sef.openadr.VenAdapter`."""

    source = SOURCE

    def __init__(self, config: Oadr2bConfig, *, clock: Clock) -> None:
        """Prepare the adapter; nothing talks to the VTN before :meth:`start`."""
        self.config = config
        self._clock = clock
        self._client: Any = None
        self._sink: DrSink | None = None
        self._opts: dict[str, Opt] = {}
        self._status = AdapterStatus(source=SOURCE, vtn=config.vtn_url)
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sink: DrSink) -> None:
        """Register with the VTN and start polling and reporting; returns once registered.

        Raises:
            ConnectionError: the VTN refused, could not be reached, or did not register this
                VEN within ``register_timeout_s``.
        """
        from openleadr import OpenADRClient  # the protocol library, on use only

        if self._client is not None:
            raise RuntimeError("adapter already started")
        self._sink = sink
        cfg = self.config
        client = OpenADRClient(
            ven_name=cfg.ven_name,
            vtn_url=cfg.vtn_url,
            ven_id=cfg.ven_id,
            cert=str(cfg.cert) if cfg.cert else None,
            key=str(cfg.key) if cfg.key else None,
            ca_file=str(cfg.ca_file) if cfg.ca_file else None,
            vtn_fingerprint=cfg.vtn_fingerprint,
            disable_signature=cfg.disable_signature,
            check_hostname=cfg.check_hostname,
            show_fingerprint=False,
        )
        self._client = client
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_update_event)
        client.add_hook("after_parse_xml", self._after_parse)
        self._wrap_requests(client)
        self._add_reports(client)
        logging.getLogger("apscheduler.executors.default").addFilter(_CANCELLED_FILTER)
        try:
            await asyncio.wait_for(client.run(), timeout=cfg.register_timeout_s)
            # run() returns quietly when refused; polling runs only once it went through
            running = bool(client.registration_id) and client.scheduler.running
        except TimeoutError:
            self._note_error(f"no registration within {cfg.register_timeout_s} s")
            running = False
        if not running:
            reason = self._status.last_error or "the VTN did not register this VEN"
            await self.stop()
            raise ConnectionError(f"OpenADR 2.0b VTN {cfg.vtn_url}: {reason}")
        log.info(
            "oadr2b: registered with %s as %s (poll %s)",
            cfg.vtn_url,
            client.ven_id,
            client.poll_frequency,
        )

    async def stop(self) -> None:
        """Stop polling and reporting; lets an exchange in flight finish first (up to
        ``stop_grace_s``) so apscheduler logs no cancelled job. Idempotent."""
        client = self._client
        if client is None or self._stopped:
            return
        self._stopped = True
        scheduler = client.scheduler
        if scheduler.running:
            scheduler.pause()
            executor = getattr(scheduler, "_executors", {}).get("default")
            pending = [f for f in getattr(executor, "_pending_futures", ()) if not f.done()]
            if pending:
                await asyncio.wait(pending, timeout=self.config.stop_grace_s)
            scheduler.shutdown(wait=False)
        if client.report_queue_task is not None:
            client.report_queue_task.cancel()
        if client.client_session is not None:
            await client.client_session.close()
        await asyncio.sleep(0)

    def status(self) -> AdapterStatus:
        """Registration and health now (a copy)."""
        s = self._status
        client = self._client
        registered = client is not None and not self._stopped and bool(client.registration_id)
        return AdapterStatus(
            source=s.source,
            vtn=s.vtn,
            registered=registered,
            ven_id=client.ven_id if client is not None else None,
            last_ok_s=s.last_ok_s,
            errors=s.errors,
            last_error=s.last_error,
            programs=list(s.programs),
        )

    # ------------------------------------------------------------------ events

    async def _on_event(self, event: dict[str, Any]) -> str:
        """Openleadr's handler for a first delivery; returns ``optIn``/``optOut``. Never
        raises (openleadr would opt out of every event of the message, quirk 10)."""
        return await self._handle(event, update=False)

    async def _on_update_event(self, event: dict[str, Any]) -> str:
        """Openleadr's handler for a new modification number (modification or cancel)."""
        return await self._handle(event, update=True)

    async def _handle(self, event: dict[str, Any], *, update: bool) -> str:
        event_id = _event_id(event)
        try:
            status = _descriptor(event).get("event_status")
            if status == EventStatus.CANCELLED.value:
                return await self._cancel(event, event_id)
            dr_event = event_from_oadr2b(event, source=SOURCE)
        except EventFormatError as err:
            return self._decide(event_id, OptDecision.opt_out(f"malformed event: {err}"))
        except Exception as err:  # a bug of ours must not opt out of every other event
            log.exception("oadr2b: event %s could not be read", event_id)
            return self._decide(event_id, OptDecision.opt_out(f"event not readable: {err!r}"))
        if dr_event.program and dr_event.program not in self._status.programs:
            self._status.programs.append(dr_event.program)
        assert self._sink is not None
        try:
            decision = await self._sink.on_event(dr_event)
            if not isinstance(decision, OptDecision):
                raise TypeError(f"sink answered {decision!r}, not an OptDecision")
        except Exception as err:
            log.exception("oadr2b: the sink failed on event %s", event_id)
            decision = OptDecision.opt_out(f"failed: {err!r}")
        log.info(
            "oadr2b: %s event %s mod %d (%s): %s, %s",
            "modified" if update else "new",
            event_id,
            dr_event.modification,
            ", ".join(f"{s.name}/{s.type}" for s in dr_event.signals),
            decision.opt.value,
            decision.reason,
        )
        return self._decide(event_id, decision)

    async def _cancel(self, event: dict[str, Any], event_id: str) -> str:
        """A cancellation: tell the sink, answer with the opt we gave before (optIn if none)."""
        modification = _descriptor(event).get("modification_number", 0)
        assert self._sink is not None
        try:
            await self._sink.on_cancel(SOURCE, event_id, int(modification))
        except Exception:
            log.exception("oadr2b: the sink failed on the cancellation of %s", event_id)
        log.info("oadr2b: event %s cancelled (mod %s)", event_id, modification)
        return self._opts.get(event_id, Opt.IN).value

    async def send_opt(self, event_id: str, modification: int, decision: OptDecision) -> None:
        """An operator's new answer to an event the VTN already has one for: an
        ``oadrCreatedEvent`` now, and the same answer to later unchanged redeliveries.

        Raises:
            ConnectionError: not registered, or the VTN did not take the answer.
        """
        client = self._client
        if client is None or self._stopped or not client.registration_id:
            raise ConnectionError("oadr2b: not registered with the VTN")
        opt = self._decide(event_id, decision)
        client.responded_events[event_id] = opt
        errors = self._status.errors
        await client.created_event(uuid.uuid4().hex, event_id, opt, modification)
        if self._status.errors != errors:
            raise ConnectionError(f"oadr2b: the VTN refused the answer: {self._status.last_error}")
        log.info("oadr2b: answered %s to event %s mod %d again", opt, event_id, modification)

    def _decide(self, event_id: str, decision: OptDecision) -> str:
        if decision.opt is Opt.OUT:
            log.warning("oadr2b: opting out of event %s: %s", event_id, decision.reason)
        self._opts[event_id] = decision.opt
        return decision.opt.value

    def _after_parse(self, message_type: str, payload: dict[str, Any]) -> None:
        """Before openleadr handles an ``oadrDistributeEvent``: an event it already answered
        that comes again unchanged after a cancel or completion (openleadr forgot its opt
        then) would raise ``KeyError`` in openleadr and opt out of *every* event of the
        message; give it back the opt we answered."""
        client = self._client
        if message_type != "oadrDistributeEvent" or client is None:
            return
        seen = {
            _event_id(e): _descriptor(e).get("modification_number") for e in client.received_events
        }
        for event in payload.get("events") or ():
            event_id = _event_id(event)
            same = seen.get(event_id) == _descriptor(event).get("modification_number")
            if event_id in seen and same and event_id not in client.responded_events:
                client.responded_events[event_id] = self._opts.get(event_id, Opt.IN).value
        current = set(seen) | {_event_id(e) for e in payload.get("events") or ()}
        for event_id in [k for k in self._opts if k not in current]:
            del self._opts[event_id]  # openleadr purged it (completed or cancelled)

    # ------------------------------------------------------------------ reports

    def _add_reports(self, client: Any) -> None:
        """One TELEMETRY_USAGE report (``sef-telemetry``) with four data points per group.

        One report, not one per group: openleadr's VEN shares one list of requested data
        points across all report requests of an ``oadrRegisteredReport``, so a second report
        would be asked for the first one's points too (errors logged every interval)."""
        from openleadr import objects

        interval = timedelta(seconds=self.config.report_interval_s)
        rate = objects.SamplingRate(
            min_period=interval, max_period=max(interval, timedelta(hours=1)), on_change=False
        )
        # a power item must carry its grid's attributes (openleadr refuses it otherwise)
        power = objects.PowerAttributes(
            hertz=self.config.grid_hertz, voltage=self.config.grid_voltage_v, ac=True
        )
        for group in self.config.report_groups:
            for r_name, item, description, unit, scale in REPORT_MEASUREMENTS:
                client.add_report(
                    callback=self._report_callback(group, r_name),
                    resource_id=group,
                    measurement=objects.Measurement(
                        name=item,
                        description=description,
                        unit=unit,
                        scale=scale,
                        power_attributes=power if item == "powerReal" else None,
                    ),
                    report_specifier_id=REPORT_SPECIFIER_ID,
                    r_id=f"{group}.{r_name}",
                    sampling_rate=rate,
                    report_duration=interval,
                )
        # a report whose points all have no value would reach the VTN without intervals,
        # which the openleadr VTN answers with HTTP 500: such a report is not sent
        client.pending_reports = _ReportsWithValues()

    def _report_callback(self, group: str, r_name: str) -> Any:
        def value() -> list[tuple[datetime, float]]:
            """One reading ``[(time, value)]``, or none when the group has no such value."""
            try:
                assert self._sink is not None
                sample = self._sink.telemetry(group)
            except Exception:
                log.exception("oadr2b: telemetry of %s failed", group)
                return []
            reading = None if sample is None else _reading(sample, r_name)
            if reading is None or not math.isfinite(reading):
                return []
            return [(datetime.fromtimestamp(sample.time_s, UTC), reading)]  # type: ignore[union-attr]

        return value

    # ------------------------------------------------------------------ health

    def _wrap_requests(self, client: Any) -> None:
        """Count each exchange with the VTN as ok or failed (openleadr logs and swallows
        connection, TLS, schema and signature failures: it returns ``(None, {})``)."""
        perform = client._perform_request

        async def counted(service: str, message: Any) -> Any:
            try:
                result = await perform(service, message)
            except Exception as err:
                self._note_error(f"{service}: {err!r}")
                raise
            if isinstance(result, tuple) and result[0] is None:
                self._note_error(f"{service}: no valid answer from the VTN")
            elif isinstance(result, tuple) and _response_code(result[1]) not in (None, 200):
                self._note_error(f"{service}: VTN answered {_response_code(result[1])}")
            else:
                self._status.last_ok_s = self._clock.now()
            return result

        client._perform_request = counted

    def _note_error(self, reason: str) -> None:
        self._status.errors += 1
        self._status.last_error = reason
        log.debug("oadr2b: %s", reason)


def _reading(sample: TelemetrySample, r_name: str) -> float | None:
    if r_name == "power_real":
        return sample.power_kw
    if r_name == "stored_energy":
        return sample.energy_kwh
    if r_name == "voltage":
        return sample.voltage_v
    return sample.current_a


def _descriptor(event: Any) -> dict[str, Any]:
    found = event.get("event_descriptor") if isinstance(event, dict) else None
    return found if isinstance(found, dict) else {}


def _event_id(event: Any) -> str:
    return str(_descriptor(event).get("event_id", "?"))


def _response_code(payload: Any) -> Any:
    if isinstance(payload, dict) and isinstance(payload.get("response"), dict):
        return payload["response"].get("response_code")
    return None
