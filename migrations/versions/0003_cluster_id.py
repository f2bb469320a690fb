"""raftmq_meta remembers the cluster id: the bootstrap of the cluster the database joined.

Existing rows get NULL: the node adopts the id of the cluster's bootstrap record at its
next start (or re-creates the record with a new id when the broker has none).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable cluster_id column to raftmq_meta."""
    with op.batch_alter_table("raftmq_meta") as batch:
        batch.add_column(sa.Column("cluster_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Drop the cluster id (the node forgets which bootstrap it belongs to)."""
    with op.batch_alter_table("raftmq_meta") as batch:
        batch.drop_column("cluster_id")
