"""Initial schema: agents, agent events, last properties, telemetry history, command log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    """Create the schema."""
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("online", sa.Boolean, nullable=True),
        sa.Column("bdseq", sa.BigInteger, nullable=True),
        sa.Column("about", sa.JSON, nullable=False),
        sa.Column("interfaces", sa.JSON, nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("online_since", sa.Float, nullable=True),
        sa.Column("offline_since", sa.Float, nullable=True),
        sa.Column("offline_reason", sa.String(32), nullable=True),
        sa.Column("gaps", sa.Integer, nullable=False),
    )
    op.create_table(
        "agent_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_agent_events_agent_ts", "agent_events", ["agent_id", "ts"])
    op.create_table(
        "properties",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("ts", sa.Float, nullable=True),
        sa.Column("received", sa.Float, nullable=False),
    )
    op.create_table(
        "telemetry",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("received", sa.Float, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("downsampled", sa.Boolean, nullable=False),
        sa.UniqueConstraint("agent_id", "key", "ts", "seq", name="uq_telemetry_message"),
    )
    op.create_index("ix_telemetry_agent_key_ts", "telemetry", ["agent_id", "key", "ts"])
    op.create_table(
        "commands",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False, unique=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("sender", sa.String(128), nullable=False),
        sa.Column("target", sa.String(80), nullable=False),
        sa.Column("interface", sa.String(255), nullable=False),
        sa.Column("method", sa.String(255), nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("replies", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_commands_ts", "commands", ["ts"])
    op.create_index("ix_commands_target_ts", "commands", ["target", "ts"])
