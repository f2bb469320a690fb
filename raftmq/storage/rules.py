"""Checks every adapter applies before writing, so all of them refuse the same mistakes.

A refused batch raises :class:`~raftmq.errors.StorageError` and writes nothing.
"""

from __future__ import annotations

from raftmq.core.types import HardState
from raftmq.errors import StorageError
from raftmq.storage.port import PersistBatch, Snapshot


def check_batch(
    batch: PersistBatch, hard: HardState, snap_index: int, first: int, last: int
) -> tuple[int, int]:
    """Validate ``batch`` against the stored state; return the log bounds after it.

    Refused: a term going backwards; truncating compacted entries; entries that do not
    continue the log (after the truncation) or are not contiguous and ascending.
    """
    if batch.hard_state is not None and batch.hard_state.term < hard.term:
        raise StorageError(
            f"hard state term would go backwards ({hard.term} -> {batch.hard_state.term})"
        )
    if batch.truncate_from is not None:
        if batch.truncate_from <= snap_index:
            raise StorageError(
                f"cannot truncate from {batch.truncate_from}: entries up to {snap_index} "
                "are compacted into the snapshot"
            )
        last = min(last, batch.truncate_from - 1)
    expected = last + 1
    for entry in batch.entries:
        if entry.index != expected:
            raise StorageError(
                f"entry {entry.index} does not continue the log (expected index {expected})"
            )
        expected += 1
    if batch.entries:
        last = batch.entries[-1].index
    return first, last


def check_snapshot(snapshot: Snapshot, snap_index: int) -> bool:
    """True when ``snapshot`` is newer than the stored one (an older one is ignored)."""
    if snapshot.index < 1 or snapshot.term < 1:
        raise StorageError(f"invalid snapshot at index {snapshot.index}, term {snapshot.term}")
    return snapshot.index > snap_index
