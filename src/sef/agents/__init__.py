"""Agents: adapters between a DER interface on the bus and a device (BIS, UCM, ...)."""

from sef.agents._base import Agent
from sef.agents._declare import AboutInfo, AgentError, CallError, Outcome, method
from sef.agents._der import DERAgent
from sef.agents._device import DeviceAdapter, DeviceHost, DeviceStatus

__all__ = [
    "AboutInfo",
    "Agent",
    "AgentError",
    "CallError",
    "DERAgent",
    "DeviceAdapter",
    "DeviceHost",
    "DeviceStatus",
    "Outcome",
    "method",
]
