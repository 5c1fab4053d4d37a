"""Request and response bodies of the EMS API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

__all__ = [
    "AgentDetail",
    "AgentEventOut",
    "AgentOut",
    "CommandLogEntry",
    "CommandRequest",
    "CommandResult",
    "ErrorBody",
    "Health",
    "PropertyOut",
    "ReplyOut",
    "TelemetryOut",
    "TelemetryPoint",
]

AgentStatus = Literal["online", "offline", "unknown"]
CommandStatus = Literal["ok", "error", "not_applied", "timeout", "expired", "partial", "sent"]
ReplyOutcome = Literal["applied", "accepted", "not_applied", "refused"]

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "description": "Events executed in order from now: [cmd, rate_kW, duration_s]. cmd is "
    "one of charge, discharge, idle, shed, endshed; rate_kW and duration_s "
    "are integers 0..32767 (int16 >= 0); duration 0 means 'until the next "
    "command' and is allowed on the last event only.",
    "items": {
        "type": "array",
        "prefixItems": [
            {"type": "string", "enum": ["charge", "discharge", "idle", "shed", "endshed"]},
            {"type": "integer", "minimum": 0, "maximum": 32767, "title": "rate_kW"},
            {"type": "integer", "minimum": 0, "maximum": 32767, "title": "duration_s"},
        ],
        "minItems": 3,
        "maxItems": 3,
    },
    "example": [["charge", 4, 1800], ["discharge", 8, 1800]],
}


class ErrorBody(BaseModel):
    """Every error answer: a message for people and details for programs."""

    error: str = Field(
        description="What went wrong, e.g. 'cmds[0][1]: 40000 out of range for int16 ...'."
    )
    detail: Any = Field(
        None,
        description="More about the error (validation items, the offending value...), or null.",
    )


class PropertyOut(BaseModel):
    value: Any = Field(
        description="Last known value, in the bus's JSON mapping of its D-Bus "
        "type (a{sv}: {name: [signature, value]})."
    )
    ts: float | None = Field(description="Sender time of the value, Unix s.")


class AgentOut(BaseModel):
    """What the EMS knows about one agent."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="Agent id on the bus.")
    status: AgentStatus = Field(
        description="Presence: online, offline, or unknown (restored "
        "from the store, not yet confirmed by the broker)."
    )
    bdseq: int | None = Field(None, description="Session number of the agent's connection.")
    home: str | None = Field(
        None, description="The home (gateway) the agent is behind (GET /homes), or null."
    )
    device_name: str | None = Field(None, description="About DeviceName.")
    manufacturer: str | None = Field(None, description="About Manufacturer.")
    model: str | None = Field(None, description="About ModelNumber.")
    software_version: str | None = Field(None, description="About SoftwareVersion.")
    interfaces: list[str] = Field(description="Interfaces the agent implements.")
    groups: list[str] = Field(description="Groups whose commands the agent obeys.")
    last_seen: float = Field(
        description="Last live message from the agent, Unix s (0: none since the EMS started)."
    )
    online_since: float | None = Field(
        None, description="Start of the current or last session, Unix s."
    )
    offline_since: float | None = Field(None, description="When it went offline, Unix s.")
    offline_reason: str | None = Field(None, description="'will' (connection lost) or 'shutdown'.")
    gaps: int = Field(0, description="Message sequence gaps seen (lost messages).")
    duplicates: int = Field(
        0, description="Duplicates and replays dropped (docs/protocol.md §4.6): not losses."
    )
    backfilled: int = Field(
        0, description="Updates the agent buffered while disconnected, stored as history (§4.7)."
    )
    properties: dict[str, PropertyOut] = Field(
        description="Last known properties by 'interface.Property', telemetry included."
    )


class AgentEventOut(BaseModel):
    ts: float = Field(description="When the EMS saw it, Unix s (EMS clock).")
    kind: str = Field(description="online, offline, stale_death or gap.")
    detail: str | None = Field(None, description="bdseq, offline reason, gap...")


class AgentDetail(AgentOut):
    events: list[AgentEventOut] = Field(
        description="Recent presence events from the store, newest first (empty without a store)."
    )


class TelemetryPoint(BaseModel):
    key: str = Field(description="Property, 'interface.Property'.")
    ts: float = Field(description="Sender time, Unix s.")
    seq: int = Field(description="Message sequence number in the agent's session (-1: none).")
    value: Any = Field(description="The value, in the bus's JSON mapping.")


