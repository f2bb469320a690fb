"""The SQL storage adapter: SQLite (pysqlite in its own thread) and Postgres (asyncpg), one SQL.

Usage::

    store = SqlStorage("sqlite:///n1.db", cluster="c", node_id="n1")  # or postgresql://...
    await store.open()          # checks ownership, upgrades the schema, enables WAL
    await store.save(PersistBatch(hard_state=..., entries=(...)))   # one transaction
    await store.close()

Every operation is one SQLAlchemy Core function run in ONE transaction by a runner
(raftmq.storage.runner): a dedicated thread with pysqlite for SQLite, the async driver
(asyncpg) for Postgres -- the same SQL for both. A save's statements are compiled once
per open and run with plain tuples at the driver level (raftmq.storage.statements); it
skips rows that would not change. The store holds one connection; an asyncio lock
serialises callers. Hard state, applied, watermark and log bounds are
cached (this store is the database's only writer); log entries are always read from
the database. After a failed operation the connection is dropped and the caches are
reloaded from the database on the next call, so a caller may retry a failed ``save``.

Snapshots: ``install_snapshot`` is one transaction (log deleted, snapshot row, hard
state, entries after it, progress); ``compact`` deletes in transactions of at most
``compact_batch_rows`` rows, each moving the compaction point (raftmq_snapshot's
compacted_idx/term) with it, so Postgres never holds a long lock and a crash leaves a
shorter compaction. SQLite space: no auto_vacuum and no VACUUM -- deleted pages go to the
freelist and later inserts reuse them. Measured (tests/storage/test_snapshots.py, 200-byte
entries, 1,000 per round, 2,000 kept): db + WAL grows to 5,128,944 bytes by round 9 and
stays exactly there through round 20.

Retention (raftmq.storage.retention): each saved row is stamped with the save's time
(``appended_ms``, revision 0005). The log's payload bytes and its first row's stamp are
cached like the bounds -- one SUM at open (and after a failed operation), then kept up to
date by save (a truncation subtracts the SUM of the rows it deletes, read first), compact
(each batch returns the bytes it deleted and the new first row's stamp) and
install_snapshot -- so ``extent`` reads no table. ``retention_point`` runs one transaction:
the byte bound walks (index, length) pairs by primary key from whichever end of the log
holds fewer bytes to read, the age bound is ``MAX(idx) WHERE appended_ms < cutoff`` on
the (appended_ms, idx) index.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from raftmq.core.types import Entry, HardState, InitialState
from raftmq.errors import RaftMQError, StorageError
from raftmq.storage import retention
from raftmq.storage.engine import (
    DEFAULT_BUSY_TIMEOUT_MS,
    Durability,
    SqliteRunner,
    check_sqlite_file,
    enable_wal,
    normalize_url,
    sqlite_path,
)
from raftmq.storage.migrate import check_owner, check_schema, read_info, translate, upgrade_in
from raftmq.storage.port import ClientSession, LogExtent, PersistBatch, Snapshot
from raftmq.storage.rules import (
    check_batch,
    check_cluster_id,
    check_compact,
    check_install,
    check_taken,
)
from raftmq.storage.runner import Runner, make_runner
from raftmq.storage.schema import (
    SCHEMA_IDENTITY,
    hard_state_table,
    log_table,
    meta_table,
    progress_table,
    snapshot_table,
)
from raftmq.storage.sqlops import (
    appended_ms,
    config_entries,
    nothing,
    payload_bytes,
    read_entries,
    retention_txn,
    session_txn,
    sessions_txn,
    snapshot_members,
    snapshot_txn,
)
from raftmq.storage.statements import WriteStatements

T = TypeVar("T")

COMPACT_BATCH_ROWS = 2048  # log rows one compaction transaction deletes at most
logger = logging.getLogger("raftmq.storage.sql")


def _terms(conn: Connection, lo: int, hi: int) -> list[tuple[int, int]]:
    """(index, term) of the stored entries lo..hi (a retried save checks its overlap)."""
    stmt = (
        select(log_table.c.idx, log_table.c.term)
        .where(log_table.c.idx >= lo, log_table.c.idx <= hi)
        .order_by(log_table.c.idx)
    )
    return [(int(i), int(t)) for i, t in conn.execute(stmt)]


class SqlStorage:
    """A node's durable state in SQLite or Postgres (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        cluster: str,
        node_id: str,
        durability: Durability = "full",
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        sqlite_runner: SqliteRunner = "thread",
        clock: retention.Clock = time.time,
    ) -> None:
        """``durability`` ("full" | "normal") sets SQLite's ``synchronous`` (engine.py);
        ``sqlite_runner`` "aiosqlite" runs SQLite through aiosqlite instead of a thread;
        ``clock`` stamps the entries saved (raftmq_log.appended_ms)."""
        self.clock = clock  # wall clock (seconds) stamping the entries saved
        self.url = normalize_url(url)  # async driver URL
        self.cluster = cluster  # owner cluster; checked against raftmq_meta on open
        self.node_id = node_id  # owner node; checked against raftmq_meta on open
        self.durability: Durability = durability  # SQLite synchronous=FULL or NORMAL
        self._busy_timeout_ms = busy_timeout_ms
        self._sqlite_runner: SqliteRunner = sqlite_runner
        self._where = repr(self.url.split("@")[-1] if "@" in self.url else self.url)
        self._runner: Runner | None = None  # set by open(), None after close()
        self._fresh = False  # True while the caches are known to match the database
        # Caches of what the database holds; valid while _fresh.
        self._hard = HardState()
        self._applied = 0
        self._watermark = 0
        self._snap_index = 0  # 0 when there is no snapshot
        self._snap_term = 0
        self._first = 1  # first log index (compaction point + 1)
        self._prev_term = 0  # term of _first - 1 (the last compacted entry's; 0 when none)
        self.compact_batch_rows = COMPACT_BATCH_ROWS  # rows per compaction transaction
        self._last = 0  # last log index (snapshot index when the log is empty)
        self._bytes = 0  # payload bytes of the entries _first.._last
        self._oldest_ms: int | None = None  # appended_ms of entry _first (None: unknown/empty)
        self._writes: WriteStatements | None = None  # compiled by the first save after open

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Check the database is ours (or empty), upgrade its schema, claim it, enable WAL.

        Raises StoreMismatch (nothing changed) for a foreign, newer or other node's
        database and StorageError for an unusable one (e.g. a read-only file).
        """
        if self._runner is not None:
            return
        path = sqlite_path(self.url)
        if path is not None:
            check_sqlite_file(path)
        self._writes = None  # the server (and so the statements) may differ from last time
        runner = make_runner(
            self.url,
            durability=self.durability,
            busy_timeout_ms=self._busy_timeout_ms,
            sqlite_runner=self._sqlite_runner,
        )
        self._runner = runner
        try:
            await self._run("open", self._open_txn, write=True)
            await self._run_outside("open", enable_wal)
            await self._run("open", self._load_caches)
        except BaseException:
            self._runner = None
            await runner.close()
            raise
        logger.info("opened store %s for node %s of %s", self._where, self.node_id, self.cluster)

    def _open_txn(self, conn: Connection) -> None:
        info = read_info(conn)
        check_schema(info, self._where)
        check_owner(info, self._where, self.cluster, self.node_id)
        upgrade_in(conn, info)
        if info.node_id is None:
            meta = {"id": 1, "identity": SCHEMA_IDENTITY, "incarnation": uuid.uuid4().hex}
            conn.execute(
                insert(meta_table), [{**meta, "cluster": self.cluster, "node_id": self.node_id}]
            )
            conn.execute(
                insert(hard_state_table),
                [{"id": 1, "term": 0, "voted_for": None, "commit_index": 0}],
            )
            conn.execute(insert(progress_table), [{"id": 1, "applied": 0, "fanout_watermark": 0}])

    async def close(self) -> None:
        """Release the connection and the engine. Idempotent."""
        runner, self._runner = self._runner, None
        self._fresh = False
        if runner is not None:
            await runner.close()

    def _load_caches(self, conn: Connection) -> None:
        hs = conn.execute(select(hard_state_table)).one()
        progress = conn.execute(select(progress_table)).one()
        snap = conn.execute(
            select(
                snapshot_table.c.idx,
                snapshot_table.c.term,
                snapshot_table.c.compacted_idx,
                snapshot_table.c.compacted_term,
            )
        ).first()
        bounds = select(func.min(log_table.c.idx), func.max(log_table.c.idx))
        low, high = conn.execute(bounds).one()
        self._hard = HardState(term=hs.term, voted_for=hs.voted_for, commit=hs.commit_index)
        self._applied, self._watermark = progress.applied, progress.fanout_watermark
        self._snap_index, self._snap_term = (snap.idx, snap.term) if snap else (0, 0)
        if snap is not None and snap.compacted_idx > 0:
            self._first, self._prev_term = snap.compacted_idx + 1, snap.compacted_term
        else:
            self._first, self._prev_term = (low if low is not None else 1), 0
        self._last = high if high is not None else self._snap_index
        # From _first: a round trip through 0003 may leave unread rows below it.
        self._bytes = payload_bytes(conn, lo=self._first)
        self._oldest_ms = appended_ms(conn, self._first) if low is not None else None
        self._fresh = True

    async def _run(self, what: str, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """Run ``fn(conn, *args)`` in one transaction; errors become StorageError and
        make the caches reload (from a new connection) before the next operation."""
        runner = self._runner
        if runner is None:
            raise StorageError("the store is not open (call open() first)")
        try:
            if not self._fresh and fn != self._open_txn and fn != self._load_caches:
                await runner.run(self._load_caches)
            return await runner.run(fn, *args, write=write)
        except SQLAlchemyError as error:
            self._fresh = False
            await runner.reset()
            raise translate(error, self._where, what) from error
        except RaftMQError:
            raise  # refused before anything was written; the connection is fine
        except BaseException:
            self._fresh = False
            await runner.reset()
            raise

    async def _run_outside(self, what: str, fn: Callable[[Connection], None]) -> None:
        assert self._runner is not None
        try:
            await self._runner.run_outside(fn)
        except SQLAlchemyError as error:
            raise translate(error, self._where, what) from error

    # -- writes ----------------------------------------------------------------------

    async def save(self, batch: PersistBatch) -> None:
        """Persist one batch in ONE transaction: hard state, truncation, appends, the rest."""
        if batch.is_empty():
            if self._runner is None:
                raise StorageError("the store is not open (call open() first)")
            return
        stamp = retention.clock_ms(self.clock)
        first, last, size, oldest = await self._run(
            "save", self._save_txn, batch, stamp, write=True
        )
        # Committed: the caches follow the database.
        if batch.hard_state is not None:
            self._hard = batch.hard_state
        self._first, self._last, self._bytes, self._oldest_ms = first, last, size, oldest
        if batch.applied is not None:
            self._applied = batch.applied
        if batch.fanout_watermark is not None:
            self._watermark = batch.fanout_watermark

    def _save_txn(
        self, conn: Connection, batch: PersistBatch, stamp: int
    ) -> tuple[int, int, int, int | None]:
        """Returns the log's bounds, payload bytes and first stamp after the batch."""
        first, last, stored = check_batch(
            batch, self._hard, self._snap_index, self._first, self._last, partial(_terms, conn)
        )
        sql = self._writes
        if sql is None:  # once per open; see raftmq.storage.statements
            sql = self._writes = WriteStatements(conn.dialect)
        # The caches equal the database here (_run reloads them first when in doubt), so
        # a hard state or progress row that would not change is not written again.
        if batch.hard_state is not None and batch.hard_state != self._hard:
            sql.write_hard_state(conn, batch.hard_state)
        size, oldest = self._bytes, self._oldest_ms
        if batch.truncate_from is not None and batch.truncate_from <= self._last:
            size -= payload_bytes(conn, lo=batch.truncate_from)
            if batch.truncate_from <= self._first:  # the whole log goes
                oldest = None
            sql.truncate_from(conn, batch.truncate_from)
        if len(batch.entries) > stored:  # the stored ones: a retried save that had landed
            added = batch.entries[stored:]
            if added[0].index == first:  # the log was empty
                oldest = stamp
            sql.append_entries(conn, added, stamp)
            size += sum(len(e.data) for e in added)
        applied = self._applied if batch.applied is None else batch.applied
        watermark = self._watermark if batch.fanout_watermark is None else batch.fanout_watermark
        if applied != self._applied or watermark != self._watermark:
            sql.write_progress(conn, applied, watermark)
        if batch.sessions:
            sql.put_sessions(conn, batch.sessions)
        if batch.expire_sessions_before is not None:
            sql.expire_sessions(conn, batch.expire_sessions_before)
        return first, last, size, oldest

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Record a snapshot taken here (see the Storage port); the log is untouched."""
        saved = await self._run("save_snapshot", self._snapshot_txn, snapshot, write=True)
        if saved:
            self._snap_index, self._snap_term = snapshot.index, snapshot.term

    def _snapshot_txn(self, conn: Connection, snapshot: Snapshot) -> bool:
        if not check_taken(
            snapshot, self._snap_index, self._last, self._term_txn(conn, snapshot.index)
        ):
            return False
        self._put_snapshot(conn, snapshot, self._first - 1, self._prev_term)
        return True

    def _put_snapshot(
        self, conn: Connection, snapshot: Snapshot, compacted: int, term: int
    ) -> None:
        conn.execute(delete(snapshot_table))
        row = {
            "id": 1,
            "idx": snapshot.index,
            "term": snapshot.term,
            "data": snapshot.data,
            "voters": snapshot_members(snapshot),
            "compacted_idx": compacted,
            "compacted_term": term,
        }
        conn.execute(insert(snapshot_table), [row])

    async def install_snapshot(self, snapshot: Snapshot, batch: PersistBatch) -> None:
        """Replace the log by ``snapshot`` and save ``batch``, in ONE transaction (see the
        Storage port)."""
        applied = max(batch.applied or 0, snapshot.index)
        stamp = retention.clock_ms(self.clock)
        done = await self._run(
            "install_snapshot", self._install_txn, snapshot, batch, stamp, write=True
        )
        if done is None:  # the stored snapshot: the retry of an install that landed
            await self.save(replace(batch, applied=applied))
            return
        hard, last = done
        self._hard, self._applied = hard, applied
        if batch.fanout_watermark is not None:
            self._watermark = batch.fanout_watermark
        self._snap_index, self._snap_term = snapshot.index, snapshot.term
        self._first, self._prev_term, self._last = snapshot.index + 1, snapshot.term, last
        self._bytes = sum(len(e.data) for e in batch.entries)
        self._oldest_ms = stamp if batch.entries else None

    def _install_txn(
        self, conn: Connection, snapshot: Snapshot, batch: PersistBatch, stamp: int
    ) -> tuple[HardState, int] | None:
        if not check_install(snapshot, self._snap_index, self._snap_term):
            return None  # found stored after the caches reloaded: a retry
        index = snapshot.index
        _, last, _ = check_batch(batch, self._hard, index, index + 1, index, lambda lo, hi: [])
        sql = self._writes
        if sql is None:
            sql = self._writes = WriteStatements(conn.dialect)
        base = batch.hard_state if batch.hard_state is not None else self._hard
        hard = HardState(term=base.term, voted_for=base.voted_for, commit=max(base.commit, index))
        sql.write_hard_state(conn, hard)
        conn.execute(delete(log_table))
        self._put_snapshot(conn, snapshot, index, snapshot.term)
        if batch.entries:
            sql.append_entries(conn, batch.entries, stamp)
        watermark = self._watermark if batch.fanout_watermark is None else batch.fanout_watermark
        sql.write_progress(conn, max(batch.applied or 0, index), watermark)
        if batch.sessions:
            sql.put_sessions(conn, batch.sessions)
        if batch.expire_sessions_before is not None:
            sql.expire_sessions(conn, batch.expire_sessions_before)
        return hard, last

    async def compact(self, index: int) -> None:
        """Delete entries up to ``index`` in transactions of at most
        ``compact_batch_rows`` rows each (see the Storage port and the module docstring)."""
        await self._cached("compact")
        check_compact(index, self._snap_index)
        while self._first <= index:
            hi = min(index, self._first + self.compact_batch_rows - 1)
            term, size, oldest = await self._run(
                "compact", self._compact_txn, index, hi, write=True
            )
            self._first, self._prev_term = hi + 1, term
            self._bytes, self._oldest_ms = size, oldest

    def _compact_txn(self, conn: Connection, index: int, hi: int) -> tuple[int, int, int | None]:
        """Returns the term at ``hi``, the log's payload bytes and first stamp after it."""
        check_compact(index, self._snap_index)
        term = self._term_txn(conn, hi)
        if term is None:  # pragma: no cover - the caches say hi is in the log
            raise StorageError(f"entry {hi} is missing from the log")
        deleted = payload_bytes(conn, lo=self._first, hi=hi)
        conn.execute(delete(log_table).where(log_table.c.idx <= hi))
        conn.execute(update(snapshot_table).values(compacted_idx=hi, compacted_term=term))
        return term, self._bytes - deleted, appended_ms(conn, hi + 1)

    async def save_cluster_id(self, cluster_id: str) -> None:
        """Record the cluster id once (see the Storage port)."""
        await self._run("save_cluster_id", self._cluster_id_txn, cluster_id, write=True)

    def _cluster_id_txn(self, conn: Connection, cluster_id: str) -> None:
        check_cluster_id(cluster_id, self._cluster_id_read(conn), self._where)
        conn.execute(update(meta_table).values(cluster_id=cluster_id))

    def _cluster_id_read(self, conn: Connection) -> str | None:
        return conn.execute(select(meta_table.c.cluster_id)).scalar()

    # -- reads -----------------------------------------------------------------------

    async def cluster_id(self) -> str | None:
        """The saved cluster id, if any (read from the database)."""
        return await self._run("cluster_id", self._cluster_id_read)

    async def initial_state(self, tail_entries: int = 1024) -> InitialState:
        """Hard state, bounds, term runs (one GROUP BY query) and the last entries only."""
        return await self._run("initial_state", self._initial_txn, tail_entries)

    def _initial_txn(self, conn: Connection, tail_entries: int) -> InitialState:
        runs = conn.execute(
            select(func.min(log_table.c.idx), log_table.c.term)
            .group_by(log_table.c.term)
            .order_by(func.min(log_table.c.idx))
        )
        term_runs = tuple((int(i), int(t)) for i, t in runs)
        if self._first > 1:  # the compaction point's term starts the first run
            head = (self._first - 1, self._prev_term)
            same = term_runs and term_runs[0][1] == self._prev_term
            term_runs = (head, *term_runs[1:]) if same else (head, *term_runs)
        tail: tuple[Entry, ...] = ()
        if tail_entries > 0 and self._last >= self._first:
            lo = max(self._first, self._last - tail_entries + 1)
            tail = tuple(read_entries(conn, lo, self._last, None))
        snapshot = snapshot_txn(conn)
        return InitialState(
            hard_state=self._hard,
            first_index=self._first,
            last_index=self._last,
            term_runs=term_runs,
            tail=tail,
            applied=self._applied,
            snapshot=snapshot,
            config_entries=config_entries(conn, snapshot.index if snapshot else 0),
            incarnation=conn.execute(select(meta_table.c.incarnation)).scalar() or "",
        )

    async def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries lo..hi inclusive from the database; see the port for the byte limit."""
        return await self._run("entries", self._entries_txn, lo, hi, max_bytes)

    def _entries_txn(
        self, conn: Connection, lo: int, hi: int, max_bytes: int | None
    ) -> list[Entry]:
        if lo < self._first or lo > self._last or hi < lo:
            return []
        return read_entries(conn, lo, min(hi, self._last), max_bytes)

    async def term_at(self, index: int) -> int | None:
        """Term at ``index`` (snapshot term at its index, 0 at index 0), None if absent."""
        return await self._run("term_at", self._term_txn, index)

    def _term_txn(self, conn: Connection, index: int) -> int | None:
        if index == self._snap_index and self._snap_index > 0:
            return self._snap_term
        if index == self._first - 1:
            return self._prev_term
        if index < self._first or index > self._last:
            return None
        term = conn.execute(select(log_table.c.term).where(log_table.c.idx == index)).scalar()
        return None if term is None else int(term)

    async def _cached(self, what: str) -> None:
        """Make sure the caches are valid (reloading after an error)."""
        await self._run(what, nothing)

    async def first_index(self) -> int:
        """First index held (snapshot index + 1; 1 for a fresh log)."""
        await self._cached("first_index")
        return self._first

    async def last_index(self) -> int:
        """Last index held (snapshot index when the log is empty; 0 when fresh)."""
        await self._cached("last_index")
        return self._last

    async def hard_state(self) -> HardState:
        """The last saved hard state."""
        await self._cached("hard_state")
        return self._hard

    async def applied(self) -> int:
        """The last saved applied index."""
        await self._cached("applied")
        return self._applied

    async def fanout_watermark(self) -> int:
        """The last saved fan-out watermark."""
        await self._cached("fanout_watermark")
        return self._watermark

    async def session(self, producer_id: str) -> ClientSession | None:
        """The client session of ``producer_id``, if any."""
        return await self._run("session", session_txn, producer_id)

    async def sessions(self) -> list[ClientSession]:
        """Every client session, by producer id."""
        return await self._run("sessions", sessions_txn)

    async def snapshot(self) -> Snapshot | None:
        """The stored snapshot, if any."""
        return await self._run("snapshot", snapshot_txn)

    async def extent(self) -> LogExtent:
        """The stored log's bounds, payload bytes and first entry's save time, from the
        caches (a query only when they must be reloaded, e.g. after an error)."""
        if not self._fresh or self._runner is None:
            await self._cached("extent")
        return LogExtent(
            first_index=self._first,
            last_index=self._last,
            entries=self._last - self._first + 1,
            payload_bytes=self._bytes,
            oldest_appended=retention.oldest_appended(self._oldest_ms),
        )

    async def retention_point(
        self,
        *,
        keep_entries: int = 0,
        keep_bytes: int = 0,
        max_age: float = 0.0,
        now: float | None = None,
    ) -> int:
        """The highest index retention lets go (see the Storage port and the module
        docstring): one read transaction when a byte or age bound is set."""
        cutoff = None
        if max_age > 0:
            cutoff = retention.age_cutoff_ms(self.clock() if now is None else now, max_age)
        if keep_bytes > 0 or cutoff is not None:
            first, last, by_bytes, by_age = await self._run(
                "retention_point", self._retention_txn, keep_bytes, cutoff
            )
        else:
            await self._cached("retention_point")
            first, last, by_bytes, by_age = self._first, self._last, None, None
        by_count = retention.count_point(last, keep_entries)
        return retention.furthest(first, last, by_count, by_bytes, by_age)

    def _retention_txn(
        self, conn: Connection, keep_bytes: int, cutoff: int | None
    ) -> tuple[int, int, int | None, int | None]:
        first, last = self._first, self._last
        if last < first:
            return first, last, None, None
        return first, last, *retention_txn(conn, first, last, self._bytes, keep_bytes, cutoff)
