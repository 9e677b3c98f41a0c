"""A covering index for the rollout rule's per-version aggregate over an agent's runs.

Revision ID: 0008_evals_index
Revises: 0007_integrations
"""

from __future__ import annotations

from alembic import op

revision = "0008_evals_index"
down_revision = "0007_integrations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_runs_agent_version_started",
        "runs",
        ["agent", "version", "started_at", "status", "cost_nusd"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_runs_agent_version_started", table_name="runs")
