"""Agent memory: namespaces and memories (text, metadata, provenance, supersession, vectors).

Revision ID: 0002_memory
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_memory"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("namespace", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("user", sa.String(length=200), nullable=True),
        sa.Column("source_run_id", sa.String(length=64), nullable=True),
        sa.Column("source_span_id", sa.String(length=16), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("written_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memories")),
    )
    op.create_index("ix_memories_ns_created", "memories", ["namespace", "created_at"], unique=False)
    op.create_index("ix_memories_ns_hash", "memories", ["namespace", "content_hash"], unique=False)
    op.create_index("ix_memories_ns_key", "memories", ["namespace", "key"], unique=False)
    op.create_index("ix_memories_source_run", "memories", ["source_run_id"], unique=False)
    op.create_index("ix_memories_user", "memories", ["user"], unique=False)
    op.create_table(
        "memory_namespaces",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner_agent", sa.String(length=200), nullable=True),
        sa.Column("embedder", sa.String(length=300), nullable=True),
        sa.Column("dim", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_memory_namespaces")),
    )


def downgrade() -> None:
    op.drop_table("memory_namespaces")
    op.drop_index("ix_memories_user", table_name="memories")
    op.drop_index("ix_memories_source_run", table_name="memories")
    op.drop_index("ix_memories_ns_key", table_name="memories")
    op.drop_index("ix_memories_ns_hash", table_name="memories")
    op.drop_index("ix_memories_ns_created", table_name="memories")
    op.drop_table("memories")
