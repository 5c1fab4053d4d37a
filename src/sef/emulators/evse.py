"""EV-charger emulator: an OCPP charge point (1.6J or 2.0.1) driven by the EV model.

One connector, one EV session (:class:`sef.models.ev.EVFleet` with ``n == 1``): the EV
plugs in at its arrival, the charge point authorizes and starts a transaction, reports
meter values, obeys the charging profiles the central system sets, and stops the
transaction when the EV leaves. Messages per version: :mod:`._evse_ocpp`.

Physics: the charger's limit is the composite of its profiles
(:class:`~sef.protocols.ocpp.ProfileStore`: TxProfile over TxDefaultProfile, capped by
a max profile) and its rating ``max_kw``; the EV takes ``min(limit, its acceptance)``.
The model advances on the clock before every message and every ``tick_s``; a step is
split at every profile boundary (start, end of a duration, a new period), so a
``charge:7:1800`` profile meters exactly 7 kW × 1800 s. The meter register is
``energy_wh0 + delivered`` (Wh).

Link: ``ws://`` or ``wss://HOST:PORT/PATH/CP_ID`` with the version's sub-protocol;
with a password, HTTP Basic authentication (user = charge point id: OCPP Security
Profile 2 over ``wss://``). The charge point reconnects after a lost connection (backoff
0.5 s doubling to 5 s, real) and boots again; the session and profiles survive it (a
charger keeps charging while its central system is away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import websockets
from ocpp.exceptions import OCPPError
from websockets.asyncio.client import connect

from sef.clock import Clock, default_clock
from sef.models.ev import EVFleet, EVSessions
from sef.protocols.ocpp import (
    OcppVersion,
    ProfileStore,
    basic_auth_header,
    serve_messages,
)

from ._evse_ocpp import ChargePointLink, make_link

__all__ = ["EVSEEmulator", "ProfileEvent", "default_session"]

log = logging.getLogger("sef.emulator.evse")

_MIN_REAL_TICK_S = 0.05
STATUS_16 = {
    "idle": "Available",
    "charging": "Charging",
    "paused": "SuspendedEVSE",
    "full": "SuspendedEV",
}
STATUS_201 = {"idle": "Available", "charging": "Occupied", "paused": "Occupied", "full": "Occupied"}

ProfileEvent = tuple[float, float | None, float]
"""``(clock time s, limit kW or None, meter register Wh)`` at each profile change (the
model stepped to that instant first)."""


def default_session(
    now_s: float,
    *,
    arrive_in_s: float = 0.0,
    stay_h: float = 10.0,
    need_kwh: float = 20.0,
    battery_kwh: float = 60.0,
    ev_max_kw: float = 11.0,
    efficiency: float = 0.9,
    soc0: float = 0.3,
) -> EVSessions:
    """One session arriving ``arrive_in_s`` clock seconds after ``now_s`` and staying
    ``stay_h`` hours, wanting ``need_kwh`` (battery side)."""
    arrival = now_s + arrive_in_s
    return EVSessions.build(
        arrival,
        arrival + stay_h * 3600.0,
        need_kwh,
        battery_kwh=battery_kwh,
        max_rate_kw=ev_max_kw,
        efficiency=efficiency,
        soc0=soc0,
    )


class EVSEEmulator:
    """One emulated charge point.

    Args:
        url: central system URL, ``ws[s]://HOST:PORT/.../CP_ID`` (the last path segment
            is the charge point id).
        version: ``ocpp1.6`` or ``ocpp2.0.1``.
        clock: time source (default :func:`sef.clock.default_clock`).
        session: the EV session (one), default :func:`default_session` from now.
        max_kw: the charger's rating (kW AC).
        password: Basic-auth password (Security Profile 2), None = send none.
        ssl_context: TLS context for ``wss://`` (None: the system's default trust).
        meter_interval_s: clock seconds between meter values.
        tick_s: clock seconds between model steps (at least 50 ms real).
        energy_wh0: meter register at start (Wh).
    """

    def __init__(
        self,
        url: str,
        *,
        version: str = OcppVersion.V16,
        clock: Clock | None = None,
        session: EVSessions | None = None,
        max_kw: float = 11.0,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        meter_interval_s: float = 60.0,
        tick_s: float = 1.0,
        energy_wh0: float = 0.0,
        id_tag: str = "SEF-EV-1",
        on_ready: Callable[[EVSEEmulator], None] | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"expected ws://HOST:PORT/ID or wss://..., got {url!r}")
        self.cp_id = urllib.parse.unquote(parts.path.rstrip("/").rpartition("/")[2])
        if not self.cp_id:
            raise ValueError(f"the URL names no charge point id (last path segment): {url!r}")
        if version not in (OcppVersion.V16, OcppVersion.V201):
            raise ValueError(f"OCPP version must be ocpp1.6 or ocpp2.0.1, got {version!r}")
        self.url, self.version, self.password = url, str(version), password
        self.ssl_context = ssl_context
        self.clock = clock or default_clock()
        now = self.clock.now()
        self.fleet = EVFleet(session or default_session(now), t0_s=now)
        if self.fleet.n != 1:
            raise ValueError("the emulator charges one EV session")
        self.max_kw = max_kw
        self.meter_interval_s, self.tick_s = meter_interval_s, tick_s
        self.energy_wh0, self.id_tag = energy_wh0, id_tag
        self.profiles = ProfileStore()
        self.transaction_id: str | None = None
        self.profile_log: list[ProfileEvent] = []
        self.meter_log: deque[tuple[float, float]] = deque([(now, energy_wh0)], maxlen=100_000)
        """``(clock s, meter register Wh)`` after every model step (the newest 100 000)."""
        self.boots = 0
        self.meter_values = 0
        self.booted = asyncio.Event()
        self.on_ready = on_ready
        self._kick = asyncio.Event()
        self._status_sent: str | None = None
        self._needs_sent = False

    # -- Owner (for the link) -------------------------------------------------------------
    def now(self) -> float:
        """Clock time (Unix s)."""
        return self.clock.now()

    def profiles_changed(self) -> None:
        """A profile was set or cleared: record the new limit, report at once."""
        now = self.now()
        limit = self.profiles.limit_kw(now, self.transaction_id)
        self.profile_log.append((now, limit, self.register_wh))
        self._kick.set()

    # -- physics ----------------------------------------------------------------------------
    def limit_kw(self, t_s: float | None = None) -> float:
        """The charger's limit at ``t_s`` (default now): profiles capped by the rating (kW)."""
        t = self.now() if t_s is None else t_s
        lim = self.profiles.limit_kw(t, self.transaction_id)
        return self.max_kw if lim is None else min(lim, self.max_kw)

    def _boundaries(self, t0: float, t1: float) -> list[float]:
        points = {t1}
        for p in self.profiles.profiles.values():
            points.add(p.start_s)
            if p.duration_s is not None:
                points.add(p.start_s + p.duration_s)
            points.update(p.start_s + start for start, _, _ in p.periods)
        s = self.fleet.sessions
        points.update((float(s.arrival_s[0]), float(s.departure_s[0])))
        return sorted(t for t in points if t0 < t <= t1)

    def advance(self) -> None:
        """Step the EV to now, split at every profile boundary."""
        now = self.now()
        for t in self._boundaries(self.fleet.t_s, now):
            dt = t - self.fleet.t_s
            if dt > 0:
                self.fleet.step(dt, self.limit_kw(self.fleet.t_s))
                self.meter_log.append((t, self.register_wh))

    def register_at(self, t_s: float) -> float:
        """The meter register at clock time ``t_s`` (Wh), interpolated in :attr:`meter_log`
        (exact at the profile boundaries, where the model steps; the last value for a
        time the model has not reached yet)."""
        times = [t for t, _ in self.meter_log]
        values = [e for _, e in self.meter_log]
        return float(np.interp(t_s, times, values))

    @property
    def register_wh(self) -> float:
        """The meter's energy register (Wh)."""
        return self.energy_wh0 + float(self.fleet.delivered_kwh[0]) * 1000.0

    @property
    def power_w(self) -> float:
        """Power drawn in the last step (W)."""
        return float(self.fleet.power_kw[0]) * 1000.0

    @property
    def plugged(self) -> bool:
        """Whether the EV is plugged in now."""
        return bool(self.fleet.plugged()[0])

    def _state(self) -> str:
        if not self.plugged:
            return "idle"
        if self.fleet.remaining_kwh[0] <= 1e-9:
            return "full"
        return "charging" if self.limit_kw() > 0 else "paused"

    # -- the link ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, boot and run the session; reconnect after every loss (until cancelled)."""
        backoff = 0.5
        headers = {}
        if self.password is not None:
            headers["Authorization"] = basic_auth_header(self.cp_id, self.password)
        last_fault = ""
        while True:
            try:
                async with connect(
                    self.url,
                    subprotocols=[websockets.Subprotocol(self.version)],
                    additional_headers=headers,
                    ssl=self.ssl_context if self.url.startswith("wss:") else None,
                    open_timeout=5,
                    ping_interval=10,
                ) as ws:
                    if ws.subprotocol != self.version:
                        raise ConnectionError(
                            f"central system did not accept sub-protocol {self.version}"
                        )
                    link = make_link(self.version, self.cp_id, ws, self)
                    reader = asyncio.create_task(serve_messages(link, ws, log))
                    try:
                        await self._session(link, reader)
                    finally:
                        reader.cancel()
                        await asyncio.wait([reader])  # our own cancellation still propagates
                backoff = 0.5
            except (OSError, TimeoutError, OCPPError, websockets.WebSocketException) as exc:
                text = f"{type(exc).__name__}: {exc}"
                if text != last_fault:
                    log.warning("%s: link to %s lost: %s", self.cp_id, self.url, text)
                last_fault = text
            _raise_if_cancelling()
            self.booted.clear()
            self._status_sent = None
            self._needs_sent = False  # a restarted central system learns them again
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, 5.0)

    async def _session(self, link: ChargePointLink, reader: asyncio.Task[None]) -> None:
        status, interval = await link.boot("SEF-EVSE", "SEF")
        while status != "Accepted":
            log.info("%s: boot %s, retrying in %d s", self.cp_id, status, interval)
            await asyncio.sleep(max(interval, 1))
            status, interval = await link.boot("SEF-EVSE", "SEF")
        self.boots += 1
        self.booted.set()
        log.info("%s: booted (%s, heartbeat %d s)", self.cp_id, self.version, interval)
        if self.on_ready is not None:
            self.on_ready(self)
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        last_meter = float("-inf")
        while not reader.done():
            _raise_if_cancelling()
            self.advance()
            await self._sync_session(link)
            now = self.now()
            if self._kick.is_set() or now - last_meter >= self.meter_interval_s:
                self._kick.clear()
                await link.meter(self.register_wh, self.power_w)
                self.meter_values += 1
                last_meter = now
            if interval > 0 and loop.time() - last_beat >= interval:
                await link.heartbeat()
                last_beat = loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(self.clock.to_real(self.tick_s), _MIN_REAL_TICK_S)):
                    await self._kick.wait()
        raise ConnectionError("central system closed the connection")

    async def _sync_session(self, link: ChargePointLink) -> None:
        """Start or stop the transaction as the EV arrives or leaves; report the status."""
        if self.plugged and self.transaction_id is None:
            await self._send_status(link, "Preparing" if self.version == "ocpp1.6" else "Occupied")
            self.transaction_id = await link.start(self.id_tag, self.register_wh)
            self._needs_sent = False
            log.info("%s: transaction %s started", self.cp_id, self.transaction_id)
        if self.plugged and not self._needs_sent:
            ev = self.fleet
            max_w = min(self.max_kw, float(ev.sessions.max_rate_kw[0])) * 1000.0
            await link.needs(
                float(ev.sessions.departure_s[0]), float(ev.remaining_ac_kwh[0]) * 1000, max_w
            )
            self._needs_sent = True
        if not self.plugged and self.transaction_id is not None:
            await link.stop(self.register_wh)
            log.info("%s: transaction %s ended", self.cp_id, self.transaction_id)
            self.transaction_id = None
            self.profiles.end_transaction()
        table = STATUS_16 if self.version == "ocpp1.6" else STATUS_201
        await self._send_status(link, table[self._state()])

    async def _send_status(self, link: ChargePointLink, status: str) -> None:
        if status != self._status_sent:
            await link.status(status)
            self._status_sent = status


def _raise_if_cancelling() -> None:
    """Raise :class:`asyncio.CancelledError` if this task is being cancelled: on Python
    3.11 ``asyncio.wait_for`` (inside the ``ocpp`` package's ``call``) can swallow a
    cancellation that lands as its reply arrives, and the session would run on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def run_evse_emulator(emulator: EVSEEmulator) -> Any:
    """Run ``emulator`` until cancelled (the CLI's entry point)."""
    return await emulator.run()
