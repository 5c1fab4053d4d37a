"""The topics a gateway's uplink relay carries (under the root; ``docs/gateway.md``)."""

from __future__ import annotations

__all__ = ["UPLINK_IN", "UPLINK_OUT"]

UPLINK_OUT: tuple[str, ...] = (
    "agents/+/status",  # presence: births, clean deaths and wills (retained)
    "agents/+/about",  # About announcements: discovery at the EMS (retained)
    "agents/+/interfaces/+",  # interface XML the About refers to (retained, protocol v1)
    "interfaces/+",  # the same once per hash, {sha256} (retained, protocol v2)
    "agents/+/props/#",  # properties: last known state, telemetry (retained)
    "agents/+/signals/#",  # signals (events) of the DER interface
    "agents/+/seal",  # signed-telemetry seals (docs/protocol.md §11)
    "clients/+/reply",  # replies to calls from the control side
)
"""Topics (under the root) that go up, home → control server: the DER interfaces only."""

UPLINK_IN: tuple[str, ...] = (
    "agents/+/call/#",  # method calls addressed to one agent
    "groups/+/call/#",  # group calls: one publish at the EMS reaches every home
    "hosts/+/status",  # the EMS's presence (agents fall back when it is gone)
)
"""Topics (under the root) that come down, control server → home."""
