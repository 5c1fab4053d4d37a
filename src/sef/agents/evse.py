"""EV-charger agent: the OCPP central system for one charge point, on the device template.

``sef evse --listen wss://HOST:PORT --charge-point CP_ID`` listens for the charge point
(OCPP 1.6J or 2.0.1, the sub-protocol it offers) and puts it on the bus under
``edu.pdx.powerlab.demo`` as a :class:`~sef.agents.DERAgent` with the
:class:`OcppCharger` adapter. OCPP is push-based: the charge point sends its status,
transactions and meter values when it likes, so ``read()`` only checks that the session
is alive and the telemetry is the latest state the charge point pushed.

Command mapping (``docs/evse.md``):

============================  ===============================================================
``charge:R:D``                a profile limiting charging to R kW for D s (0 = open-ended)
``idle`` (commanded), ``shed`` a zero-rate profile (pause)
``discharge``                 a zero-rate profile (an EV charger does not discharge)
``endshed``, the agent's own  clear SEF's profiles (the charger's default: full rate)
``idle`` (no sequence, end of a timed sequence, host loss)
============================  ===============================================================

The profile is a ``TxProfile`` for the running transaction, else a ``TxDefaultProfile``
(stack level 1, ids :data:`TX_PROFILE_ID` / :data:`DEFAULT_PROFILE_ID`), in W or in A per
phase (``unit``), starting now, lasting the event's time left plus
:data:`PROFILE_MARGIN_S` (the next event's profile or the release replaces it first; a
charger whose agent died returns to its default a minute after the end). An open-ended
event's profile lasts ``open_hold_s`` clock seconds and is renewed every quarter of that
while healthy.

Departure guard (:mod:`sef.agents._evse_guard`): a sequence that would leave the EV short
of its declared energy at departure is refused with ``sef.Error.DepartureEnergy`` unless
it is forced (it holds a ``shed``) or the guard is off (``departure_guard=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from typing import ClassVar

import websockets
from ocpp.exceptions import OCPPError

from sef.agents._declare import AboutInfo, CallError, Outcome, method
from sef.agents._der import DERAgent
from sef.agents._device import DeviceAdapter, DeviceStatus
from sef.agents._evse_guard import departure_problem, is_forced
from sef.agents._nameplate import ev_charger_nameplate
from sef.agents._ocpp_central import ChargerState
from sef.agents._ocpp_listener import OcppListener, Session
from sef.bus import BrokerURL
from sef.clock import Clock
from sef.interface import DEMO_INTERFACE, IDLE_EVENT, Command, EnergyEvent, Variant, parse_events
from sef.protocols.ocpp import profile_payload
from sef.security import Security

__all__ = ["DEFAULT_PROFILE_ID", "TX_PROFILE_ID", "ChargerRefused", "EVSEAgent", "OcppCharger"]

log = logging.getLogger("sef.agent.evse")

TX_PROFILE_ID = 5101
"""Id of the TxProfile SEF sets (replaced by each new event)."""
DEFAULT_PROFILE_ID = 5100
"""Id of the TxDefaultProfile SEF sets when no transaction runs."""
STACK_LEVEL = 1
PROFILE_MARGIN_S = 60.0
"""Clock seconds a timed event's profile outlasts the event, so the next event's profile
(or the release) replaces it before it expires (no burst at the charger's default in
between); a charger whose agent died returns to its default this long after the end."""
OPEN_HOLD_S = 900.0
"""Clock seconds an open-ended event's profile lasts before the agent renews it."""
DEPARTURE_ERROR = "sef.Error.DepartureEnergy"
"""Error name of a sequence refused by the departure guard."""


class ChargerRefused(Exception):
    """The charge point answered a request with something other than ``Accepted``."""


