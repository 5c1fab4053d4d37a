"""The EMS (control server): agent registry, calls to agents and groups, and services."""

from sef.ems._caller import Caller, CallRefused, CallTarget
from sef.ems._registry import AgentRecord, Event, PropertyValue, Registry
from sef.ems._service import EMS, snapshot

__all__ = [
    "EMS",
    "AgentRecord",
    "CallRefused",
    "CallTarget",
    "Caller",
    "Event",
    "PropertyValue",
    "Registry",
    "snapshot",
]
