"""Evals, their attempts, gate verdicts, rollouts and their events, and the HTTP endpoints
registered per agent version (issue 10).

Revision ID: 0004_evals
Revises: 0003_governance
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_evals"
down_revision = "0003_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_endpoints",
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent", "version", name=op.f("pk_agent_endpoints")),
    )
    op.create_table(
        "evals",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("suite", sa.String(length=200), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("target_cost_nusd", sa.BigInteger(), nullable=True),
        sa.Column("suite_source", sa.Text(), nullable=False),
        sa.Column("suite_hash", sa.String(length=64), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("attempts_done", sa.Integer(), nullable=False),
        sa.Column("attempts_passed", sa.Integer(), nullable=False),
        sa.Column("cost_nusd", sa.BigInteger(), nullable=False),
        sa.Column("judge_cost_nusd", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evals")),
    )
    op.create_index(
        "ix_evals_agent_created",
        "evals",
        ["agent", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_table(
        "gate_verdicts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("suite", sa.String(length=200), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("eval_id", sa.String(length=64), nullable=False),
        sa.Column("baseline_version", sa.String(length=200), nullable=True),
        sa.Column("baseline_eval_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("more_attempts", sa.Integer(), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("comparisons", sa.JSON(), nullable=True),
        sa.Column("regressions", sa.JSON(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_verdicts")),
    )
    op.create_index(
        "ix_gate_verdicts_agent_created",
        "gate_verdicts",
        ["agent", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("baseline", sa.String(length=200), nullable=False),
        sa.Column("candidate", sa.String(length=200), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("rule_source", sa.Text(), nullable=False),
        sa.Column("rule_file", sa.String(length=500), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decision", sa.JSON(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index(op.f("ix_rollouts_agent"), "rollouts", ["agent"], unique=False)
    op.create_table(
        "eval_attempts",
        sa.Column("eval_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("cost_nusd", sa.BigInteger(), nullable=False),
        sa.Column("judge_cost_nusd", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("agent_ms", sa.Float(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("tools", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["eval_id"],
            ["evals.id"],
            name=op.f("fk_eval_attempts_eval_id_evals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("eval_id", "task_id", "attempt", name=op.f("pk_eval_attempts")),
    )
    op.create_index(op.f("ix_eval_attempts_run_id"), "eval_attempts", ["run_id"], unique=False)
    op.create_table(
        "rollout_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("rollout_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_rollout_events_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_events")),
    )
    op.create_index(
        op.f("ix_rollout_events_rollout_id"), "rollout_events", ["rollout_id"], unique=False
    )


def downgrade() -> None:

    op.drop_index(op.f("ix_rollout_events_rollout_id"), table_name="rollout_events")
    op.drop_table("rollout_events")
    op.drop_index(op.f("ix_eval_attempts_run_id"), table_name="eval_attempts")
    op.drop_table("eval_attempts")
    op.drop_index(op.f("ix_rollouts_agent"), table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_index("ix_gate_verdicts_agent_created", table_name="gate_verdicts")
    op.drop_table("gate_verdicts")
    op.drop_index("ix_evals_agent_created", table_name="evals")
    op.drop_table("evals")
    op.drop_table("agent_endpoints")