class OcppCharger(DeviceAdapter):
    """One OCPP charge point, reached through an :class:`OcppListener` the adapter owns.

    Args:
        cp_id: the charge point's identity (last path segment of its URL).
        host, port: where to listen.
        passwords: Basic-auth passwords by id (Security Profile 2), None = none.
        ssl_context: TLS server context, None = plain ``ws://`` (``--insecure``).
        require_client_cert: Security Profile 3 (client certificate names ``cp_id``).
        max_kw: the charger's rating (kW): the guard's and ``endshed``'s rate.
        unit: ``W`` or ``A`` (per phase, on ``phases`` at 230 V) for the profiles.
        heartbeat_s: heartbeat interval given at boot (s).
        connect_wait_s: how long ``connect()`` waits for the charge point (real s).
        open_hold_s: lifetime of an open-ended event's profile (clock s).
    """

    comm_errors: ClassVar[tuple[type[BaseException], ...]] = (
        OSError,
        TimeoutError,
        OCPPError,
        ChargerRefused,
        websockets.WebSocketException,
    )

    def __init__(
        self,
        cp_id: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        passwords: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        require_client_cert: bool = False,
        max_kw: float = 11.0,
        unit: str = "W",
        phases: int = 3,
        heartbeat_s: int = 60,
        connect_wait_s: float = 1.0,
        open_hold_s: float = OPEN_HOLD_S,
    ) -> None:
        self.cp_id, self.max_kw, self.unit, self.phases = cp_id, max_kw, unit, phases
        self.state = ChargerState(cp_id)
        self.connect_wait_s, self.open_hold_s = connect_wait_s, open_hold_s
        self.listener = OcppListener(
            host,
            port,
            states={cp_id: self.state},
            passwords=passwords,
            ssl_context=ssl_context,
            require_client_cert=require_client_cert,
            on_session=self._on_session,
            on_closed=self._on_closed,
            changed=lambda _id: self._changed(),
            now=lambda: self.host.clock.now(),
            heartbeat_s=heartbeat_s,
        )
        self.session: Session | None = None
        self.limit_kw: float | None = None  # the limit SEF set (None: released)
        self.profiles_sent = 0
        self.refused = ""
        self._arrived = asyncio.Event()
        self._armed_at: float | None = None  # clock time of the last open-ended profile
        self._installed: set[int] = set()
        self._lock = asyncio.Lock()

    # -- listener callbacks ------------------------------------------------------------------
    def _changed(self) -> None:
        if hasattr(self, "host"):
            self.host.changed()

    def _on_session(self, session: Session) -> None:
        self.session = session
        self._arrived.set()
        self._changed()

    def _on_closed(self, session: Session, why: str) -> None:
        if self.listener.sessions.get(self.cp_id) is None:
            self._arrived.clear()
        if self.session is session:
            self.session = None
            self.host.device_lost(ConnectionError(why))

    # -- the adapter ---------------------------------------------------------------------------
    async def connect(self) -> None:
        """Listen (first call), then wait up to ``connect_wait_s`` for the charge point."""
        await self.listener.start()
        self.session = self.listener.sessions.get(self.cp_id)
        if self.session is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.connect_wait_s):
                    await self._arrived.wait()
            self.session = self.listener.sessions.get(self.cp_id)
        if self.session is None:
            raise ConnectionError(f"charge point {self.cp_id!r} is not connected")

    async def read(self) -> None:
        """Nothing to poll (the charge point pushes); fail when its session is gone."""
        if self.session is None or self.session.closed.is_set():
            raise ConnectionError(f"charge point {self.cp_id!r} is not connected")

    def _central(self) -> Session:
        if self.session is None:
            raise ConnectionError(f"charge point {self.cp_id!r} is not connected")
        return self.session

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        """Set or clear SEF's charging profile for ``event`` (see the module docstring)."""
        async with self._lock:  # rearm() renews beside the template's apply
            await self._apply(event, left_s)

    async def _apply(self, event: EnergyEvent, left_s: float | None) -> None:
        central = self._central().central
        if event.cmd is Command.ENDSHED or event is IDLE_EVENT:
            for pid in sorted(self._installed):
                await central.clear_profile(pid)
            self._installed.clear()
            self.limit_kw, self._armed_at = None, None
            log.info("%s: charging released (%s)", self.cp_id, event.cmd.value)
            return
        limit = min(float(event.rate_kw), self.max_kw) if event.cmd is Command.CHARGE else 0.0
        tx = self.state.transaction_id
        pid = TX_PROFILE_ID if tx is not None else DEFAULT_PROFILE_ID
        now = self.host.clock.now()
        payload = profile_payload(
            central.state.version,
            profile_id=pid,
            purpose="TxProfile" if tx is not None else "TxDefaultProfile",
            limit_kw=limit,
            unit=self.unit,
            start_s=now,
            duration_s=self.open_hold_s if left_s is None else left_s + PROFILE_MARGIN_S,
            transaction_id=tx,
            stack_level=STACK_LEVEL,
            phases=self.phases,
        )
        status = await central.set_profile(payload)
        if status != "Accepted":
            raise ChargerRefused(f"SetChargingProfile {status} ({limit:.1f} kW)")
        self._installed.add(pid)
        self.limit_kw, self.profiles_sent = limit, self.profiles_sent + 1
        self._armed_at = now if left_s is None else None
        log.info("%s: limit %.1f kW (%s)", self.cp_id, limit, event.as_tuple())

    async def rearm(self, event: EnergyEvent, left_s: float | None) -> None:
        """Renew an open-ended event's profile every quarter of ``open_hold_s``."""
        due = self._armed_at is not None and left_s is None
        if due and self.host.clock.now() - (self._armed_at or 0.0) >= self.open_hold_s / 4:
            await self.apply(event, None)

    async def close(self) -> None:
        """Forget the session; a live connection stays (a refused profile is no reason to
        drop the charge point), a dead one is already gone. The listener stays up."""
        self.session = None
        self._installed.clear()

    async def shutdown(self) -> None:
        """Stop listening (the agent's stop)."""
        await self.listener.stop()

    def nameplate(self) -> dict[str, Variant] | None:
        """The charger's rating (kW, configuration: OCPP boot carries none), once the
        charge point has connected."""
        if not self.state.version:
            return None
        return ev_charger_nameplate(charge_kw=self.max_kw)

    def laxity_s(self) -> float | None:
        """Seconds the charging can still be postponed (None when no need is declared)."""
        s = self.state
        remaining = s.remaining_kwh
        if s.departure_s is None or remaining is None:
            return None
        rate = min(self.max_kw, s.ev_max_kw or self.max_kw)
        return s.departure_s - self.host.clock.now() - remaining / rate * 3600.0

    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        """EV session keys (kW, kWh, W, Wh, Unix s, s); see ``docs/evse.md``."""
        s = self.state
        out: dict[str, Variant] = {
            "EV_Plugged": Variant("b", s.plugged),
            "EV_Energy_kWh": Variant("d", round(s.delivered_kwh, 4)),
            "EV_Rate_kW": Variant("d", round(s.power_w / 1000.0, 4)),
            "Power_W": Variant("d", round(s.power_w, 1)),
            "Connector_Status": Variant("s", s.status),
            "Charge_Limit_kW": Variant("d", -1.0 if self.limit_kw is None else self.limit_kw),
            "Sys_Rated_Power": Variant("d", self.max_kw),
            "Comm_Fault": Variant("b", bool(status.fault)),
        }
        if s.energy_wh is not None:
            out["Energy_Used_Wh"] = Variant("d", round(s.energy_wh, 1))
        if s.version:
            out["OCPP_Version"] = Variant("s", s.version)
        if s.departure_s is not None:
            out["EV_Departure"] = Variant("u", max(0, int(s.departure_s)))
        if s.remaining_kwh is not None:
            out["EV_Need_kWh"] = Variant("d", round(s.remaining_kwh, 4))
        laxity = self.laxity_s()
        if laxity is not None:
            out["EV_Laxity_s"] = Variant("d", round(laxity, 1))
        if status.fault:
            out["Fault"] = Variant("s", status.fault)
        if self.refused:
            out["Refused"] = Variant("s", self.refused)
        return out


