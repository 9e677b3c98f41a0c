"""Governance: value provenance per run, scoped approval grants, red-team reports, and what a
hold was about (the finding, the arguments' hash, the approval's scope).

Revision ID: 0003_governance
Revises: 0002_memory
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_governance"
down_revision = "0002_memory"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "run_values",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("untrusted", sa.Boolean(), nullable=False),
        sa.Column("trusted_source", sa.String(length=300), nullable=True),
        sa.Column("untrusted_source", sa.String(length=300), nullable=True),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "digest", name=op.f("pk_run_values")),
    )
    op.create_table(
        "approval_grants",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("tool", sa.String(length=300), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("args_hash", sa.String(length=64), nullable=True),
        sa.Column("value_digest", sa.String(length=32), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("approval_id", sa.String(length=64), nullable=True),
        sa.Column("granted_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_grants")),
    )
    op.create_index(
        "ix_approval_grants_agent_tool", "approval_grants", ["agent", "tool"], unique=False
    )
    op.create_table(
        "redteam_reports",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("packs", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redteam_reports")),
    )
    op.create_index(op.f("ix_redteam_reports_agent"), "redteam_reports", ["agent"], unique=False)
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("finding", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("args_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("scope", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("scope")
        batch.drop_column("args_hash")
        batch.drop_column("finding")
    op.drop_index(op.f("ix_redteam_reports_agent"), table_name="redteam_reports")
    op.drop_table("redteam_reports")
    op.drop_index("ix_approval_grants_agent_tool", table_name="approval_grants")
    op.drop_table("approval_grants")
    op.drop_table("run_values")
