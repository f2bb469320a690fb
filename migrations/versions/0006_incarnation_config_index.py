"""raftmq_meta.incarnation: the database's own id; a partial index of CONFIG entries.

``incarnation`` tells a member's database from a new one under the same node id (a
lost disk, raftmq.core.membership "Incarnations"): a database made by this revision or
later gets one when created; an existing one gets a fresh random id here. The index
``ix_raftmq_log_config_idx`` holds only the configuration entries (kind 2), so reading
them on open no longer scans the log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONFIG = sa.text("kind = 2")


def upgrade() -> None:
    """Add raftmq_meta.incarnation (set for the row already there) and the CONFIG index."""
    with op.batch_alter_table("raftmq_meta") as batch:
        batch.add_column(sa.Column("incarnation", sa.String(length=32), nullable=True))
    meta = sa.table("raftmq_meta", sa.column("incarnation", sa.String(32)))
    op.execute(meta.update().values(incarnation=uuid.uuid4().hex))
    op.create_index(
        "ix_raftmq_log_config_idx",
        "raftmq_log",
        ["idx"],
        sqlite_where=_CONFIG,
        postgresql_where=_CONFIG,
    )


def downgrade() -> None:
    """Drop the index and the incarnation (0005 keeps neither)."""
    op.drop_index("ix_raftmq_log_config_idx", table_name="raftmq_log")
    with op.batch_alter_table("raftmq_meta") as batch:
        batch.drop_column("incarnation")
