"""Drift histograms: `drift_sequences` and `drift_values`, per agent, hour, version and served
model, kept by the profiling pass. Existing profiles are dropped with the pass's mark, so the
next pass profiles every finished run again and fills the histograms from them.

Revision ID: 0010_drift_hist
Revises: 0009_ops
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_drift_hist"
down_revision = "0009_ops"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "drift_sequences",
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("hour_at", TS, nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("seq_hash", sa.String(length=40), nullable=False),
        sa.Column("tools", sa.Text(), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "agent", "hour_at", "version", "model", "seq_hash", name=op.f("pk_drift_sequences")
        ),
    )
    op.create_table(
        "drift_values",
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("hour_at", TS, nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("bin", sa.Integer(), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "agent", "hour_at", "version", "model", "metric", "bin", name=op.f("pk_drift_values")
        ),
    )
    # profiles written before the histograms existed are in none of them: profile again
    op.execute("DELETE FROM run_profiles")
    op.execute("DELETE FROM watch_marks WHERE name = 'profiles'")


def downgrade() -> None:
    op.drop_table("drift_values")
    op.drop_table("drift_sequences")
