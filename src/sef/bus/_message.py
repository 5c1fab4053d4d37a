"""The two types that both the client and its acknowledgement hook use."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BusError", "Message"]


class BusError(RuntimeError):
    """The bus could not be used (bad URL, broker unreachable, not connected)."""


@dataclass(slots=True)
class Message:
    """A message received from the broker. ``retain`` is set for retained deliveries."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
