"""Demand-response event history (``dr_events``): one row per version of an event the
EMS received as a VEN (OpenADR 2.0b, OpenADR 3), with its opt, status and outcome.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    """Create ``dr_events`` and its index on the receive time."""
    op.create_table(
        "dr_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("modification", sa.BigInteger, nullable=False),
        sa.Column("program", sa.String(255), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opt", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("received_s", sa.Float, nullable=False),
        sa.Column("start_s", sa.Float, nullable=True),
        sa.Column("end_s", sa.Float, nullable=True),
        sa.Column("offset_s", sa.Float, nullable=False),
        sa.Column("requested_kw", sa.Float, nullable=True),
        sa.Column("delivered_kw", sa.Float, nullable=True),
        sa.Column("dispatched", sa.Integer, nullable=False),
        sa.Column("agents", sa.Integer, nullable=False),
        sa.Column("raw", sa.JSON, nullable=False),
        sa.Column("updated_s", sa.Float, nullable=False),
        sa.UniqueConstraint("source", "event_id", "modification", name="uq_dr_event_version"),
    )
    op.create_index("ix_dr_events_received", "dr_events", ["received_s"])
