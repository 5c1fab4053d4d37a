"""Drop ix_telemetry_agent_key_ts: the unique key (agent_id, key, ts, seq) already indexes
(agent_id, key, ts) ranges, and one index less per row speeds up ingest.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Drop the telemetry index that the unique constraint already provides."""
    op.drop_index("ix_telemetry_agent_key_ts", table_name="telemetry")
