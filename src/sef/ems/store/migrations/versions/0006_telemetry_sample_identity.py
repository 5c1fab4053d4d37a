"""Telemetry identity (agent_id, key, ts): a sample arriving twice with different sequence
numbers (a late original and its backfilled copy, a rebirth's republication of an
unchanged property under its original time: ``docs/protocol.md`` §4.6, §4.7) is stored
once. Rows already stored twice are reduced to the first (lowest id), then the unique key
(agent_id, key, ts, seq) is replaced by (agent_id, key, ts), which is also the index of
range queries.

SQLite cannot drop a constraint: the table is copied (Alembic's batch mode), which takes a
while on a large store (about as long as writing the table once).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    """Delete the later copies of each (agent_id, key, ts), then swap the unique key."""
    # the EXISTS probe walks the old key's index on its (agent_id, key, ts) prefix
    op.execute(
        sa.text(
            "DELETE FROM telemetry WHERE EXISTS (SELECT 1 FROM telemetry AS first "
            "WHERE first.agent_id = telemetry.agent_id AND first.key = telemetry.key "
            "AND first.ts = telemetry.ts AND first.id < telemetry.id)"
        )
    )
    with op.batch_alter_table("telemetry") as batch:
        batch.drop_constraint("uq_telemetry_message", type_="unique")
        batch.create_unique_constraint("uq_telemetry_sample", ["agent_id", "key", "ts"])
