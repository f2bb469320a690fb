"""The in-memory twin of the SQL store (hashicorp's InmemStore): same contract, no disk.

For tests and simulations of user state machines. Nothing survives the process, but
the object itself survives ``close()``/``open()``, so a "restart" that reuses the same
instance sees what was saved -- like reopening a database file.

Like the SQL store it stamps each entry with the time it was saved (whole milliseconds of
``clock``) and keeps the log's payload bytes, for :meth:`MemoryStorage.extent` and
:meth:`MemoryStorage.retention_point` (raftmq.storage.retention).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from raftmq.core.types import Entry, EntryKind, HardState, InitialState
from raftmq.errors import StorageError, StoreMismatch
from raftmq.storage import retention
from raftmq.storage.port import ClientSession, LogExtent, PersistBatch, Snapshot
from raftmq.storage.rules import (
    check_batch,
    check_cluster_id,
    check_compact,
    check_install,
    check_taken,
)


class MemoryStorage:
    """A node's state held in Python objects; passes the storage contract suite."""

    def __init__(
        self,
        *,
        cluster: str,
        node_id: str,
        clock: retention.Clock = time.time,
        incarnation: str | None = None,
    ) -> None:
        """An empty store for ``node_id`` of ``cluster``; ``clock`` stamps saved entries;
        ``incarnation`` is the store's id (random when not given; a simulation gives
        its own, to stay deterministic)."""
        self.incarnation = incarnation if incarnation is not None else uuid.uuid4().hex
        self.clock = clock  # wall clock (seconds) stamping the entries saved
        self.cluster = cluster  # owner cluster
        self.node_id = node_id  # owner node
        self._open = False  # operations other than open() need it
        self._owner: tuple[str, str] | None = None  # claimed on first open
        self._hard = HardState()  # last saved hard state
        self._log: list[Entry] = []  # log[i].index == first + i, contiguous
        self._appended: list[int] = []  # ms when _log[i] was saved; len == len(_log)
        self._bytes = 0  # sum of len(e.data) over _log
        self._first = 1  # index of _log[0] (compaction point + 1)
        self._prev_term = 0  # term of _first - 1 (the last compacted entry's; 0 when none)
        self._snapshot: Snapshot | None = None  # latest snapshot
        self._applied = 0  # last saved applied index
        self._watermark = 0  # last saved fan-out watermark
        self._sessions: dict[str, ClientSession] = {}  # by producer id
        self._cluster_id: str | None = None  # saved once, never changed

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Claim the store for (cluster, node_id); StoreMismatch if another owns it."""
        owner = (self.cluster, self.node_id)
        if self._owner is not None and self._owner != owner:
            raise StoreMismatch(
                f"this memory store belongs to node {self._owner[1]!r} of cluster "
                f"{self._owner[0]!r}, not to node {self.node_id!r} of {self.cluster!r}"
            )
        self._owner = owner
        self._open = True

    async def close(self) -> None:
        """Mark the store closed (its contents stay for a later open). Idempotent."""
        self._open = False

    def _need_open(self) -> None:
        if not self._open:
            raise StorageError("the store is not open (call open() first)")

    @property
    def _last(self) -> int:
        return self._first + len(self._log) - 1

    @property
    def _snap_index(self) -> int:
        return self._snapshot.index if self._snapshot else 0

    # -- writes ----------------------------------------------------------------------

    async def save(self, batch: PersistBatch) -> None:
        """Apply one batch, all or nothing (validated before anything changes)."""
        self._need_open()
        if batch.is_empty():
            return
        _, _, stored = check_batch(
            batch, self._hard, self._snap_index, self._first, self._last, self._terms
        )
        self._apply(batch, stored)

    def _apply(self, batch: PersistBatch, stored: int) -> None:
        if batch.hard_state is not None:
            self._hard = batch.hard_state
        if batch.truncate_from is not None:
            cut = max(0, batch.truncate_from - self._first)
            self._bytes -= sum(len(e.data) for e in self._log[cut:])
            del self._log[cut:], self._appended[cut:]
        added = batch.entries[stored:]
        if added:
            self._log.extend(added)
            self._appended.extend([retention.clock_ms(self.clock)] * len(added))
            self._bytes += sum(len(e.data) for e in added)
        if batch.applied is not None:
            self._applied = batch.applied
        if batch.fanout_watermark is not None:
            self._watermark = batch.fanout_watermark
        for session in batch.sessions:
            self._sessions[session.producer_id] = session
        if batch.expire_sessions_before is not None:
            cutoff = batch.expire_sessions_before
            self._sessions = {k: s for k, s in self._sessions.items() if s.updated_index >= cutoff}

    def _terms(self, lo: int, hi: int) -> list[tuple[int, int]]:
        return [(e.index, e.term) for e in self._log[lo - self._first : hi - self._first + 1]]

    async def cluster_id(self) -> str | None:
        """The saved cluster id, if any."""
        self._need_open()
        return self._cluster_id

    async def save_cluster_id(self, cluster_id: str) -> None:
        """Record the cluster id once (see the Storage port)."""
        self._need_open()
        check_cluster_id(cluster_id, self._cluster_id, f"memory store of {self.node_id!r}")
        self._cluster_id = cluster_id

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Record a snapshot taken here (see the Storage port); the log is untouched."""
        self._need_open()
        there = self._term_at(snapshot.index)
        if check_taken(snapshot, self._snap_index, self._last, there):
            self._snapshot = snapshot

    async def install_snapshot(self, snapshot: Snapshot, batch: PersistBatch) -> None:
        """Replace the log by ``snapshot`` and save ``batch``, all or nothing (see the port)."""
        self._need_open()
        snap = self._snapshot
        if not check_install(snapshot, self._snap_index, snap.term if snap else 0):
            await self.save(replace(batch, applied=max(batch.applied or 0, snapshot.index)))
            return
        index = snapshot.index
        _, _, stored = check_batch(batch, self._hard, index, index + 1, index, lambda lo, hi: [])
        hard = batch.hard_state if batch.hard_state is not None else self._hard
        self._hard = hard.model_copy(update={"commit": max(hard.commit, index)})
        self._snapshot = snapshot
        self._log, self._first, self._prev_term = [], index + 1, snapshot.term
        self._appended, self._bytes = [], 0
        self._apply(replace(batch, hard_state=None, applied=max(batch.applied or 0, index)), stored)

    async def compact(self, index: int) -> None:
        """Delete entries up to ``index`` (covered by the snapshot; see the port)."""
        self._need_open()
        check_compact(index, self._snap_index)
        if index < self._first:
            return
        cut = index - self._first + 1
        self._prev_term = self._log[cut - 1].term
        self._bytes -= sum(len(e.data) for e in self._log[:cut])
        del self._log[:cut], self._appended[:cut]
        self._first = index + 1

    def _term_at(self, index: int) -> int | None:
        if self._snapshot is not None and index == self._snapshot.index:
            return self._snapshot.term
        if index == self._first - 1:
            return self._prev_term
        if index < self._first or index > self._last:
            return None
        return self._log[index - self._first].term

    # -- reads -----------------------------------------------------------------------

    async def initial_state(self, tail_entries: int = 1024) -> InitialState:
        """Hard state, bounds, term runs, the last ``tail_entries`` entries and applied."""
        self._need_open()
        runs: list[tuple[int, int]] = []
        if self._first > 1:  # the compaction point's term starts the first run
            runs.append((self._first - 1, self._prev_term))
        for entry in self._log:
            if not runs or runs[-1][1] != entry.term:
                runs.append((entry.index, entry.term))
        tail = tuple(self._log[-tail_entries:]) if tail_entries > 0 else ()
        return InitialState(
            hard_state=self._hard,
            first_index=self._first,
            last_index=self._last,
            term_runs=tuple(runs),
            tail=tail,
            applied=self._applied,
            snapshot=self._snapshot,
            config_entries=tuple(
                e
                for e in self._log
                if e.kind is EntryKind.CONFIG
                and e.index > (self._snapshot.index if self._snapshot else 0)
            ),
            incarnation=self.incarnation,
        )

    async def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries lo..hi inclusive; see the port for the byte limit."""
        self._need_open()
        if lo < self._first or lo > self._last or hi < lo:
            return []
        out: list[Entry] = []
        size = 0
        for entry in self._log[lo - self._first : min(hi, self._last) - self._first + 1]:
            size += len(entry.data)
            if max_bytes is not None and out and size > max_bytes:
                break
            out.append(entry)
        return out

    async def term_at(self, index: int) -> int | None:
        """Term at ``index`` (snapshot term at its index, 0 at index 0), None if absent."""
        self._need_open()
        return self._term_at(index)

    async def first_index(self) -> int:
        """First index held (snapshot index + 1; 1 for a fresh log)."""
        self._need_open()
        return self._first

    async def last_index(self) -> int:
        """Last index held (snapshot index when the log is empty; 0 when fresh)."""
        self._need_open()
        return self._last

    async def hard_state(self) -> HardState:
        """The last saved hard state."""
        self._need_open()
        return self._hard

    async def applied(self) -> int:
        """The last saved applied index."""
        self._need_open()
        return self._applied

    async def fanout_watermark(self) -> int:
        """The last saved fan-out watermark."""
        self._need_open()
        return self._watermark

    async def session(self, producer_id: str) -> ClientSession | None:
        """The client session of ``producer_id``, if any."""
        self._need_open()
        return self._sessions.get(producer_id)

    async def sessions(self) -> list[ClientSession]:
        """Every client session, by producer id."""
        self._need_open()
        ids = sorted(self._sessions)
        return [self._sessions[i] for i in ids]

    async def snapshot(self) -> Snapshot | None:
        """The stored snapshot, if any."""
        self._need_open()
        return self._snapshot

    async def extent(self) -> LogExtent:
        """The stored log's bounds, payload bytes and the first entry's save time."""
        self._need_open()
        return LogExtent(
            first_index=self._first,
            last_index=self._last,
            entries=len(self._log),
            payload_bytes=self._bytes,
            oldest_appended=retention.oldest_appended(
                self._appended[0] if self._appended else None
            ),
        )

    async def retention_point(
        self,
        *,
        keep_entries: int = 0,
        keep_bytes: int = 0,
        max_age: float = 0.0,
        now: float | None = None,
    ) -> int:
        """The highest index retention lets go (see the Storage port); deletes nothing."""
        self._need_open()
        by_bytes = by_age = None
        if keep_bytes > 0 and self._bytes > keep_bytes:
            sizes = ((e.index, len(e.data)) for e in reversed(self._log))
            by_bytes = retention.bytes_going_backward(sizes, keep_bytes)
        if max_age > 0:
            cutoff = retention.age_cutoff_ms(self.clock() if now is None else now, max_age)
            old = [e.index for e, ms in zip(self._log, self._appended, strict=True) if ms < cutoff]
            by_age = max(old, default=None)
        by_count = retention.count_point(self._last, keep_entries)
        return retention.furthest(self._first, self._last, by_count, by_bytes, by_age)
