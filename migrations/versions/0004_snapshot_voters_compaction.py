"""raftmq_snapshot holds the snapshot's voters and where the log was compacted to.

``voters`` is the configuration at the snapshot's index (a JSON list of node ids);
``compacted_idx``/``compacted_term`` name the last entry deleted from the log (first
index - 1 and its term), which may lie before the snapshot's index (trailing entries).
A row written before this revision compacted the log up to its index and named no
voters: it gets ``compacted_idx = idx``, ``compacted_term = term`` and ``[]``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add voters, compacted_idx and compacted_term to raftmq_snapshot."""
    with op.batch_alter_table("raftmq_snapshot") as batch:
        batch.add_column(
            sa.Column("voters", sa.Text(), server_default=sa.text("'[]'"), nullable=False)
        )
        batch.add_column(
            sa.Column("compacted_idx", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(
            sa.Column(
                "compacted_term", sa.BigInteger(), server_default=sa.text("0"), nullable=False
            )
        )
    # Before this revision a stored snapshot had deleted every entry up to its index.
    op.execute("UPDATE raftmq_snapshot SET compacted_idx = idx, compacted_term = term")


def downgrade() -> None:
    """Drop the columns. Entries kept between compacted_idx and idx stay in the log, but
    0003 reads first_index as idx + 1, so they are no longer read (nothing is lost that
    the snapshot does not cover)."""
    with op.batch_alter_table("raftmq_snapshot") as batch:
        batch.drop_column("compacted_term")
        batch.drop_column("compacted_idx")
        batch.drop_column("voters")
