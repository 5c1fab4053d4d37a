"""Who sent each command (``commands.sent_by``: an API token's name, or the EMS's own id
for its internal commands), and the API's bearer tokens (``api_tokens``: only a SHA-256
hash of each token is kept).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    """Add ``commands.sent_by`` (null: logged before 0005) and create ``api_tokens``."""
    op.add_column("commands", sa.Column("sent_by", sa.String(128), nullable=True))
    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("revoked", sa.Float, nullable=True),
    )
