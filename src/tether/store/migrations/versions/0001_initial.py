"""The 0.1 schema: every table in tether.store.tables.

Until 0.1 is released this baseline is the schema itself; from then on every change to
tables.py gets its own revision with explicit operations.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from tether.store.tables import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
