"""The apply path of a node: committed entries in, on-commit callbacks, client session
decisions and write results out. It runs on the node's loop task (raftmq.node.node), which
calls :meth:`Applier.apply` once per batch of committed entries and saves the bookkeeping
it returns with its next save (the on-commit contract is in raftmq.node.node).

Per committed entry, in index order::

    a fan-out watermark entry raises fanout_watermark (see raftmq.node.sessions)
    a record is decided by the client sessions: a duplicate gets no callback
    the pending write at that index resolves: Commit, Commit(duplicate=True), or
        WriteRejected when the entry's term is not the term it was proposed in
    a new record goes to on_record, then to on_commit (validated against the model)

Applying never raises: callback exceptions and entries that do not decode are logged and
counted (``apply_errors``, ``apply_decode_errors``); bookkeeping an entry cannot go into is
left out, decided from the entry alone so that every node decides the same: a write whose
session key the sessions cannot hold (too long, not UTF-8, reserved, a seq outside int64)
is applied as a write without session (``apply_unsessioned``), a watermark entry carrying
an index that cannot be one is ignored (``apply_bad_watermarks``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic

from raftmq.core.types import Entry, EntryKind, HardState, InitialState, Snapshot
from raftmq.errors import MalformedMessage, WriteRejected
from raftmq.node.sessions import SessionTable, unusable_session
from raftmq.node.snapshots import NodeSnapshot
from raftmq.node.types import Applied, OnCommit, OnRecord, T
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import Record
from raftmq.protocol.watermark import decode_watermark
from raftmq.storage.port import PersistBatch, Storage

__all__ = ["RECEIPT_MEMORY_ON_START", "Applier", "RestoreHook", "SnapshotHook"]

SnapshotHook = Callable[[], bytes | Awaitable[bytes]]
"""The user's state machine as bytes, at the applied index (hashicorp's FSM.Snapshot)."""
RestoreHook = Callable[[bytes], Awaitable[None] | None]
"""Replace the user's state machine by the bytes a SnapshotHook gave (FSM.Restore)."""

logger = logging.getLogger("raftmq.node.applier")

RECEIPT_MEMORY_ON_START = 50_000  # applied writes re-read at start for duplicate receipts


