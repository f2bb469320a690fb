"""The storage port: what a node needs from its database (hashicorp's LogStore +
StableStore + SnapshotStore, folded into one async Protocol).

Every adapter passes the same contract suite (tests/storage/contract.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from raftmq.core.types import Entry, HardState, InitialState, Snapshot

__all__ = ["ClientSession", "LogExtent", "PersistBatch", "Snapshot", "Storage"]


@dataclass(frozen=True, slots=True)
class ClientSession:
    """The writes applied from one producer (client sessions, thesis §6.3).

    A seq was applied iff ``seq <= floor or seq in above`` (exact per-seq dedupe: writes of
    one producer may commit out of seq order). Invariants: last_seq and floor only grow
    for a given producer_id; ``floor + 1`` is never in ``above``; every seq in ``above``
    is > floor; above is sorted ascending.
    """

    producer_id: str  # stable producer identity chosen by the client
    last_seq: int  # highest sequence number applied for this producer
    last_index: int  # log index of that write (a retried write's receipt names it)
    last_term: int  # term of that entry
    updated_index: int  # log index at which the session was last touched (for expiry)
    floor: int = -1  # every seq <= floor was applied; -1 (not given) means last_seq
    above: tuple[int, ...] = ()  # applied seqs > floor, ascending (few: missing seqs wait)

    def __post_init__(self) -> None:
        if self.floor < 0:  # a session written before per-seq dedupe: last_seq semantics
            object.__setattr__(self, "floor", self.last_seq)


@dataclass(frozen=True, slots=True)
class LogExtent:
    """The stored log's bounds, size and age (what log retention decides on).

    Invariants: ``entries == last_index - first_index + 1 >= 0``; ``payload_bytes`` and
    ``oldest_appended`` describe exactly the entries first_index..last_index.
    """

    first_index: int  # first stored entry (== last_index + 1 when the log is empty)
    last_index: int  # last stored entry (the snapshot's index when the log is empty)
    entries: int  # number of stored entries (last_index - first_index + 1, >= 0)
    payload_bytes: int  # sum of len(entry.data) of the stored entries
    # wall-clock time (time.time(), seconds) the first stored entry was saved; None when
    # the log is empty or that entry's time is unknown (rows from before revision 0005)
    oldest_appended: float | None


@dataclass(frozen=True, slots=True)
class PersistBatch:
    """Everything one Ready (plus driver bookkeeping) must persist, in ONE transaction.

    Order inside the transaction: hard_state, truncate, append, then the rest.
    """

    hard_state: HardState | None = None  # new term/vote/commit, or None
    truncate_from: int | None = None  # delete entries with index >= this
    entries: tuple[Entry, ...] = ()  # append; must continue the log after truncation
    applied: int | None = None  # highest index applied by the state machine
    fanout_watermark: int | None = None  # highest index confirmed on the committed exchange
    sessions: tuple[ClientSession, ...] = ()  # upserted client sessions
    expire_sessions_before: int | None = None  # delete sessions with updated_index < this

    def followed_by(self, later: PersistBatch) -> PersistBatch:
        """One batch with the effect of saving this bookkeeping batch, then ``later``.

        Only a batch without log changes can go first (its applied index, watermark,
        sessions and hard state are merged; the later value wins where both are set).
        """
        if self.truncate_from is not None or self.entries:
            raise ValueError("only a batch without log changes can be merged in front")
        sessions = {s.producer_id: s for s in (*self.sessions, *later.sessions)}
        expire = [e for e in (self.expire_sessions_before, later.expire_sessions_before) if e]
        watermark = [w for w in (self.fanout_watermark, later.fanout_watermark) if w is not None]
        applied = [a for a in (self.applied, later.applied) if a is not None]
        return PersistBatch(
            hard_state=later.hard_state if later.hard_state is not None else self.hard_state,
            truncate_from=later.truncate_from,
            entries=later.entries,
            applied=max(applied) if applied else None,
            fanout_watermark=max(watermark) if watermark else None,
            sessions=tuple(sessions.values()),
            expire_sessions_before=max(expire) if expire else None,
        )

    def is_empty(self) -> bool:
        """True when nothing would be written."""
        return (
            self.hard_state is None
            and self.truncate_from is None
            and not self.entries
            and self.applied is None
            and self.fanout_watermark is None
            and not self.sessions
            and self.expire_sessions_before is None
        )


@runtime_checkable
class Storage(Protocol):
    """A node's durable state. One instance per node; not shared between nodes.

    ``open`` must be awaited before anything else and ``close`` at the end.
    ``save`` is atomic and durable when it returns (per the adapter's durability
    setting): a crash leaves either all of a batch or none of it.
    """

    node_id: str  # the node this database belongs to
    cluster: str  # the cluster this database belongs to

    async def open(self) -> None:
        """Create/upgrade the schema and check it belongs to (cluster, node_id).

        Raises StoreMismatch (nothing changed) for a foreign or newer database.
        """
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...

    async def initial_state(self, tail_entries: int = 1024) -> InitialState:
        """Hard state, log bounds, term runs, the last ``tail_entries`` entries, applied and
        the stored snapshot. After a compaction first_index - 1 is the compaction point
        and ``term_runs`` starts at it (its term; the core clips the run)."""
        ...

    async def save(self, batch: PersistBatch) -> None:
        """Persist one batch atomically (one transaction).

        Raises StorageError, writing nothing, for a batch that would move the term
        backwards, truncate compacted entries, or append entries that do not continue
        the log after its truncation (raftmq.storage.rules)."""
        ...

    async def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries lo..hi inclusive, ascending, read from the database.

        With ``max_bytes``, the longest prefix whose payload bytes total at most
        ``max_bytes`` -- but always at least one entry when lo <= hi and lo exists
        (etcd's limitSize). ``hi`` beyond the last index is clipped; ``lo`` outside
        first_index..last_index gives an empty list."""
        ...

    async def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index`` (the snapshot's term at its index; 0 at index 0
        of a log without snapshot), None if absent."""
        ...

    async def first_index(self) -> int:
        """First index in the log (snapshot index + 1; 1 for a fresh log)."""
        ...

    async def last_index(self) -> int:
        """Last index in the log (snapshot index when the log is empty; 0 for fresh)."""
        ...

    async def hard_state(self) -> HardState:
        """The last saved hard state (all zero/None for a fresh database)."""
        ...

    async def applied(self) -> int:
        """The last saved applied index."""
        ...

    async def fanout_watermark(self) -> int:
        """The last saved fan-out watermark."""
        ...

    async def session(self, producer_id: str) -> ClientSession | None:
        """The client session of ``producer_id``, if any."""
        ...

    async def sessions(self) -> list[ClientSession]:
        """Every client session."""
        ...

    async def cluster_id(self) -> str | None:
        """The id of the cluster this database was admitted to, None until it was saved."""
        ...

    async def save_cluster_id(self, cluster_id: str) -> None:
        """Record the cluster id once (saving the same id again does nothing).

        Raises StoreMismatch, changing nothing, when the database already holds another
        id, and StorageRefused for an id that is empty or longer than 64 characters."""
        ...

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Record a snapshot this node took of its own state machine; the log is untouched
        (the host deletes entries before the core's first index with :meth:`compact`).

        One at or below the stored snapshot's index is ignored (a retried save). Raises
        StorageRefused, writing nothing, for a snapshot beyond the last index or whose term
        is not the stored entry's term at its index."""
        ...

    async def install_snapshot(self, snapshot: Snapshot, batch: PersistBatch) -> None:
        """Install a snapshot received from the leader (the driver's PersistSnapshot step),
        in ONE transaction: ``batch.hard_state`` (its commit raised to snapshot.index if
        lower), then the snapshot replaces the WHOLE log (first_index becomes index + 1,
        last_index index, term_at(index) its term), then ``batch`` as :meth:`save` does --
        truncation, the entries after the snapshot, sessions, watermark -- with the applied
        index set to ``max(batch.applied, snapshot.index)`` (the state machine is restored
        from the snapshot's bytes). A failure leaves the old log, snapshot and state.

        The same snapshot again (same index and term as the stored one) is the retry of an
        install whose commit landed: the log is kept and ``batch`` is saved like
        :meth:`save`. Raises StorageRefused, writing nothing, for an older snapshot (index
        at or below the stored one's, another term) or a batch that does not continue it."""
        ...

    async def compact(self, index: int) -> None:
        """Delete the log entries with index <= ``index`` (nothing above it); the term of
        ``index`` stays known (term_at, and the term runs at open). ``index`` below the
        first index does nothing. Raises StorageRefused for an index beyond the stored
        snapshot's (entries no snapshot covers). Not one transaction: the SQL adapter
        deletes in bounded batches, each durable on its own, so a crash in the middle
        leaves a shorter compaction, never a gap."""
        ...

    async def snapshot(self) -> Snapshot | None:
        """The stored snapshot, if any."""
        ...

    async def extent(self) -> LogExtent:
        """The stored log's bounds, size and age. Cheap: from caches kept up to date by
        save, install_snapshot, compact and truncation (no query per call in the SQL
        adapter beyond the first)."""
        ...

    async def retention_point(
        self,
        *,
        keep_entries: int = 0,
        keep_bytes: int = 0,
        max_age: float = 0.0,
        now: float | None = None,
    ) -> int:
        """The highest index retention lets go: each bound that is set (> 0) alone decides
        how far the oldest entries may be deleted, and the furthest of them wins (like a
        RabbitMQ stream's max-length / max-length-bytes / max-age):

        * by count, all but the newest ``keep_entries``;
        * by bytes, all but the newest entries whose payload bytes total at most
          ``keep_bytes`` (the newest entry is always kept);
        * by age, every entry saved before ``now - max_age`` (``now`` defaults to
          time.time()), and never the newest entry. An entry of unknown age (saved before
          revision 0005) goes once a newer entry is old enough.

        Returns first_index - 1 when no bound is set or nothing may go. It deletes
        nothing (the node compacts, never past its snapshot)."""
        ...
