"""Watch: run profiles and spend rollups (materialised for drift and cost anomalies), the
high-water marks of their background passes, the models each agent was served, and alerts.

Revision ID: 0005_watch
Revises: 0004_evals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_watch"
down_revision = "0004_evals"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "run_profiles",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=True),
        sa.Column("user", sa.String(length=200), nullable=True),
        sa.Column("task_type", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("cost_nusd", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("llm_calls", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("tools", sa.Text(), nullable=False),
        sa.Column("model_served", sa.String(length=200), nullable=True),
        sa.Column("profiled_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_profiles")),
    )
    op.create_index(
        "ix_run_profiles_agent_started", "run_profiles", ["agent", "started_at"], unique=False
    )
    op.create_index("ix_runs_updated", "runs", ["updated_at"], unique=False)
    op.create_table(
        "spend_rollups",
        sa.Column("granularity", sa.String(length=8), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("bucket_at", TS, nullable=False),
        sa.Column("cost_nusd", sa.BigInteger(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("top_runs", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint(
            "granularity", "dimension", "key", "bucket_at", name=op.f("pk_spend_rollups")
        ),
    )
    op.create_index(
        "ix_spend_rollups_bucket", "spend_rollups", ["granularity", "bucket_at"], unique=False
    )
    op.create_table(
        "watch_marks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("mark_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_watch_marks")),
    )
    op.create_table(
        "agent_models",
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("first_run_at", TS, nullable=False),
        sa.Column("last_run_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("agent", "model", name=op.f("pk_agent_models")),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("dedup_key", sa.String(length=500), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("bucket_at", TS, nullable=True),
        sa.Column("value_nusd", sa.BigInteger(), nullable=True),
        sa.Column("expected_nusd", sa.BigInteger(), nullable=True),
        sa.Column("low_nusd", sa.BigInteger(), nullable=True),
        sa.Column("high_nusd", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("notified_at", TS, nullable=True),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_created", "alerts", ["created_at", "id"], unique=False)
    op.create_index("ix_alerts_dedup", "alerts", ["dedup_key", "created_at"], unique=False)
    op.create_index("ix_alerts_status", "alerts", ["status", "created_at"], unique=False)


def downgrade() -> None:
    for name in ("alerts", "agent_models", "watch_marks", "spend_rollups", "run_profiles"):
        op.drop_table(name)
    op.drop_index("ix_runs_updated", table_name="runs")