class Applier(Generic[T]):
    """Applies a node's committed entries; owned and called by the node's loop task only
    (no lock: nothing else touches its state)."""

    def __init__(
        self,
        node_id: str,
        model: type[T],
        *,
        on_commit: OnCommit[T] | None,
        on_record: OnRecord | None,
        session_expiry_entries: int,
        max_session_gap: int,
        pending: dict[int, tuple[int, asyncio.Future[Commit]]],
        counters: dict[str, int],
        snapshot: SnapshotHook | None = None,
        restore: RestoreHook | None = None,
    ) -> None:
        self.node_id = node_id  # the node's id, for log lines
        self.model = model  # the type on_commit receives
        self.on_commit = on_commit  # called per new committed write, decoded
        self.on_record = on_record  # called per new committed write, raw
        self.snapshot_hook = snapshot  # the user's state as bytes (both hooks or neither)
        self.restore_hook = restore  # the user's state from those bytes
        # replicated client sessions
        self.sessions = SessionTable(session_expiry_entries, max_session_gap)
        self.fanout_watermark = 0  # highest index known published (persisted, replicated)
        self.applied = 0  # last index whose callbacks ran (the core learns it at advance)
        # the node's writes awaiting their entry, index -> (term, future); resolved here
        self._pending = pending
        self.counters = counters  # the node's counters: apply_errors, apply_decode_errors
        # this node's writes resolved at apply (committed; failed: leadership changed)
        counters.setdefault("proposals_committed", 0)
        counters.setdefault("proposals_failed", 0)
        # indexes a leader's snapshot covered whose callbacks never ran here (no hooks)
        counters.setdefault("callbacks_skipped", 0)

    async def restore(self, storage: Storage, initial: InitialState) -> None:
        """Load what was applied before (sessions, watermark, applied index) at start."""
        self.sessions.load(await storage.sessions())
        await self._remember_recent_writes(storage, initial.first_index, initial.applied)
        self.fanout_watermark = await storage.fanout_watermark()
        self.applied = initial.applied
        if self.restore_hook is not None:
            await self._rebuild_user_state(storage, initial)

    async def _rebuild_user_state(self, storage: Storage, initial: InitialState) -> None:
        """With hooks the user's state lives in memory: restore it from the stored snapshot,
        then call the callbacks again for the applied entries after it (duplicates and
        watermark entries skipped, as when they were first applied)."""
        lo = 1
        if initial.snapshot is not None:
            lo = initial.snapshot.index + 1
            await self._restore_user(NodeSnapshot.decode(initial.snapshot.data).user)
        while lo <= initial.applied:
            entries = await storage.entries(lo, initial.applied, 4 << 20)
            if not entries:
                break
            for entry in entries:
                if entry.kind is not EntryKind.NORMAL or decode_watermark(entry.data) is not None:
                    continue
                if self.sessions.is_duplicate(entry.index):
                    continue
                record = _decode(entry.data)
                if record is not None:
                    await self._call_callbacks(entry, record)
            lo = entries[-1].index + 1

    async def _restore_user(self, user: bytes | None) -> None:
        if self.restore_hook is None:
            return
        if user is None:
            logger.warning(
                "%s: the snapshot holds no user state (taken without hooks): restore skipped",
                self.node_id,
            )
            return
        result = self.restore_hook(user)
        if inspect.isawaitable(result):
            await result

    async def take_snapshot(self) -> bytes:
        """The bytes of the replicated state at :attr:`applied` (raftmq.node.snapshots):
        sessions, fan-out watermark, applied index, and the user's snapshot hook's bytes."""
        user: bytes | None = None
        if self.snapshot_hook is not None:
            result = self.snapshot_hook()
            user = await result if inspect.isawaitable(result) else result
            if not isinstance(user, bytes):
                raise TypeError(f"the snapshot hook returned {type(user).__name__}, not bytes")
        state = NodeSnapshot(
            applied=self.applied,
            fanout_watermark=self.fanout_watermark,
            sessions=tuple(self.sessions.rows(self.applied)),
            user=user,
        )
        return state.encode()

    def snapshot_bookkeeping(self, snapshot: Snapshot) -> PersistBatch:
        """What the database must hold after installing ``snapshot`` besides its log: the
        snapshot's sessions and watermark (saved in the install's transaction). Raises
        MalformedMessage for bytes that are not a node snapshot (nothing is saved)."""
        state = NodeSnapshot.decode(snapshot.data)
        cutoff = snapshot.index - self.sessions.expiry_entries
        return PersistBatch(
            fanout_watermark=max(self.fanout_watermark, state.fanout_watermark),
            sessions=state.sessions,
            expire_sessions_before=cutoff if cutoff > 0 else None,
        )

    async def install(self, snapshot: Snapshot) -> None:
        """Replace the replicated state by ``snapshot``'s (durable already): sessions,
        watermark, applied index; then the user's restore hook. Without hooks the user's
        callbacks never see the entries the snapshot covers. This node's writes waiting
        for an entry the snapshot covers fail (their outcome is unknown here)."""
        state = NodeSnapshot.decode(snapshot.data)
        skipped = snapshot.index - self.applied
        has_callbacks = self.on_commit is not None or self.on_record is not None
        if skipped > 0 and has_callbacks and (self.restore_hook is None or state.user is None):
            self.counters["callbacks_skipped"] = self.counters.get("callbacks_skipped", 0) + skipped
            logger.warning(
                "%s: the leader's snapshot covers indexes %s..%s: their commit callbacks are "
                "not called here (no snapshot/restore hooks to carry the state; give the "
                "Node hooks, or raise trailing_entries/retention above the longest downtime)",
                self.node_id,
                self.applied + 1,
                snapshot.index,
            )
        self.sessions.load(state.sessions)
        self.fanout_watermark = max(self.fanout_watermark, state.fanout_watermark)
        self.applied = max(self.applied, snapshot.index)
        for index in [i for i in self._pending if i <= snapshot.index]:
            _, future = self._pending.pop(index)
            if not future.done():
                self.counters["proposals_failed"] += 1
                future.set_exception(
                    WriteRejected(
                        f"index {index} was covered by a snapshot from the leader: the "
                        "write's outcome is unknown here (retry it with its producer seq)"
                    )
                )
        await self._restore_user(state.user)

    async def _remember_recent_writes(
        self, storage: Storage, first_index: int, applied: int
    ) -> None:
        """Re-learn where the last writes landed, so that a retry arriving after a restart
        gets a receipt naming its original index (the decision itself is in the sessions)."""
        lo = max(first_index, applied - RECEIPT_MEMORY_ON_START + 1)
        while lo <= applied:
            entries = await storage.entries(lo, applied, 4 << 20)
            if not entries:
                break
            for entry in entries:
                if entry.kind is EntryKind.NORMAL and decode_watermark(entry.data) is None:
                    record = _decode(entry.data)
                    if record is not None:
                        self.sessions.remember(record, entry.index, entry.term)
            lo = entries[-1].index + 1

    async def apply(self, entries: tuple[Entry, ...], hard: HardState | None) -> PersistBatch:
        """Apply committed ``entries`` (not empty, in index order); return their bookkeeping
        to save, with ``hard`` (a commit-only hard state the node defers with it)."""
        watermark = await self._apply(entries)
        applied = self.applied = entries[-1].index
        sessions, expire = self.sessions.take_changes(applied)
        return PersistBatch(
            hard_state=hard,
            applied=applied,
            fanout_watermark=watermark,
            sessions=sessions,
            expire_sessions_before=expire,
        )

    async def _apply(self, entries: tuple[Entry, ...]) -> int | None:
        """Apply committed entries in order; return a fan-out watermark to persist, if any.

        Client sessions decide duplicates here, deterministically on every node."""
        watermark: int | None = None
        for entry in entries:
            record: Record | None = None
            original = None
            if entry.kind is EntryKind.NORMAL:
                carried = decode_watermark(entry.data)
                if carried is not None:
                    if not 0 <= carried < entry.index:  # fan-out publishes before it says so
                        self._count_skip(entry, "apply_bad_watermarks", f"watermark {carried}")
                    elif carried > self.fanout_watermark:
                        self.fanout_watermark = watermark = carried
                else:
                    record = self._decode_record(entry)
                    if record is not None:
                        if unusable_session(record):
                            self._count_skip(entry, "apply_unsessioned", "unusable session key")
                        original = self.sessions.apply(record, entry.index, entry.term)
            pending = self._pending.pop(entry.index, None)
            if pending is not None:
                term, future = pending
                if future.done():
                    pass
                elif entry.term != term:
                    self.counters["proposals_failed"] += 1
                    future.set_exception(
                        WriteRejected(
                            f"leadership changed: index {entry.index} committed in "
                            f"term {entry.term}, the write was proposed in term {term}"
                        )
                    )
                elif original is not None:  # index/term 0: the original's place is unknown
                    self.counters["proposals_committed"] += 1
                    future.set_result(
                        Commit(original.index or 0, original.term or 0, duplicate=True)
                    )
                else:
                    self.counters["proposals_committed"] += 1
                    future.set_result(Commit(entry.index, entry.term))
            if record is not None and original is None:
                await self._call_callbacks(entry, record)
        return watermark

    def _decode_record(self, entry: Entry) -> Record | None:
        record = _decode(entry.data)
        if record is None:
            self.counters["apply_decode_errors"] += 1
            logger.error("%s: entry %s is not a record, not applied", self.node_id, entry.index)
        return record

    def _count_skip(self, entry: Entry, counter: str, what: str) -> None:
        """Count bookkeeping left out for ``entry`` (decided from the entry alone, so the
        same on every node)."""
        self.counters[counter] = self.counters.get(counter, 0) + 1
        logger.warning(
            "%s: entry %s: %s, applied without it (%s)", self.node_id, entry.index, what, counter
        )

    async def _call_callbacks(self, entry: Entry, record: Record) -> None:
        if self.on_record is not None:
            await self._guarded(entry.index, self.on_record, entry.index, entry.term, record)
        if self.on_commit is not None:
            try:
                value = self.model.model_validate_json(record.body)
            except Exception as exc:  # ValidationError, or anything a hostile body causes
                self.counters["apply_decode_errors"] += 1
                logger.error(
                    "%s: entry %s is not a valid %s, not applied: %s",
                    self.node_id,
                    entry.index,
                    self.model.__name__,
                    exc,
                )
                return
            await self._guarded(
                entry.index, self.on_commit, Applied(entry.index, entry.term, value, record)
            )

    async def _guarded(self, index: int, callback: Callable[..., Any], *args: Any) -> None:
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.counters["apply_errors"] += 1
            logger.exception("%s: commit callback failed at index %s", self.node_id, index)


def _decode(payload: bytes) -> Record | None:
    """The record in ``payload``, or None when it is not one (whatever the bytes: a
    deeply nested meta raises RecursionError, not MalformedMessage)."""
    try:
        return Record.decode(payload)
    except (MalformedMessage, ValueError, RecursionError):
        return None
