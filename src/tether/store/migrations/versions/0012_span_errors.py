"""A partial index of the error spans by run, so the rollout rule's policy-violation count reads
the few spans that failed (denials among them), not every span of every run it covers.

Revision ID: 0012_span_errors
Revises: 0011_lists_systems
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_span_errors"
down_revision = "0011_lists_systems"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_spans_errors",
        "spans",
        ["run_id"],
        unique=False,
        sqlite_where=sa.text("status = 'error'"),
        postgresql_where=sa.text("status = 'error'"),
    )


def downgrade() -> None:
    op.drop_index("ix_spans_errors", table_name="spans")
