"""Client sessions remember every applied seq: floor_seq + above_seqs (exact per-seq dedupe).

Existing rows keep last_seq semantics: floor_seq = last_seq, above_seqs = "[]".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add floor_seq (from last_seq) and above_seqs (empty) to the session table."""
    with op.batch_alter_table("raftmq_client_session") as batch:
        batch.add_column(
            sa.Column("floor_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(
            sa.Column("above_seqs", sa.Text(), server_default=sa.text("'[]'"), nullable=False)
        )
    # Before this revision a session meant "every seq <= last_seq was applied".
    op.execute("UPDATE raftmq_client_session SET floor_seq = last_seq")


def downgrade() -> None:
    """Drop the per-seq columns (sessions fall back to last_seq semantics)."""
    with op.batch_alter_table("raftmq_client_session") as batch:
        batch.drop_column("above_seqs")
        batch.drop_column("floor_seq")