class EVSEAgent(DERAgent[OcppCharger]):
    """The agent of one OCPP charge point (see the module docstring).

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        charger: the adapter (it owns the OCPP listener).
        departure_guard: refuse sequences that miss the declared departure energy.
        poll_s: real seconds between telemetry publishes (and liveness checks).
        clock, groups, keepalive_s, security, sign_telemetry: as for
            :class:`~sef.agents.DERAgent`.
    """

    def __init__(
        self,
        agent_id: str,
        broker: BrokerURL | str,
        charger: OcppCharger,
        *,
        departure_guard: bool = True,
        poll_s: float = 1.0,
        clock: Clock | None = None,
        groups: Sequence[str] = (),
        keepalive_s: int = 10,
        security: Security | None = None,
        sign_telemetry: bool = False,
    ) -> None:
        super().__init__(
            agent_id,
            broker,
            charger,
            poll_s=poll_s,
            backoff_s=(poll_s, 2 * poll_s),
            clock=clock,
            groups=groups,
            keepalive_s=keepalive_s,
            security=security,
            sign_telemetry=sign_telemetry,
            about=AboutInfo(
                app_name="SEF EVSE",
                model_number="sef-evse",
                description="EV charger agent: OCPP 1.6J / 2.0.1 central system",
            ),
        )
        self.departure_guard = departure_guard

    @method(DEMO_INTERFACE, "EnergyMethod")
    async def energy_method(self, cmds: list[tuple[str, int, int]]) -> Outcome:
        """``EnergyMethod`` with the departure guard in front of the template's."""
        events = parse_events(cmds)
        charger = self.device
        s = charger.state
        problem = departure_problem(
            events,
            now_s=self.clock.now(),
            departure_s=s.departure_s if s.plugged else None,
            remaining_kwh=s.remaining_kwh,
            max_kw=min(charger.max_kw, s.ev_max_kw or charger.max_kw),
        )
        if problem is not None:
            shown = [e.as_tuple() for e in events]
            if self.departure_guard and not is_forced(events):
                charger.refused = f"{shown}: {problem}"
                log.warning("%s: refused %s: %s", self.agent_id, shown, problem)
                self._publish()
                raise CallError(f"{problem} (a shed forces it)", DEPARTURE_ERROR)
            log.warning("%s: %s forced although it %s", self.agent_id, shown, problem)
        return await super().energy_method(cmds)

    async def on_stop(self) -> None:
        """Stop the template, then the OCPP listener."""
        await super().on_stop()
        await self.device.shutdown()
