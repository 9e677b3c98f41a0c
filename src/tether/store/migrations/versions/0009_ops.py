"""Ops: `leases` (one replica at a time exports the store-derived metrics and ships spans),
`span_exports` and `export_marks` (what the OTLP exporter has sent, and how far it has read).

Revision ID: 0009_ops
Revises: 0008_evals_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_ops"
down_revision = "0008_evals_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "span_exports",
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("trace_id", "span_id", name=op.f("pk_span_exports")),
    )
    op.create_table(
        "export_marks",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("mark", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_export_marks")),
    )


def downgrade() -> None:
    op.drop_table("export_marks")
    op.drop_table("span_exports")
    op.drop_table("leases")