class TelemetryOut(BaseModel):
    agent: str = Field(description="Agent id.")
    key: str | None = Field(description="Property filter, or null for all properties.")
    since: float | None = Field(description="Lower bound of sender time, Unix s.")
    until: float | None = Field(description="Upper bound of sender time, Unix s.")
    every_s: float | None = Field(
        description="Downsampling bucket, s: the last value per property per bucket."
    )
    count: int = Field(description="Number of points.")
    points: list[TelemetryPoint] = Field(description="Oldest first.")


class CommandRequest(BaseModel):
    """An event sequence for ``edu.pdx.powerlab.demo.EnergyMethod``."""

    model_config = ConfigDict(extra="forbid")

    cmds: Annotated[Any, WithJsonSchema(_EVENT_SCHEMA)] = Field(
        description="Event sequence [[cmd, rate_kW, duration_s], ...]."
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=120,
        strict=True,
        description="How long to wait for replies, real s (default 5; a group waits for "
        "every known member or this long).",
    )
    reply: bool = Field(
        True, strict=True, description="Ask the agents to reply; false: send and return at once."
    )


class ReplyOut(BaseModel):
    """One agent's reply to a command."""

    agent: str = Field(description="Agent that replied.")
    ok: bool = Field(description="Whether it accepted the command (see outcome).")
    result: list[Any] = Field(
        default_factory=list, description="Out-arguments (none for EnergyMethod)."
    )
    error: str | None = Field(
        None, description="Error name, e.g. org.freedesktop.DBus.Error.Failed."
    )
    message: str | None = Field(None, description="Error message of the agent.")
    outcome: ReplyOutcome = Field(
        "accepted",
        description="applied: the device carried the command out; accepted: the agent "
        "accepted it without confirming that (agents that do not report it); "
        "not_applied: accepted, but the device did not apply it (see fault); "
        "refused: the agent refused it (see error).",
    )
    fault: str | None = Field(
        None, description="not_applied only: the device's fault, an error name."
    )
    fault_message: str | None = Field(None, description="not_applied only: the fault message.")


class CommandResult(BaseModel):
    call_id: str = Field(description="Correlation id of the call; key in GET /commands.")
    target: str = Field(description="Agent id, or group:NAME.")
    sent_at: float = Field(description="When it was sent, Unix s (EMS clock).")
    sent_by: str | None = Field(None, description="Who sent it: the API token's name.")
    status: CommandStatus = Field(
        description="ok: every targeted agent accepted; error: an agent refused; "
        "not_applied: an agent accepted but its device did not apply it; timeout: no "
        "reply; expired: every reply says the call came after its expiry; partial: "
        "some group members did not reply; sent: no reply asked. Only replies from "
        "the targeted agents (a group's known members), one each, count."
    )
    replies: list[ReplyOut] = Field(description="One reply per agent that answered in time.")
    missing: list[str] = Field(
        description="Targeted agents (known members) that did not reply in time."
    )


class CommandLogEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    call_id: str = Field(description="Correlation id.")
    ts: float = Field(description="When it was sent or refused, Unix s (EMS clock).")
    sender: str = Field(description="Bus client id of the sender.")
    sent_by: str | None = Field(
        None,
        description="Who sent it: the API token's name, 'anonymous@ADDRESS' (API "
        "without authentication), or the EMS's own id for its internal commands "
        "(reconciliation, control); null when logged before SEF recorded it.",
    )
    target: str = Field(description="Agent id, or group:NAME.")
    interface: str
    method: str
    args: Any = Field(description="In-arguments, JSON mapping.")
    status: str = Field(
        description="sent (waiting, or no reply asked), ok, error, not_applied, partial, "
        "timeout, expired (no reply before the call's expiry) or refused. Late replies "
        "update it."
    )
    replies: list[dict[str, Any]] = Field(
        description="Replies: agent, ok, result, error, message, outcome (applied, "
        "accepted, not_applied, refused), fault and fault_message (not_applied), late "
        "(true: it came after the API answered)."
    )
    error: str | None = Field(None, description="Why it was refused, if it was.")
    expires: float | None = Field(
        None, description="The call's expiry, Unix s (EMS clock); null when no reply was asked."
    )


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: broker not connected.")
    broker_connected: bool
    store: str | None = Field(description="Store dialect (sqlite, postgresql), or null.")
    agents: int = Field(description="Known agents.")
    online: int = Field(description="Agents online.")
