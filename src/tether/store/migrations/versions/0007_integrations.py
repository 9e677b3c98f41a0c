"""LangGraph checkpoints: threads linked to runs, checkpoints with blobs per channel version,
pending writes, interrupts held as approvals, resume requests, tool-call idempotency keys,
and the hard caps a run sets for itself.

0001's `checkpoints` table had no writer in 0.1 (nothing could fill it), so it is replaced,
not altered: its columns do not fit a saver that keeps channel values apart.

Revision ID: 0007_integrations
Revises: 0006_enforcement
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_integrations"
down_revision = "0006_enforcement"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.drop_index(op.f("ix_checkpoints_run_id"), table_name="checkpoints")
    op.drop_table("checkpoints")
    op.create_table(
        "checkpoint_threads",
        sa.Column("thread_id", sa.String(length=200), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("max_iterations", sa.Integer(), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("thread_id", name=op.f("pk_checkpoint_threads")),
    )
    op.create_index(
        op.f("ix_checkpoint_threads_run_id"), "checkpoint_threads", ["run_id"], unique=False
    )
    op.create_table(
        "checkpoints",
        sa.Column("thread_id", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_ns", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("lg_run_id", sa.String(length=64), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "checkpoint_id", name=op.f("pk_checkpoints")
        ),
    )
    op.create_index(op.f("ix_checkpoints_run_id"), "checkpoints", ["run_id"], unique=False)
    op.create_index(op.f("ix_checkpoints_lg_run_id"), "checkpoints", ["lg_run_id"], unique=False)
    op.create_table(
        "checkpoint_blobs",
        sa.Column("thread_id", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_ns", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=True),
        sa.Column("view", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "channel", "version", name=op.f("pk_checkpoint_blobs")
        ),
    )
    op.create_table(
        "checkpoint_writes",
        sa.Column("thread_id", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_ns", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=True),
        sa.Column("task_path", sa.String(length=500), nullable=False),
        sa.Column("view", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint(
            "thread_id",
            "checkpoint_ns",
            "checkpoint_id",
            "task_id",
            "idx",
            name=op.f("pk_checkpoint_writes"),
        ),
    )
    op.create_table(
        "checkpoint_interrupts",
        sa.Column("approval_id", sa.String(length=64), nullable=False),
        sa.Column("thread_id", sa.String(length=200), nullable=False),
        sa.Column("interrupt_id", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_ns", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("approval_id", name=op.f("pk_checkpoint_interrupts")),
    )
    op.create_index(
        "ix_checkpoint_interrupts_thread",
        "checkpoint_interrupts",
        ["thread_id", "interrupt_id"],
        unique=True,
    )
    op.create_table(
        "checkpoint_resumes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("thread_id", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=64), nullable=True),
        sa.Column("update", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("taken_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoint_resumes")),
    )
    op.create_index(
        op.f("ix_checkpoint_resumes_thread_id"), "checkpoint_resumes", ["thread_id"], unique=False
    )
    op.create_table(
        "run_caps",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("max_cost_nusd", sa.BigInteger(), nullable=True),
        sa.Column("max_tokens", sa.BigInteger(), nullable=True),
        sa.Column("max_llm_calls", sa.Integer(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_caps")),
    )
    op.create_table(
        "tool_call_keys",
        sa.Column("thread_id", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("tool", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("thread_id", "key", name=op.f("pk_tool_call_keys")),
    )


def downgrade() -> None:
    for table in (
        "tool_call_keys",
        "run_caps",
        "checkpoint_resumes",
        "checkpoint_interrupts",
        "checkpoint_writes",
        "checkpoint_blobs",
        "checkpoints",
        "checkpoint_threads",
    ):
        op.drop_table(table)
    op.create_table(
        "checkpoints",
        sa.Column("thread_id", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_ns", sa.String(length=200), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=200), nullable=False),
        sa.Column("parent_id", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("checkpoint", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "checkpoint_id", name=op.f("pk_checkpoints")
        ),
    )
    op.create_index(op.f("ix_checkpoints_run_id"), "checkpoints", ["run_id"], unique=False)
