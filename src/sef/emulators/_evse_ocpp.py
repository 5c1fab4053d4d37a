"""The emulated charge point's OCPP side, one class per version, on the ``ocpp`` package.

Both classes have the same small API (:class:`ChargePointLink`), which the emulator's
session loop calls, and route the central system's ``SetChargingProfile`` and
``ClearChargingProfile`` into the emulator's :class:`~sef.protocols.ocpp.ProfileStore`.

Messages sent (charge point → central system):

===================  ===========================================  ===============================
                     1.6J                                         2.0.1
===================  ===========================================  ===============================
boot                 ``BootNotification``                         ``BootNotification`` (PowerUp)
status               ``StatusNotification`` (connector 1)         ``StatusNotification`` (EVSE 1)
start                ``Authorize``, ``StartTransaction``         ``Authorize``, ``TransactionEvent``
meter                ``MeterValues`` (transaction id)             ``TransactionEvent`` Updated
stop                 ``StopTransaction`` (EVDisconnected)         ``TransactionEvent`` Ended
needs                ``DataTransfer`` org.sef / EVChargingNeeds   ``NotifyEVChargingNeeds``
heartbeat            ``Heartbeat``                                ``Heartbeat``
===================  ===========================================  ===============================

(2.0.1 starts with a ``TransactionEvent`` of type ``Started``.)
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from sef.protocols.ocpp import ProfileStore, meter_value, parse_profile, route
from sef.protocols.ocpp._profiles import iso

__all__ = ["SEF_VENDOR_ID", "ChargePointLink", "Owner", "make_link"]

log = logging.getLogger("sef.emulator.evse")

SEF_VENDOR_ID = "org.sef"
"""``DataTransfer`` vendor id of SEF's 1.6 EV-needs message (``EVChargingNeeds``)."""


class Owner(Protocol):
    """What the link needs from the emulator."""

    profiles: ProfileStore
    transaction_id: str | None

    def now(self) -> float: ...

    def advance(self) -> None: ...

    def profiles_changed(self) -> None: ...


class ChargePointLink(Protocol):
    """One charge point session over a websocket (either version)."""

    id: str

    async def route_message(self, raw_msg: str) -> Any: ...

    async def boot(self, model: str, vendor: str) -> tuple[str, int]: ...

    async def status(self, status: str) -> None: ...

    async def start(self, id_tag: str, meter_wh: float) -> str: ...

    async def meter(self, energy_wh: float, power_w: float) -> None: ...

    async def stop(self, meter_wh: float) -> None: ...

    async def needs(self, departure_s: float, energy_wh: float, max_w: float) -> None: ...

    async def heartbeat(self) -> None: ...


def _set_profile(owner: Owner, version: str, profile: Any, where: str) -> str:
    owner.advance()  # the old limit holds until now
    try:
        limit = parse_profile(version, profile, owner.now())
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("SetChargingProfile rejected (%s): %s", where, exc)
        return "Rejected"
    if limit.purpose == "TxProfile" and owner.transaction_id is None:
        log.warning("SetChargingProfile rejected: TxProfile without a running transaction")
        return "Rejected"
    owner.profiles.install(limit)
    log.info("%s: profile %d %s %.1f %s", where, limit.profile_id, limit.purpose,
             limit.periods[0][1], limit.unit)  # fmt: skip
    owner.profiles_changed()
    return "Accepted"


