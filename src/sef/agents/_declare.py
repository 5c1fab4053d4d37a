"""What an agent declares: its About fields, its method handlers, and the errors it raises."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sef import __version__
from sef.bus import ErrorName

__all__ = ["AboutInfo", "AgentError", "CallError", "Outcome", "method"]

F = TypeVar("F", bound=Callable[..., Any])


class AgentError(RuntimeError):
    """An agent is declared wrongly (missing handler, unknown interface, bad property)."""


class CallError(Exception):
    """Raise from a method handler to answer the call with a named error."""

    def __init__(self, message: str, name: str = ErrorName.FAILED) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Outcome:
    """Return this from a method handler to say whether the device carried the call out.

    ``applied`` ``True``: the device applied it; ``False``: accepted but not applied, with
    the device's ``fault`` (an error name, e.g. ``sef.Fault.DeviceUnreachable``) and
    ``fault_message``; ``None``: accepted, not confirmed (what a plain return means).
    ``result`` is the method's return value.
    """

    applied: bool | None
    fault: str | None = None
    fault_message: str | None = None
    result: Any = None


def method(interface: str, name: str) -> Callable[[F], F]:
    """Mark an agent method as the handler of ``interface.name``."""

    def mark(func: F) -> F:
        func._sef_method = (interface, name)  # type: ignore[attr-defined]
        return func

    return mark


@dataclass
class AboutInfo:
    """AllJoyn About fields of an agent (the rest are filled in by the agent)."""

    device_name: str = ""
    app_name: str = "SEF agent"
    manufacturer: str = "SEF"
    model_number: str = "sef-agent"
    description: str = ""
    hardware_version: str = ""
    support_url: str = "https://github.com/sef-energy/sef"
    extra: dict[str, Any] = field(default_factory=dict)

    def fields(self, agent_id: str) -> dict[str, Any]:
        app_id = uuid.uuid5(uuid.NAMESPACE_URL, f"sef:{self.app_name}:{agent_id}").hex
        return {
            "AppId": app_id,
            "DefaultLanguage": "en",
            "DeviceName": self.device_name or agent_id,
            "DeviceId": agent_id,
            "AppName": self.app_name,
            "Manufacturer": self.manufacturer,
            "ModelNumber": self.model_number,
            "SupportedLanguages": ["en"],
            "Description": self.description or self.app_name,
            "SoftwareVersion": __version__,
            "HardwareVersion": self.hardware_version,
            "SupportUrl": self.support_url,
            **self.extra,
        }
