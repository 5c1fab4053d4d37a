"""The central-system (CSMS) side of one charge point's OCPP session, per version.

The classes route what the charge point pushes (``@route`` handlers of the ``ocpp``
package) into a :class:`ChargerState`, and send the two requests the agent makes:
``SetChargingProfile`` and ``ClearChargingProfile``. Every handler answers as the
specification asks and calls ``changed()`` so the agent publishes at once.

EV needs: 2.0.1 ``NotifyEVChargingNeeds`` (ISO 15118: ``departureTime``, AC
``energyAmount`` Wh, ``evMaxCurrent`` A); 1.6 has no such message, so SEF's emulator sends
``DataTransfer`` (vendor ``org.sef``, message ``EVChargingNeeds``, data
``{"departureTime", "energyAmount" Wh, "evMaxW" W}``). A 1.6 charger that sends neither
has no declared departure: telemetry says so and the departure guard does not apply.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from sef.protocols.ocpp import amps_to_kw, clear_request, parse_meter_values, route
from sef.protocols.ocpp._profiles import iso, parse_iso

__all__ = ["Central", "ChargerState", "make_central"]

log = logging.getLogger("sef.agent.evse")

SEF_VENDOR_ID = "org.sef"
PLUGGED_STATES = {"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Occupied"}
_tx_ids = itertools.count(1)


@dataclass
class ChargerState:
    """What the charge point last told the central system (units in the names).

    ``need_wh`` is the AC energy the EV asked for when it declared its needs, and
    ``need_at_wh`` the meter register then, so the energy still wanted is
    ``need_wh - (energy_wh - need_at_wh)``.
    """

    cp_id: str
    version: str = ""
    vendor: str = ""
    model: str = ""
    status: str = "Unknown"
    transaction_id: str | None = None
    tx_start_wh: float | None = None
    energy_wh: float | None = None
    power_w: float = 0.0
    meter_t_s: float | None = None
    departure_s: float | None = None
    need_wh: float | None = None
    need_at_wh: float | None = None
    ev_max_kw: float | None = None

    @property
    def plugged(self) -> bool:
        """An EV is connected (a transaction runs, or the connector says so)."""
        return self.transaction_id is not None or self.status in PLUGGED_STATES

    @property
    def delivered_kwh(self) -> float:
        """AC energy of the running transaction (kWh; 0 without one)."""
        if self.transaction_id is None or self.energy_wh is None or self.tx_start_wh is None:
            return 0.0
        return max(self.energy_wh - self.tx_start_wh, 0.0) / 1000.0

    @property
    def remaining_kwh(self) -> float | None:
        """AC energy the EV still wants (kWh), None when it declared none."""
        if self.need_wh is None or self.need_at_wh is None or self.energy_wh is None:
            return None
        return max(self.need_wh - (self.energy_wh - self.need_at_wh), 0.0) / 1000.0

    def end_transaction(self) -> None:
        self.transaction_id = None
        self.tx_start_wh = None
        self.departure_s = self.need_wh = self.need_at_wh = None

    def meter(self, values: object, tx: str | None) -> None:
        """Take a ``meter_value`` list (raises ``ValueError`` when malformed)."""
        reading = parse_meter_values(values)
        if reading is None:
            return
        if reading.energy_wh is not None:
            self.energy_wh = reading.energy_wh
        if reading.power_w is not None:
            self.power_w = reading.power_w
        self.meter_t_s = reading.t_s
        if tx is not None and self.transaction_id is None:
            # a transaction that began before this session (the agent restarted)
            self.transaction_id = tx
            self.tx_start_wh = self.energy_wh
        if self.tx_start_wh is None and self.transaction_id is not None:
            self.tx_start_wh = self.energy_wh

    def needs(self, departure: object, energy_wh: object, max_kw: float | None) -> None:
        if departure is not None:
            self.departure_s = parse_iso(departure)
        if isinstance(energy_wh, int | float) and energy_wh >= 0:
            self.need_wh, self.need_at_wh = float(energy_wh), self.energy_wh or 0.0
        if max_kw is not None and max_kw > 0:
            self.ev_max_kw = max_kw


class Central(Protocol):
    """One charge point's session as the agent uses it."""

    id: str
    state: ChargerState

    async def route_message(self, raw_msg: str) -> Any: ...

    async def set_profile(self, profile: dict[str, Any]) -> str: ...

    async def clear_profile(self, profile_id: int) -> str: ...


