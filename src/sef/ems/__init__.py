"""The EMS (control server): agent registry, calls to agents and groups, and services.

Registry events are typed (:data:`Event`, one dataclass per kind); calls take a validated
:class:`CallTarget` and :class:`CheckedArgs` made by :func:`check_args`.
"""

from sef.ems._admission import Admission, PendingAgent
from sef.ems._caller import Caller, CallRefused, CallTarget, CheckedArgs, check_args
from sef.ems._events import (
    AboutReceived,
    AgentEvent,
    BadMessage,
    Discovered,
    Event,
    EventKind,
    Gap,
    GatewayDown,
    GatewayEvent,
    GatewayUp,
    InterfaceLoaded,
    Offline,
    Online,
    Pending,
    PropertyBackfilled,
    PropertyChanged,
    SessionReset,
    SignalReceived,
    StaleStatus,
)
from sef.ems._records import AgentRecord, PropertyValue
from sef.ems._registry import Registry
from sef.ems._service import EMS, snapshot

__all__ = [
    "EMS",
    "AboutReceived",
    "Admission",
    "AgentEvent",
    "AgentRecord",
    "BadMessage",
    "CallRefused",
    "CallTarget",
    "Caller",
    "CheckedArgs",
    "Discovered",
    "Event",
    "EventKind",
    "Gap",
    "GatewayDown",
    "GatewayEvent",
    "GatewayUp",
    "InterfaceLoaded",
    "Offline",
    "Online",
    "Pending",
    "PendingAgent",
    "PropertyBackfilled",
    "PropertyChanged",
    "PropertyValue",
    "Registry",
    "SessionReset",
    "SignalReceived",
    "StaleStatus",
    "check_args",
    "snapshot",
]
