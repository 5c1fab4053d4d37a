"""Command log: the expiry of each call that asked for a reply, so that the EMS marks an
unanswered command ``expired`` after it, also one left ``sent`` by an EMS that crashed.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    """Add ``commands.expires`` (clock s; null: no reply asked, or logged before 0004)."""
    op.add_column("commands", sa.Column("expires", sa.Float, nullable=True))
