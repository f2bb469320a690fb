"""SQLAlchemy Core statements of the SQL store, as plain functions of a sync Connection
(each runs inside the transaction its caller's runner opened). The writes of a save are
compiled once per dialect in raftmq.storage.statements."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Connection

from raftmq.core.types import Entry, EntryKind
from raftmq.errors import StoreMismatch
from raftmq.storage import retention
from raftmq.storage.port import ClientSession, Snapshot
from raftmq.storage.schema import log_table, session_table, snapshot_table

_CHUNK_ROWS = 256  # rows fetched per query when a byte limit may stop the read early
_SIZE_CHUNK_ROWS = 1024  # (index, payload bytes) pairs fetched per query by retention
_LOG_COLUMNS = (log_table.c.idx, log_table.c.term, log_table.c.kind, log_table.c.data)
# A payload's size in bytes: length() of a BLOB in SQLite and of a bytea in Postgres (both
# read the stored length without loading the value's overflow / TOAST pages).
_PAYLOAD_SIZE = func.length(log_table.c.data)


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
        # A list of voters, or (with learners or pins) {"voters": [...], "learners":
        # [...], "incarnations": {...}} ("incarnations" from revision 0006 on).
        raw = json.loads(row.voters or "[]")
        voters, learners = (raw, []) if isinstance(raw, list) else (raw["voters"], raw["learners"])
        pins = {} if isinstance(raw, list) else raw.get("incarnations", {})
        for ids in (voters, learners, list(pins), list(pins.values())):
            if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
                raise ValueError("not a list of node ids")
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:  # corrupt
        raise StoreMismatch(f"the snapshot's configuration is corrupt ({exc!r})") from None
    return Snapshot(
        index=row.idx,
        term=row.term,
        voters=tuple(voters),
        data=bytes(row.data),
        learners=tuple(learners),
        incarnations=tuple(sorted(pins.items())),
    )


def snapshot_members(snapshot: Snapshot) -> str:
    """The snapshot's configuration as its column holds it (a plain list of voters when
    there are no learners: what every earlier version wrote and reads)."""
    if not snapshot.learners and not snapshot.incarnations:
        return json.dumps(list(snapshot.voters))
    raw: dict[str, object] = {"voters": list(snapshot.voters), "learners": list(snapshot.learners)}
    if snapshot.incarnations:
        raw["incarnations"] = dict(snapshot.incarnations)
    return json.dumps(raw)


def config_entries_query(after: int) -> Select[Any]:
    """The query of :func:`config_entries`."""
    return (
        select(*_LOG_COLUMNS)
        # The partial index ix_raftmq_log_config_idx holds just these rows.
        .where(log_table.c.kind == int(EntryKind.CONFIG), log_table.c.idx > after)
        .order_by(log_table.c.idx)
    )


def config_entries(conn: Connection, after: int) -> tuple[Entry, ...]:
    """The CONFIG entries of the log after index ``after``, ascending."""
    return tuple(
        Entry(index=idx, term=term, kind=EntryKind(kind), data=bytes(data))
        for idx, term, kind, data in conn.execute(config_entries_query(after))
    )


def payload_bytes(conn: Connection, lo: int | None = None, hi: int | None = None) -> int:
    """Payload bytes of the stored entries lo..hi (each bound optional): one SUM."""
    stmt = select(func.coalesce(func.sum(_PAYLOAD_SIZE), 0))
    if lo is not None:
        stmt = stmt.where(log_table.c.idx >= lo)
    if hi is not None:
        stmt = stmt.where(log_table.c.idx <= hi)
    return int(conn.execute(stmt).scalar_one())


def appended_ms(conn: Connection, index: int) -> int | None:
    """When the entry at ``index`` was saved (ms), None if unknown or absent."""
    stmt = select(log_table.c.appended_ms).where(log_table.c.idx == index)
    found = conn.execute(stmt).scalar()
    return None if found is None else int(found)


def payload_sizes(
    conn: Connection, lo: int, hi: int, *, newest_first: bool, budget: int
) -> Iterator[tuple[int, int]]:
    """(index, payload bytes) of the stored entries lo..hi from either end, for a walk that
    stops once their running total reaches ``budget`` bytes. Read in chunks of contiguous
    indexes (the log has no gaps), so every query is a bounded primary-key range whatever
    the planner's statistics: a chunk that cannot reach the budget comes as ONE pair (its
    far index, its bytes) from one SUM; only the chunk that reaches it comes row by row."""
    idx = log_table.c.idx
    total = 0
    while lo <= hi:
        a, b = (
            (max(lo, hi - _SIZE_CHUNK_ROWS + 1), hi)
            if newest_first
            else (lo, min(hi, lo + _SIZE_CHUNK_ROWS - 1))
        )
        size = payload_bytes(conn, lo=a, hi=b)
        if total + size < budget:
            yield (a if newest_first else b), size
        else:
            rows = select(idx, _PAYLOAD_SIZE).where(idx >= a, idx <= b)
            rows = rows.order_by(idx.desc() if newest_first else idx)
            yield from ((int(i), int(n)) for i, n in conn.execute(rows))
        total += size
        lo, hi = (lo, a - 1) if newest_first else (b + 1, hi)


def retention_txn(
    conn: Connection,
    first: int,
    last: int,
    total_bytes: int,
    keep_bytes: int,
    cutoff_ms: int | None,
) -> tuple[int | None, int | None]:
    """(the byte bound's point, the age bound's point), None for a bound not set or that
    lets nothing go; raftmq.storage.retention combines them. The byte bound walks from
    whichever end holds fewer bytes to read (the cached ``total_bytes`` tells); the age
    bound is one covered range on ix_raftmq_log_appended_ms_idx."""
    by_bytes = by_age = None
    if keep_bytes > 0 and total_bytes > keep_bytes:
        if retention.walk_forward(total_bytes, keep_bytes):
            excess = total_bytes - keep_bytes
            sizes = payload_sizes(conn, first, last, newest_first=False, budget=excess)
            by_bytes = retention.bytes_going_forward(sizes, excess)
        else:  # bytes_going_backward stops once the total exceeds keep_bytes
            sizes = payload_sizes(conn, first, last, newest_first=True, budget=keep_bytes + 1)
            by_bytes = retention.bytes_going_backward(sizes, keep_bytes)
    if cutoff_ms is not None:
        # MAX(idx + 0), not MAX(idx): a bare MAX(idx) makes SQLite walk the primary key
        # down from the newest entry through every one too young (all that is kept);
        # this reads only the old entries' range of the covering index.
        stmt = select(func.max(log_table.c.idx + 0)).where(log_table.c.appended_ms < cutoff_ms)
        found = conn.execute(stmt).scalar()
        by_age = None if found is None else int(found)
    return by_bytes, by_age