class _CP16(CP16):  # type: ignore[misc]
    def __init__(self, cp_id: str, connection: Any, owner: Owner, timeout_s: float) -> None:
        super().__init__(cp_id, connection, response_timeout=timeout_s)
        self.owner = owner

    @route("SetChargingProfile")
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: Any, **_: Any
    ) -> result16.SetChargingProfile:
        return result16.SetChargingProfile(
            status=_set_profile(self.owner, "ocpp1.6", cs_charging_profiles, self.id)
        )

    @route("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        id: int | None = None,  # the OCPP field name
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> result16.ClearChargingProfile:
        self.owner.advance()
        gone = self.owner.profiles.clear(id, charging_profile_purpose, stack_level)
        self.owner.profiles_changed()
        return result16.ClearChargingProfile(status="Accepted" if gone else "Unknown")

    async def boot(self, model: str, vendor: str) -> tuple[str, int]:
        res = await self.call(
            call16.BootNotification(charge_point_model=model, charge_point_vendor=vendor),
            suppress=False,
        )
        return str(res.status), int(res.interval)

    async def status(self, status: str) -> None:
        await self.call(
            call16.StatusNotification(
                connector_id=1,
                error_code="NoError",
                status=status,
                timestamp=iso(self.owner.now()),
            )
        )

    async def start(self, id_tag: str, meter_wh: float) -> str:
        await self.call(call16.Authorize(id_tag=id_tag))
        res = await self.call(
            call16.StartTransaction(
                connector_id=1,
                id_tag=id_tag,
                meter_start=int(meter_wh),
                timestamp=iso(self.owner.now()),
            ),
            suppress=False,
        )
        return str(res.transaction_id)

    async def meter(self, energy_wh: float, power_w: float) -> None:
        tx = self.owner.transaction_id
        await self.call(
            call16.MeterValues(
                connector_id=1,
                transaction_id=int(tx) if tx is not None else None,
                meter_value=[meter_value("ocpp1.6", self.owner.now(), energy_wh, power_w)],
            )
        )

    async def stop(self, meter_wh: float) -> None:
        tx = self.owner.transaction_id
        if tx is None:
            return
        await self.call(
            call16.StopTransaction(
                meter_stop=int(meter_wh),
                timestamp=iso(self.owner.now()),
                transaction_id=int(tx),
                reason="EVDisconnected",
            )
        )

    async def needs(self, departure_s: float, energy_wh: float, max_w: float) -> None:
        data = {
            "departureTime": iso(departure_s),
            "energyAmount": round(energy_wh),
            "evMaxW": max_w,
        }
        await self.call(
            call16.DataTransfer(
                vendor_id=SEF_VENDOR_ID, message_id="EVChargingNeeds", data=json.dumps(data)
            )
        )

    async def heartbeat(self) -> None:
        await self.call(call16.Heartbeat())


class _CP201(CP201):  # type: ignore[misc]
    def __init__(self, cp_id: str, connection: Any, owner: Owner, timeout_s: float) -> None:
        super().__init__(cp_id, connection, response_timeout=timeout_s)
        self.owner = owner
        self._seq = 0
        self._volts = 230.0

    @route("SetChargingProfile")
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: Any, **_: Any
    ) -> result201.SetChargingProfile:
        return result201.SetChargingProfile(
            status=_set_profile(self.owner, "ocpp2.0.1", charging_profile, self.id)
        )

    @route("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> result201.ClearChargingProfile:
        crit = charging_profile_criteria or {}
        self.owner.advance()
        gone = self.owner.profiles.clear(
            charging_profile_id, crit.get("charging_profile_purpose"), crit.get("stack_level")
        )
        self.owner.profiles_changed()
        return result201.ClearChargingProfile(status="Accepted" if gone else "Unknown")

    async def boot(self, model: str, vendor: str) -> tuple[str, int]:
        res = await self.call(
            call201.BootNotification(
                charging_station={"model": model, "vendor_name": vendor}, reason="PowerUp"
            ),
            suppress=False,
        )
        return str(res.status), int(res.interval)

    async def status(self, status: str) -> None:
        await self.call(
            call201.StatusNotification(
                timestamp=iso(self.owner.now()),
                connector_status=status,
                evse_id=1,
                connector_id=1,
            )
        )

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    async def _event(self, kind: str, trigger: str, tx: str, state: str, mv: Any) -> None:
        extra: dict[str, Any] = {}
        if kind == "Started":
            extra = {"evse": {"id": 1, "connector_id": 1}, "id_token": self._token}
        await self.call(
            call201.TransactionEvent(
                event_type=kind,
                timestamp=iso(self.owner.now()),
                trigger_reason=trigger,
                seq_no=self._next_seq(),
                transaction_info={"transaction_id": tx, "charging_state": state},
                meter_value=mv,
                **extra,
            )
        )

    async def start(self, id_tag: str, meter_wh: float) -> str:
        self._token = {"id_token": id_tag, "type": "Local"}
        await self.call(call201.Authorize(id_token=self._token))
        tx = f"{self.id}-{int(self.owner.now())}"
        mv = [meter_value("ocpp2.0.1", self.owner.now(), meter_wh, 0.0, "Transaction.Begin")]
        # In 2.0.1 the charge point names the transaction: it runs from the Started event
        # on. A TxProfile the central system sends as soon as it has read that event may
        # arrive before the event's response; it must find the transaction running.
        self.owner.transaction_id = tx
        try:
            await self._event("Started", "CablePluggedIn", tx, "EVConnected", mv)
        except BaseException:
            self.owner.transaction_id = None
            raise
        return tx

    async def meter(self, energy_wh: float, power_w: float) -> None:
        tx = self.owner.transaction_id
        mv = [meter_value("ocpp2.0.1", self.owner.now(), energy_wh, power_w)]
        if tx is None:
            await self.call(call201.MeterValues(evse_id=1, meter_value=mv))
            return
        state = "Charging" if power_w > 0 else "SuspendedEVSE"
        await self._event("Updated", "MeterValuePeriodic", tx, state, mv)

    async def stop(self, meter_wh: float) -> None:
        tx = self.owner.transaction_id
        if tx is None:
            return
        mv = [meter_value("ocpp2.0.1", self.owner.now(), meter_wh, 0.0, "Transaction.End")]
        await self._event("Ended", "EVDeparted", tx, "Idle", mv)

    async def needs(self, departure_s: float, energy_wh: float, max_w: float) -> None:
        max_a = max(6, round(max_w / (3 * self._volts)))
        await self.call(
            call201.NotifyEVChargingNeeds(
                evse_id=1,
                charging_needs={
                    "requested_energy_transfer": "AC_three_phase",
                    "departure_time": iso(departure_s),
                    "ac_charging_parameters": {
                        "energy_amount": max(0, round(energy_wh)),
                        "ev_min_current": 6,
                        "ev_max_current": max_a,
                        "ev_max_voltage": 400,
                    },
                },
            )
        )

    async def heartbeat(self) -> None:
        await self.call(call201.Heartbeat())


def make_link(
    version: str, cp_id: str, connection: Any, owner: Owner, timeout_s: float = 10.0
) -> ChargePointLink:
    """The charge-point object for ``version`` (``ocpp1.6`` or ``ocpp2.0.1``)."""
    cls = _CP16 if version == "ocpp1.6" else _CP201
    link: ChargePointLink = cls(cp_id, connection, owner, timeout_s)
    return link
