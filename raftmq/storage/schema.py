"""SQLAlchemy 2 models of a node's database: the single source of the schema.

Every table is prefixed ``raftmq_`` so a raftmq database is recognisable at a glance
(and with SQL). Schema changes go through alembic revisions in ``migrations/``;
``tests/storage/test_migrations.py`` checks that these models and the revisions agree.

Single-row tables (meta, hard state, progress, snapshot) use ``id = 1`` enforced by a
CHECK constraint, so "the" row is addressable without a scan.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Alembic keeps its revision in this table (not the default ``alembic_version``), so a
# database of another alembic-managed application is never mistaken for ours.
VERSION_TABLE = "raftmq_alembic_version"

# Written once into raftmq_meta; identifies the file as a raftmq store.
SCHEMA_IDENTITY = "raftmq"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata (with stable constraint names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Meta(Base):
    """Who the database belongs to. Invariant: exactly one row once the store was opened."""

    __tablename__ = "raftmq_meta"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    identity: Mapped[str] = mapped_column(String(32))  # always SCHEMA_IDENTITY
    cluster: Mapped[str] = mapped_column(String(200))  # cluster name; never changes
    node_id: Mapped[str] = mapped_column(String(200))  # node id; never changes
    # The id of the cluster's bootstrap this database was admitted to (revision 0003);
    # None until the node first starts with it, then never changes.
    cluster_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # This database's incarnation id (revision 0006): 32 random hex digits made with the
    # database (or by 0006 for an older one), never changed. A node that loses its
    # database comes back with another (raftmq.core.membership, "Incarnations").
    incarnation: Mapped[str | None] = mapped_column(String(32), nullable=True)


class HardStateRow(Base):
    """Raft's persistent state (§5.1 Fig. 2). Invariant: term never decreases."""

    __tablename__ = "raftmq_hard_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    term: Mapped[int] = mapped_column(BigInteger)  # current term
    voted_for: Mapped[str | None] = mapped_column(String(200), nullable=True)  # vote in term
    commit_index: Mapped[int] = mapped_column(BigInteger)  # highest known committed index


class ProgressRow(Base):
    """Driver bookkeeping persisted with the Ready that produced it."""

    __tablename__ = "raftmq_progress"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    applied: Mapped[int] = mapped_column(BigInteger)  # highest index applied
    fanout_watermark: Mapped[int] = mapped_column(BigInteger)  # highest index confirmed out


class LogEntryRow(Base):
    """One Raft log entry. Invariant: indexes are contiguous; terms non-decreasing with idx."""

    __tablename__ = "raftmq_log"
    __table_args__ = (
        # Covers "GROUP BY term, MIN(idx)" (term runs on open) without touching entry data.
        Index("ix_raftmq_log_term_idx", "term", "idx"),
        # Covers retention by age, "MAX(idx) WHERE appended_ms < cutoff" (revision 0005).
        Index("ix_raftmq_log_appended_ms_idx", "appended_ms", "idx"),
        # The configuration entries, read on every open (revision 0006): a partial index
        # of the few CONFIG rows instead of a scan of the whole log.
        Index(
            "ix_raftmq_log_config_idx",
            "idx",
            sqlite_where=text("kind = 2"),
            postgresql_where=text("kind = 2"),
        ),
    )

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # >= 1
    term: Mapped[int] = mapped_column(BigInteger)  # term of the creating leader, >= 1
    kind: Mapped[int] = mapped_column(SmallInteger)  # EntryKind value
    data: Mapped[bytes] = mapped_column(LargeBinary)  # opaque payload
    # When the entry was saved, in ms since the epoch (revision 0005; NULL for a row saved
    # before it: unknown age). Rows of one save share one value.
    appended_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class SnapshotRow(Base):
    """The latest state-machine snapshot and the log's compaction point. Invariants: at most
    one row; compacted_idx <= idx; the log holds no entry at or below compacted_idx."""

    __tablename__ = "raftmq_snapshot"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    idx: Mapped[int] = mapped_column(BigInteger)  # last log index covered
    term: Mapped[int] = mapped_column(BigInteger)  # term of that entry
    data: Mapped[bytes] = mapped_column(LargeBinary)  # opaque state-machine bytes
    # JSON list of the voters at idx (revision 0004; '[]' for a row written before).
    voters: Mapped[str] = mapped_column(Text, server_default=text("'[]'"))
    # The last index deleted from the log and its term (first index - 1; <= idx: trailing
    # entries before the snapshot may stay). Revision 0004 set them to idx, term.
    compacted_idx: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    compacted_term: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class ClientSessionRow(Base):
    """Exactly-once write sessions (thesis §6.3). Invariants: last_seq and floor_seq only
    grow; a seq was applied iff seq <= floor_seq or seq is in above_seqs."""

    __tablename__ = "raftmq_client_session"
    __table_args__ = (Index("ix_raftmq_client_session_updated", "updated_index"),)

    producer_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # client identity
    last_seq: Mapped[int] = mapped_column(BigInteger)  # highest sequence number appended
    last_index: Mapped[int] = mapped_column(BigInteger)  # log index of that write
    last_term: Mapped[int] = mapped_column(BigInteger)  # term of that entry
    updated_index: Mapped[int] = mapped_column(BigInteger)  # last touched at (for expiry)
    # Every seq <= floor_seq was applied (revision 0002 set it to last_seq on old rows).
    floor_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # JSON list of the applied seqs > floor_seq, ascending (usually empty).
    above_seqs: Mapped[str] = mapped_column(Text, server_default=text("'[]'"))


metadata = Base.metadata
meta_table = metadata.tables[Meta.__tablename__]
hard_state_table = metadata.tables[HardStateRow.__tablename__]
progress_table = metadata.tables[ProgressRow.__tablename__]
log_table = metadata.tables[LogEntryRow.__tablename__]
snapshot_table = metadata.tables[SnapshotRow.__tablename__]
session_table = metadata.tables[ClientSessionRow.__tablename__]

# Every table of ours; a database holding any other table is not a raftmq database.
OWN_TABLES = frozenset(t.name for t in metadata.sorted_tables) | {VERSION_TABLE}
