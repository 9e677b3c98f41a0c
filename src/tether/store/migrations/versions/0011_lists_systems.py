"""Named lists in the registry (`named_lists`: contacts, payees, allowed domains that policies
refer to) and the systems each registered tool touches (`tools.systems`, for `systems:`).

Revision ID: 0011_lists_systems
Revises: 0010_drift_hist
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_lists_systems"
down_revision = "0010_drift_hist"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "named_lists",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("entries", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_named_lists")),
    )
    with op.batch_alter_table("tools") as batch:
        batch.add_column(sa.Column("systems", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tools") as batch:
        batch.drop_column("systems")
    op.drop_table("named_lists")
