"""API key expiry and rotation: `api_keys.expires_at` (a lifetime given at creation, or the end
of a rotation's overlap) and `api_keys.replaced_by` (the key that replaces a rotated one).

Revision ID: 0013_key_rotation
Revises: 0012_span_errors
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_key_rotation"
down_revision = "0012_span_errors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replaced_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("replaced_by")
        batch.drop_column("expires_at")
