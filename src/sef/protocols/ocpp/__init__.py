"""OCPP 1.6J and 2.0.1 helpers shared by the EV-charger emulator and agent.

The messages themselves are the maintained ``ocpp`` package's (``ocpp.v16`` and
``ocpp.v201`` ``ChargePoint`` classes, ``call`` / ``call_result`` payloads, JSON-schema
validation); this package only holds what both SEF sides need on top of it:

* :mod:`._profiles`: charging profiles for SEF's commands (W or A, TxProfile and
  TxDefaultProfile) and the limit a charge point derives from the profiles it holds;
* :mod:`._meter`: ``MeterValues`` sampled values (energy register Wh, power W) both ways;
* :mod:`._link`: the websocket side: sub-protocols, HTTP Basic credentials (OCPP Security
  Profile 2), and a receive loop that survives garbage frames.
"""

from ._link import (
    MAX_BAD_FRAMES,
    SUBPROTOCOLS,
    OcppVersion,
    basic_auth_header,
    check_password,
    client_tls,
    frame_problem,
    load_passwords,
    parse_basic_auth,
    route,
    serve_messages,
    server_tls,
)
from ._meter import MeterReading, meter_value, parse_meter_values
from ._profiles import (
    ChargingLimit,
    ProfileStore,
    amps_to_kw,
    clear_request,
    iso,
    kw_to_amps,
    parse_iso,
    parse_profile,
    profile_payload,
)

__all__ = [
    "MAX_BAD_FRAMES",
    "SUBPROTOCOLS",
    "ChargingLimit",
    "MeterReading",
    "OcppVersion",
    "ProfileStore",
    "amps_to_kw",
    "basic_auth_header",
    "check_password",
    "clear_request",
    "client_tls",
    "frame_problem",
    "iso",
    "kw_to_amps",
    "load_passwords",
    "meter_value",
    "parse_basic_auth",
    "parse_iso",
    "parse_meter_values",
    "parse_profile",
    "profile_payload",
    "route",
    "serve_messages",
    "server_tls",
]