class _Base:
    state: ChargerState
    _changed: Callable[[], None]
    _now: Callable[[], float]
    heartbeat_s: int

    def _setup(
        self, state: ChargerState, changed: Callable[[], None], now: Callable[[], float], hb: int
    ) -> None:
        self.state, self._changed, self._now, self.heartbeat_s = state, changed, now, hb

    def _booted(self, vendor: object, model: object) -> None:
        self.state.vendor, self.state.model = str(vendor), str(model)
        log.info("%s: boot (%s %s, %s)", self.state.cp_id, vendor, model, self.state.version)
        self._changed()


class _CS16(_Base, CP16):  # type: ignore[misc]
    @route("BootNotification")
    def on_boot(
        self, charge_point_vendor: str, charge_point_model: str, **_: Any
    ) -> result16.BootNotification:
        self._booted(charge_point_vendor, charge_point_model)
        return result16.BootNotification(
            current_time=iso(self._now()), interval=self.heartbeat_s, status="Accepted"
        )

    @route("Heartbeat")
    def on_heartbeat(self, **_: Any) -> result16.Heartbeat:
        return result16.Heartbeat(current_time=iso(self._now()))

    @route("StatusNotification")
    def on_status(self, connector_id: int, status: str, **_: Any) -> result16.StatusNotification:
        if connector_id != 0:
            self.state.status = status
            self._changed()
        return result16.StatusNotification()

    @route("Authorize")
    def on_authorize(self, id_tag: str, **_: Any) -> result16.Authorize:
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @route("StartTransaction")
    def on_start(self, meter_start: int, **_: Any) -> result16.StartTransaction:
        tx = next(_tx_ids)
        self.state.end_transaction()
        self.state.transaction_id, self.state.tx_start_wh = str(tx), float(meter_start)
        self.state.energy_wh = float(meter_start)
        log.info("%s: transaction %d started at %d Wh", self.state.cp_id, tx, meter_start)
        self._changed()
        return result16.StartTransaction(transaction_id=tx, id_tag_info={"status": "Accepted"})

    @route("StopTransaction")
    def on_stop(self, meter_stop: int, transaction_id: int, **_: Any) -> result16.StopTransaction:
        self.state.energy_wh = float(meter_stop)
        log.info("%s: transaction %d ended at %d Wh", self.state.cp_id, transaction_id, meter_stop)
        self.state.end_transaction()
        self.state.power_w = 0.0
        self._changed()
        return result16.StopTransaction()

    @route("MeterValues")
    def on_meter_values(
        self, meter_value: list[Any], transaction_id: int | None = None, **_: Any
    ) -> result16.MeterValues:
        self.state.meter(meter_value, None if transaction_id is None else str(transaction_id))
        self._changed()
        return result16.MeterValues()

    @route("DataTransfer")
    def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None, **_: Any
    ) -> result16.DataTransfer:
        if vendor_id != SEF_VENDOR_ID or message_id != "EVChargingNeeds":
            return result16.DataTransfer(status="UnknownVendorId")
        try:
            needs = json.loads(data or "")
            max_w = needs.get("evMaxW")
            self.state.needs(
                needs.get("departureTime"),
                needs.get("energyAmount"),
                float(max_w) / 1000 if isinstance(max_w, int | float) else None,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("%s: EVChargingNeeds refused: %s", self.state.cp_id, exc)
            return result16.DataTransfer(status="Rejected")
        self._changed()
        return result16.DataTransfer(status="Accepted")

    async def set_profile(self, profile: dict[str, Any]) -> str:
        res = await self.call(
            call16.SetChargingProfile(connector_id=1, cs_charging_profiles=profile),
            suppress=False,
        )
        return str(res.status)

    async def clear_profile(self, profile_id: int) -> str:
        res = await self.call(
            call16.ClearChargingProfile(
                **clear_request("ocpp1.6", profile_id=profile_id, purpose=None)
            ),
            suppress=False,
        )
        return str(res.status)


class _CS201(_Base, CP201):  # type: ignore[misc]
    @route("BootNotification")
    def on_boot(self, charging_station: dict[str, Any], **_: Any) -> result201.BootNotification:
        self._booted(charging_station.get("vendor_name"), charging_station.get("model"))
        return result201.BootNotification(
            current_time=iso(self._now()), interval=self.heartbeat_s, status="Accepted"
        )

    @route("Heartbeat")
    def on_heartbeat(self, **_: Any) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=iso(self._now()))

    @route("StatusNotification")
    def on_status(self, connector_status: str, **_: Any) -> result201.StatusNotification:
        self.state.status = connector_status
        self._changed()
        return result201.StatusNotification()

    @route("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> result201.Authorize:
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @route("TransactionEvent")
    def on_transaction_event(
        self,
        event_type: str,
        transaction_info: dict[str, Any],
        meter_value: list[Any] | None = None,
        **_: Any,
    ) -> result201.TransactionEvent:
        tx = str(transaction_info["transaction_id"])
        if event_type == "Started":
            self.state.end_transaction()
            self.state.transaction_id = tx
            log.info("%s: transaction %s started", self.state.cp_id, tx)
        if meter_value:
            self.state.meter(meter_value, tx)
        if event_type == "Ended":
            log.info("%s: transaction %s ended", self.state.cp_id, tx)
            self.state.end_transaction()
            self.state.power_w = 0.0
        self._changed()
        return result201.TransactionEvent()

    @route("MeterValues")
    def on_meter_values(self, meter_value: list[Any], **_: Any) -> result201.MeterValues:
        self.state.meter(meter_value, None)
        self._changed()
        return result201.MeterValues()

    @route("NotifyEVChargingNeeds")
    def on_needs(self, charging_needs: dict[str, Any], **_: Any) -> result201.NotifyEVChargingNeeds:
        ac = charging_needs.get("ac_charging_parameters") or {}
        amps = ac.get("ev_max_current")
        try:
            self.state.needs(
                charging_needs.get("departure_time"),
                ac.get("energy_amount"),
                amps_to_kw(float(amps)) if isinstance(amps, int | float) else None,
            )
        except ValueError as exc:
            log.warning("%s: NotifyEVChargingNeeds refused: %s", self.state.cp_id, exc)
            return result201.NotifyEVChargingNeeds(status="Rejected")
        self._changed()
        return result201.NotifyEVChargingNeeds(status="Accepted")

    async def set_profile(self, profile: dict[str, Any]) -> str:
        res = await self.call(
            call201.SetChargingProfile(evse_id=1, charging_profile=profile), suppress=False
        )
        return str(res.status)

    async def clear_profile(self, profile_id: int) -> str:
        res = await self.call(
            call201.ClearChargingProfile(
                **clear_request("ocpp2.0.1", profile_id=profile_id, purpose=None)
            ),
            suppress=False,
        )
        return str(res.status)


def make_central(
    version: str,
    state: ChargerState,
    connection: Any,
    *,
    changed: Callable[[], None],
    now: Callable[[], float],
    heartbeat_s: int = 60,
    timeout_s: float = 10.0,
) -> Central:
    """The central-system session for a charge point that negotiated ``version``."""
    cls = _CS16 if version == "ocpp1.6" else _CS201
    central = cls(state.cp_id, connection, response_timeout=timeout_s)
    central._setup(state, changed, now, heartbeat_s)
    state.version = version
    out: Central = central
    return out
