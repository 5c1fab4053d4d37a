"""Tables of the EMS store (SQLAlchemy Core; SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

agents = Table(
    "agents",
    metadata,
    Column("agent_id", String(64), primary_key=True),
    Column("online", Boolean, nullable=True),
    Column("bdseq", BigInteger, nullable=True),
    Column("about", JSON, nullable=False, default=dict),
    Column("interfaces", JSON, nullable=False, default=dict),
    Column("groups", JSON, nullable=False, default=list),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("online_since", Float, nullable=True),
    Column("offline_since", Float, nullable=True),
    Column("offline_reason", String(32), nullable=True),
    Column("gaps", Integer, nullable=False, default=0),
)

agent_events = Table(
    "agent_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("agent_id", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=True),
    Index("ix_agent_events_agent_ts", "agent_id", "ts"),
)

properties = Table(
    "properties",
    metadata,
    Column("agent_id", String(64), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("value", Text, nullable=False),  # JSON text of the value
    Column("ts", Float, nullable=True),
    Column("received", Float, nullable=False),
)

telemetry = Table(
    "telemetry",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("agent_id", String(64), nullable=False),
    Column("key", String(300), nullable=False),
    Column("ts", Float, nullable=False),  # sender time, Unix s
    Column("seq", BigInteger, nullable=False),  # per-session sequence (-1 when absent)
    Column("received", Float, nullable=False),
    Column("value", Text, nullable=False),  # JSON text of the value
    Column("downsampled", Boolean, nullable=False, default=False),
    # a sample's identity (docs/protocol.md §4.7: stored once however often it arrives);
    # also the index of (agent_id, key, ts) range queries
    UniqueConstraint("agent_id", "key", "ts", name="uq_telemetry_sample"),
)

commands = Table(
    "commands",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("call_id", String(128), nullable=False, unique=True),
    Column("ts", Float, nullable=False),
    Column("sender", String(128), nullable=False),
    Column("target", String(80), nullable=False),
    Column("interface", String(255), nullable=False),
    Column("method", String(255), nullable=False),
    Column("args", JSON, nullable=False),
    # sent, ok, error, not_applied, partial, timeout, expired, refused
    Column("status", String(16), nullable=False),
    Column("replies", JSON, nullable=False, default=list),
    Column("error", Text, nullable=True),
    Column("expires", Float, nullable=True),  # call expiry (clock s) when a reply was asked
    Column("sent_by", String(128), nullable=True),  # API token name, or the EMS's id
    Index("ix_commands_ts", "ts"),
    Index("ix_commands_target_ts", "target", "ts"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("received", Float, nullable=False),  # EMS clock, Unix s
    Column("agent_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False),  # telemetry, agent, event
    Column("key", String(300), nullable=True),
    Column("category", String(32), nullable=False),  # out_of_range, future, past, ...
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the refused row as JSON text (truncated)
    Index("ix_dead_letters_received", "received"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),  # viewer, operator, admin
    Column("token_hash", String(64), nullable=False, unique=True),  # SHA-256, hex
    Column("created", Float, nullable=False),  # Unix s (wall clock)
    Column("revoked", Float, nullable=True),  # Unix s (wall clock); null while valid
)
"""Bearer tokens of the EMS API (``sef api-token``): a name, a role and the SHA-256 hash
of the token (the token itself is shown once, at creation, and never stored)."""

dr_events = Table(
    "dr_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("source", String(32), nullable=False),  # the VEN adapter: oadr2b, oadr3
    Column("event_id", String(255), nullable=False),  # the VTN's id
    Column("modification", BigInteger, nullable=False),
    Column("program", String(255), nullable=False),
    Column("signal", String(64), nullable=False),
    # received, scheduled, active, completed, cancelled, opted_out, failed
    Column("status", String(16), nullable=False),
    Column("opt", String(8), nullable=False),  # optIn, optOut
    Column("reason", Text, nullable=False),
    Column("received_s", Float, nullable=False),  # EMS clock, Unix s
    Column("start_s", Float, nullable=True),  # null: not a finite time
    Column("end_s", Float, nullable=True),
    Column("offset_s", Float, nullable=False, default=0.0),
    Column("requested_kw", Float, nullable=True),
    Column("delivered_kw", Float, nullable=True),
    Column("dispatched", Integer, nullable=False, default=0),
    Column("agents", Integer, nullable=False, default=0),
    Column("raw", JSON, nullable=False, default=dict),
    Column("updated_s", Float, nullable=False),  # EMS clock of the last write, Unix s
    UniqueConstraint("source", "event_id", "modification", name="uq_dr_event_version"),
    Index("ix_dr_events_received", "received_s"),
)
"""Demand-response events the VEN received (``sef.openadr``): one row per event version
(source, event id, modification), with its opt, status and outcome (issue 15)."""
