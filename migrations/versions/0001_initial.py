"""Initial raftmq schema: meta, hard state, progress, log, snapshot, client sessions.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create every table of the first schema."""
    op.create_table(
        "raftmq_meta",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("identity", sa.String(length=32), nullable=False),
        sa.Column("cluster", sa.String(length=200), nullable=False),
        sa.Column("node_id", sa.String(length=200), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_raftmq_meta_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raftmq_meta")),
    )
    op.create_table(
        "raftmq_hard_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("voted_for", sa.String(length=200), nullable=True),
        sa.Column("commit_index", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_raftmq_hard_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raftmq_hard_state")),
    )
    op.create_table(
        "raftmq_progress",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("applied", sa.BigInteger(), nullable=False),
        sa.Column("fanout_watermark", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_raftmq_progress_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raftmq_progress")),
    )
    op.create_table(
        "raftmq_log",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_raftmq_log")),
    )
    op.create_index("ix_raftmq_log_term_idx", "raftmq_log", ["term", "idx"], unique=False)
    op.create_table(
        "raftmq_snapshot",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_raftmq_snapshot_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raftmq_snapshot")),
    )
    op.create_table(
        "raftmq_client_session",
        sa.Column("producer_id", sa.String(length=200), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_index", sa.BigInteger(), nullable=False),
        sa.Column("last_term", sa.BigInteger(), nullable=False),
        sa.Column("updated_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("producer_id", name=op.f("pk_raftmq_client_session")),
    )
    op.create_index(
        "ix_raftmq_client_session_updated",
        "raftmq_client_session",
        ["updated_index"],
        unique=False,
    )


def downgrade() -> None:
    """Drop every table of the first schema."""
    op.drop_index("ix_raftmq_client_session_updated", table_name="raftmq_client_session")
    op.drop_table("raftmq_client_session")
    op.drop_table("raftmq_snapshot")
    op.drop_index("ix_raftmq_log_term_idx", table_name="raftmq_log")
    op.drop_table("raftmq_log")
    op.drop_table("raftmq_progress")
    op.drop_table("raftmq_hard_state")
    op.drop_table("raftmq_meta")
