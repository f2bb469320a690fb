"""SQLAlchemy Core statements of the SQL store, as plain functions of a sync Connection
(each runs inside the transaction its caller's runner opened). The writes of a save are
compiled once per dialect in raftmq.storage.statements."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from raftmq.core.types import Entry, EntryKind
from raftmq.errors import StoreMismatch
from raftmq.storage.port import ClientSession, Snapshot
from raftmq.storage.schema import log_table, session_table, snapshot_table

_CHUNK_ROWS = 256  # rows fetched per query when a byte limit may stop the read early
_LOG_COLUMNS = (log_table.c.idx, log_table.c.term, log_table.c.kind, log_table.c.data)


def nothing(conn: Connection) -> None:
    """An empty transaction (used to (re)validate the caches)."""


def read_entries(conn: Connection, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
    out: list[Entry] = []
    size = 0
    query = select(*_LOG_COLUMNS).order_by(log_table.c.idx)
    while lo <= hi:
        limit = hi - lo + 1 if max_bytes is None else min(hi - lo + 1, _CHUNK_ROWS)
        stmt = query.where(log_table.c.idx >= lo, log_table.c.idx <= hi).limit(limit)
        rows = conn.execute(stmt).all()
        if not rows:
            break
        for idx, term, kind, data in rows:
            size += len(data)
            if max_bytes is not None and out and size > max_bytes:
                return out
            out.append(Entry(index=idx, term=term, kind=EntryKind(kind), data=bytes(data)))
        lo = rows[-1][0] + 1
    return out


def _session(row: Any) -> ClientSession:
    try:
        above = json.loads(row.above_seqs or "[]")
        if not isinstance(above, list) or not all(
            isinstance(seq, int) and not isinstance(seq, bool) for seq in above
        ):
            raise ValueError("not a list of integers")
    except (ValueError, RecursionError) as exc:  # never written by raftmq: a clear error
        raise StoreMismatch(
            f"client session {row.producer_id!r} is corrupt (above_seqs: {exc})"
        ) from None
    return ClientSession(
        producer_id=row.producer_id,
        last_seq=row.last_seq,
        last_index=row.last_index,
        last_term=row.last_term,
        updated_index=row.updated_index,
        floor=row.floor_seq,
        above=tuple(above),
    )


def session_txn(conn: Connection, producer_id: str) -> ClientSession | None:
    stmt = select(session_table).where(session_table.c.producer_id == producer_id)
    row = conn.execute(stmt).first()
    return None if row is None else _session(row)


def sessions_txn(conn: Connection) -> list[ClientSession]:
    rows = conn.execute(select(session_table).order_by(session_table.c.producer_id))
    return [_session(row) for row in rows]


def snapshot_txn(conn: Connection) -> Snapshot | None:
    row = conn.execute(select(snapshot_table)).first()
    if row is None:
        return None
    try:
        voters = json.loads(row.voters or "[]")
        if not isinstance(voters, list) or not all(isinstance(v, str) for v in voters):
            raise ValueError("not a list of node ids")
    except (ValueError, RecursionError) as exc:  # never written by raftmq: a clear error
        raise StoreMismatch(f"the snapshot's voters are corrupt ({exc})") from None
    return Snapshot(index=row.idx, term=row.term, voters=tuple(voters), data=bytes(row.data))
