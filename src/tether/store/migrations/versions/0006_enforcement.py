"""The kill switch's table: one row per killed run, polled by `killed_at`.

Revision ID: 0006_enforcement
Revises: 0005_watch
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_enforcement"
down_revision = "0005_watch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_kills",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("killed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_kills")),
    )
    op.create_index(op.f("ix_run_kills_killed_at"), "run_kills", ["killed_at"], unique=False)
    # runs killed before this revision are in the log too, so a poll never misses them
    op.execute(
        "INSERT INTO run_kills (run_id, reason, killed_at) "
        "SELECT id, kill_reason, COALESCE(ended_at, updated_at) FROM runs WHERE status = 'killed'"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_run_kills_killed_at"), table_name="run_kills")
    op.drop_table("run_kills")
