"""The OpenADR 3 VEN adapter: polls a VTN's programs and events over REST + JSON, hands
them to a :class:`~sef.openadr.DrSink` as :class:`~sef.openadr.DrEvent`, and posts usage
reports.

It uses ``httpx.AsyncClient`` itself (``openadr3``'s client is synchronous) and the
``openadr3`` models to read events (:mod:`sef.openadr._oadr3_convert`) and to check the
reports it sends. What it does, in short (docs/openadr.md, "OpenADR 3"):

- **auth**: OAuth2 client credentials (token endpoint from ``GET /auth/server`` or
  ``/auth/token``), renewed once on a 401; or a static bearer token.
- **VEN object**: with ``register_ven`` (default) the adapter looks its ``venName`` up in
  ``GET /vens`` and creates it (``POST /vens``) when missing; the id is
  :attr:`AdapterStatus.ven_id`. A VTN that refuses ``/vens`` to VENs (403/404/405) is
  accepted: no VEN id. ``registered`` means the VTN answered an authenticated poll.
- **polling**: ``GET /programs``, then ``GET /events?programID=…`` for each followed
  program (paged with ``skip``/``limit``), every ``poll_interval_s`` on the EMS clock. An
  event is new by ``id``; a changed ``modificationDateTime`` (or, without one, changed
  content) is a modification: the adapter bumps ``DrEvent.modification``. An event that
  disappears before its end is a cancellation (``DrSink.on_cancel``); one that disappears
  after its end is forgotten.
- **opt answers**: OpenADR 3 has no ``oadrCreatedEvent``; the sink's decision is kept in
  :meth:`Oadr3Adapter.decisions` and nothing is sent. An event the adapter cannot read is
  logged (logger ``sef.openadr``) and recorded as opted out; the sink never sees it.
- **reports**: for every opted-in event whose ``reportDescriptors`` ask for ``USAGE``,
  while it is active, one ``POST /reports`` every ``report_interval_s`` with the groups'
  power (kW, ``DIRECT_READ``) from ``DrSink.telemetry``.
- **health**: failures count in :meth:`status`; polling goes on with a doubling wait up to
  ``max_backoff_s``.
- **limits** (a hostile VTN): an answer larger than ``max_answer_bytes`` is refused
  mid-read; a paged list that repeats a full page of known ids (``skip`` ignored) or holds
  more than ``max_events_per_poll`` objects fails the poll (nothing is cancelled for it);
  long runs of events yield to the EMS loop whenever they have held it
  :data:`sef.tasks.SLICE_S` (:class:`sef.tasks.TimeSlice`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
from dataclasses import dataclass, replace
from typing import Any

import httpx
from openadr3.entities.raw import RawProgram
from pydantic import ValidationError

from sef.clock import Clock
from sef.openadr._adapter import AdapterStatus, DrSink
from sef.openadr._model import DrEvent, Opt, OptDecision
from sef.openadr._oadr3_config import Oadr3Config
from sef.openadr._oadr3_convert import (
    SOURCE,
    EventRejected,
    to_dr_event,
    usage_report,
    wants_usage,
)
from sef.openadr._oadr3_http import Pager, VtnError, fetch_token, read_capped
from sef.tasks import TimeSlice

__all__ = ["Oadr3Adapter", "Oadr3EventState", "VtnError"]

log = logging.getLogger("sef.openadr")


@dataclass(frozen=True)
class Oadr3EventState:
    """What the adapter knows of one event.

    Attributes:
        event_id: the VTN's id.
        program_id: its program's id.
        version: ``modificationDateTime`` (or a digest of the content without one).
        modification: the counter handed over as ``DrEvent.modification`` (0 first).
        decision: the sink's answer, or the adapter's opt-out for an unreadable event.
        event: the converted event, ``None`` when it could not be read.
        wants_usage: its ``reportDescriptors`` ask for USAGE.
    """

    event_id: str
    program_id: str
    version: str
    modification: int
    decision: OptDecision
    event: DrEvent | None
    wants_usage: bool


def _version(raw: dict[str, Any]) -> str:
    stamp = raw.get("modificationDateTime")
    if isinstance(stamp, str) and stamp:
        return stamp
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


class Oadr3Adapter:
    """OpenADR 3 VEN (source ``"oadr3"``); see the module text for what it does."""

    source = SOURCE

    def __init__(self, config: Oadr3Config, *, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._status = AdapterStatus(source=SOURCE, vtn=config.vtn_url)
        self._token: str | None = config.token
        self._http: httpx.AsyncClient | None = None
        self._sink: DrSink | None = None
        self._events: dict[str, Oadr3EventState] = {}
        self._program_descriptors: dict[str, list[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._registered_ven = False
        self.polls = 0
        """Completed poll cycles."""
        self.reports_sent = 0
        """Reports the VTN accepted."""

    # -- VenAdapter --------------------------------------------------------------------

    async def start(self, sink: DrSink) -> None:
        """Fetch a token, poll once (events reach ``sink`` before this returns), then keep
        polling and reporting in the background.

        Raises:
            ConnectionError: the first exchange failed (unreachable, or credentials
                refused); :meth:`status` says why.
        """
        if self._tasks:
            raise RuntimeError("adapter already started")
        self._sink = sink
        cfg = self.config
        verify: ssl.SSLContext | bool = cfg.verify_tls
        if cfg.ca_file is not None:
            verify = ssl.create_default_context(cafile=cfg.ca_file)
        self._http = httpx.AsyncClient(
            base_url=cfg.vtn_url.rstrip("/"), timeout=cfg.timeout_s, verify=verify
        )
        try:
            await self._poll_once()
        except BaseException as exc:
            await self._http.aclose()
            self._http = None
            if not isinstance(exc, VtnError):
                raise
            self._failed(exc)
            raise ConnectionError(f"OpenADR 3 VTN {cfg.vtn_url}: {exc}") from exc
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name="oadr3-poll"),
            asyncio.create_task(self._report_loop(), name="oadr3-report"),
        ]

    async def stop(self) -> None:
        """Stop polling and reporting; idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def status(self) -> AdapterStatus:
        """Health now (a copy)."""
        return replace(self._status, programs=list(self._status.programs))

    def decisions(self) -> dict[str, Oadr3EventState]:
        """Every event being followed, by id, with the opt decision on its newest version."""
        return dict(self._events)

    # -- HTTP --------------------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        self._status.errors += 1
        self._status.last_error = str(exc)
        log.warning("OpenADR 3 VTN %s: %s", self.config.vtn_url, exc)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One authenticated request; its JSON. A 401 with client credentials fetches a new
        token and tries once more."""
        if self._http is None:
            raise VtnError("adapter not started")
        try:
            for attempt in range(2):
                if self._token is None:
                    self._token = await fetch_token(self._http, self.config)
                headers = {"Authorization": f"Bearer {self._token}"}
                status, body = await read_capped(
                    self._http,
                    method,
                    path,
                    max_bytes=self.config.max_answer_bytes,
                    headers=headers,
                    **kwargs,
                )
                if status == 401 and attempt == 0 and self.config.token is None:
                    self._token = None
                    continue
                if status >= 400:
                    text = body[:200].decode("utf-8", "replace")
                    raise VtnError(f"{method} {path}: HTTP {status} {text}")
                return json.loads(body) if body else None
        except httpx.HTTPError as exc:
            raise VtnError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # JSON
            raise VtnError(f"{method} {path}: answer is not JSON") from exc
        raise VtnError(f"{method} {path}: HTTP 401 after a new token")

    async def _get_all(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every object of a paged list (``skip``/``limit``), each id once.

        Raises:
            VtnError: an exchange failed, or the list is endless or too long
                (:class:`~sef.openadr._oadr3_http.Pager`).
        """
        cfg = self.config
        pager = Pager(path, cfg.page_size, cfg.max_events_per_poll)
        while True:
            page = await self._request(
                "GET",
                path,
                params={**params, "skip": str(pager.skip), "limit": str(pager.page_size)},
            )
            if not pager.take(page):
                return pager.found

    # -- polling -----------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        failures = 0
        while True:
            poll_s = self.config.poll_interval_s
            await self.clock.sleep(
                max(poll_s, min(poll_s * 2**failures, self.config.max_backoff_s))
            )
            try:
                await self._poll_once()
                failures = 0
            except VtnError as exc:
                failures = min(failures + 1, 30)
                self._failed(exc)
            except Exception as exc:  # a bug must not end polling
                failures = min(failures + 1, 30)
                log.exception("OpenADR 3 poll failed")
                self._failed(exc)

    async def _programs(self) -> dict[str, str]:
        """Followed programs: id → name."""
        followed: dict[str, str] = {}
        for raw in await self._get_all("/programs", {}):
            try:
                program = RawProgram.model_validate(raw)
            except ValidationError as exc:
                log.warning("OpenADR 3: unreadable program %r skipped: %s", raw.get("id"), exc)
                continue
            if program.id is None:
                continue
            if self.config.programs and program.program_name not in self.config.programs:
                continue
            followed[program.id] = program.program_name
            descriptors = raw.get("payloadDescriptors")
            self._program_descriptors[program.id] = (
                [d for d in descriptors if isinstance(d, dict)]
                if isinstance(descriptors, list)
                else []
            )
        return followed

    async def _register(self) -> None:
        """Find this VEN by name (``GET /vens``) or create it (``POST /vens``); its id goes to
        :attr:`AdapterStatus.ven_id`. A VTN without ``/vens`` for VENs (404, 405, 403) is
        fine: the adapter goes on unregistered."""
        name = self.config.ven_name
        try:
            vens = await self._get_all("/vens", {})
            found = [v for v in vens if v.get("venName") == name]
            if not found:
                created = await self._request("POST", "/vens", json={"venName": name})
                found = [created] if isinstance(created, dict) else []
        except VtnError as exc:
            if not any(f"HTTP {code}" in str(exc) for code in (403, 404, 405)):
                raise
            log.info("OpenADR 3 VTN %s keeps no VEN objects for us: %s", self.config.vtn_url, exc)
            self._registered_ven = True
            return
        ven_id = found[0].get("id") if found else None
        self._status.ven_id = ven_id if isinstance(ven_id, str) else None
        self._registered_ven = True

    async def _poll_once(self) -> None:
        if self.config.register_ven and not self._registered_ven:
            await self._register()
        programs = await self._programs()
        pages = await asyncio.gather(
            *(self._get_all("/events", {"programID": pid}) for pid in programs)
        )
        self._status.registered = True
        self._status.last_ok_s = self.clock.now()
        self._status.programs = sorted(programs.values())
        seen: set[str] = set()
        pace = TimeSlice()  # let MQTT and the controllers run
        for program_id, events in zip(programs, pages, strict=True):
            for raw in events:
                event_id = raw.get("id")
                if not isinstance(event_id, str) or raw.get("programID") != program_id:
                    continue
                seen.add(event_id)
                await self._consider(raw, event_id, program_id, programs[program_id])
                await pace.pause()
        await self._drop_vanished(seen)
        self.polls += 1

    async def _consider(
        self, raw: dict[str, Any], event_id: str, program_id: str, program: str
    ) -> None:
        version = _version(raw)
        known = self._events.get(event_id)
        if known is not None and known.version == version:
            return
        modification = 0 if known is None else known.modification + 1
        assert self._sink is not None
        event: DrEvent | None
        try:
            event = to_dr_event(
                raw,
                program_name=program,
                modification=modification,
                now_s=self.clock.now(),
                program_descriptors=self._program_descriptors.get(program_id, ()),
            )
        except EventRejected as exc:
            event = None
            decision = OptDecision.opt_out(f"malformed OpenADR 3 event: {exc}")
            log.warning("OpenADR 3 event %s (program %s) opted out: %s", event_id, program, exc)
        except Exception as exc:  # a conversion bug: this event only, never the poll
            event = None
            decision = OptDecision.opt_out(f"failed to read the event: {exc!r}")
            log.exception("OpenADR 3 event %s (program %s) opted out", event_id, program)
        else:
            try:
                decision = await self._sink.on_event(event)
            except Exception as exc:
                log.exception("OpenADR 3 event %s: the sink failed", event_id)
                decision = OptDecision.opt_out(f"failed: {exc}")
        self._events[event_id] = Oadr3EventState(
            event_id, program_id, version, modification, decision, event, wants_usage(raw)
        )

    async def _drop_vanished(self, seen: set[str]) -> None:
        assert self._sink is not None
        now = self.clock.now()
        vanished = [known for known in self._events if known not in seen]
        pace = TimeSlice()  # thousands cancelled at once must not stall the loop
        for event_id in vanished:
            await pace.pause()
            state = self._events.pop(event_id)
            if state.event is not None and now < state.event.end_s:
                log.info("OpenADR 3 event %s removed at the VTN: cancelled", event_id)
                try:
                    await self._sink.on_cancel(SOURCE, event_id, state.modification)
                except Exception:
                    log.exception("OpenADR 3 event %s: the sink failed to cancel", event_id)

    # -- reports -----------------------------------------------------------------------

    async def _report_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.report_interval_s)
            for state in list(self._events.values()):
                event = state.event
                now = self.clock.now()
                if event is None or not state.wants_usage or state.decision.opt is not Opt.IN:
                    continue
                if not event.start_s <= now < event.end_s:
                    continue
                try:
                    await self._report(state, event)
                except VtnError as exc:
                    self._failed(exc)
                except Exception as exc:
                    log.exception("OpenADR 3 report for %s failed", state.event_id)
                    self._failed(exc)

    async def _report(self, state: Oadr3EventState, event: DrEvent) -> None:
        assert self._sink is not None
        groups = self.config.report_groups or event.targets.groups or ("*",)
        samples = [s for s in map(self._sink.telemetry, groups) if s is not None]
        if not samples:
            return
        body = usage_report(state.program_id, event.event_id, self.config.ven_name, samples)
        await self._request("POST", "/reports", json=body)
        self.reports_sent += 1
        self._status.last_ok_s = self.clock.now()
