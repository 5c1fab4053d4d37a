"""Demand response for the EMS: SEF as a VEN of utility programs (OpenADR 2.0b, OpenADR 3).

A protocol adapter (:class:`VenAdapter`) registers with the utility's VTN and hands every
event over as a library-neutral :class:`DrEvent`; the bridge maps it (``docs/openadr.md``)
to ``EnergyMethod`` sequences for the targeted agents or to target windows for the live
controller, answers opt-in / opt-out, and feeds usage reports. The protocol libraries
(``openleadr``, ``openadr3``) are imported only by their adapter modules, on use.
"""

from sef.openadr._adapter import AdapterStatus, DrSink, VenAdapter
from sef.openadr._bridge import DrBridge
from sef.openadr._config import DrConfig, load_dr_config
from sef.openadr._history import DrHistory, EventRecord
from sef.openadr._mapping import plan_event, targeted_members
from sef.openadr._mapping_tables import MappingTable, load_mapping
from sef.openadr._model import (
    DrEvent,
    DrInterval,
    DrSignal,
    EventKey,
    EventStatus,
    Opt,
    OptDecision,
    Targets,
    TelemetrySample,
)
from sef.openadr._oadr2b import Oadr2bAdapter, Oadr2bConfig
from sef.openadr._oadr3_config import Oadr3Config
from sef.openadr._operator import DrOperator, OperatorBoard, install_operator
from sef.openadr._plan import (
    Dispatch,
    FleetMember,
    MemberKind,
    Plan,
    TargetWindow,
    Unsupported,
)
from sef.openadr._policy import OptPolicy, available_reduction_kw
from sef.openadr._service import DrService

__all__ = [
    "AdapterStatus",
    "Dispatch",
    "DrBridge",
    "DrConfig",
    "DrEvent",
    "DrHistory",
    "DrInterval",
    "DrOperator",
    "DrService",
    "DrSignal",
    "DrSink",
    "EventKey",
    "EventRecord",
    "EventStatus",
    "FleetMember",
    "MappingTable",
    "MemberKind",
    "Oadr2bAdapter",
    "Oadr2bConfig",
    "Oadr3Config",
    "OperatorBoard",
    "Opt",
    "OptDecision",
    "OptPolicy",
    "Plan",
    "TargetWindow",
    "Targets",
    "TelemetrySample",
    "Unsupported",
    "VenAdapter",
    "available_reduction_kw",
    "install_operator",
    "load_dr_config",
    "load_mapping",
    "plan_event",
    "targeted_members",
]
