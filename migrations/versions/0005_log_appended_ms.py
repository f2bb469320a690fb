"""raftmq_log records when each entry was saved (log retention by age).

``appended_ms`` is the wall-clock time of the save in milliseconds since the epoch; the
index on (appended_ms, idx) answers "the newest entry saved before a cutoff" without
reading the table. Rows saved before this revision keep NULL (unknown age): retention
lets them go with the first newer entry that is old enough. Adding a nullable column
without a default rewrites no row (SQLite: ALTER TABLE ADD COLUMN; Postgres: catalog only).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add raftmq_log.appended_ms (NULL for the rows already there) and its index."""
    with op.batch_alter_table("raftmq_log") as batch:
        batch.add_column(sa.Column("appended_ms", sa.BigInteger(), nullable=True))
        batch.create_index("ix_raftmq_log_appended_ms_idx", ["appended_ms", "idx"])


def downgrade() -> None:
    """Drop the index and the column (0004 keeps no entry times)."""
    with op.batch_alter_table("raftmq_log") as batch:
        batch.drop_index("ix_raftmq_log_appended_ms_idx")
        batch.drop_column("appended_ms")
