"""The `Ready` contract between the core and its driver (after etcd-io/raft)."""

from __future__ import annotations

from dataclasses import dataclass

from raftmq.core.messages import Message
from raftmq.core.types import Entry, HardState, LogRead, ReadState, Snapshot, SoftState


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the driver must do, in this order, before calling ``advance(ready)``:

    1. Persist, in ONE durable transaction: ``hard_state`` (if not None), then the
       ``snapshot`` (if not None: it replaces the whole log), then delete entries with
       index >= ``truncate_from`` (if not None), then append ``entries``.
    2. Only then send ``messages`` (persist before send).
    3. Restore the state machine from ``snapshot`` (if not None), then apply
       ``committed_entries`` in order (all are already durable, index <= commit).
    4. Serve ``reads`` from storage and step each result back with ``step_read``.
    5. Hand out ``read_states`` (answers to ``read_index``): a read waits until the state
       machine applied its index. They need nothing durable and may go at any point.
    """

    hard_state: HardState | None  # new hard state to persist, None when unchanged
    truncate_from: int | None  # drop the log suffix from this index before appending
    entries: tuple[Entry, ...]  # new entries to append, contiguous and ascending
    messages: tuple[Message, ...]  # to send after persisting
    committed_entries: tuple[Entry, ...]  # to apply, contiguous, starting at applied + 1
    reads: tuple[LogRead, ...]  # storage reads the core needs answered
    soft_state: SoftState | None  # role/leader/term after a change, None when unchanged
    # a snapshot received from the leader, to install (log replaced, state restored); the
    # committed entries then start at snapshot.index + 1
    snapshot: Snapshot | None = None
    read_states: tuple[ReadState, ...] = ()  # answers to read_index, confirmed or failed

    def is_empty(self) -> bool:
        """True when there is nothing to do."""
        return not (
            self.hard_state is not None
            or self.truncate_from is not None
            or self.entries
            or self.messages
            or self.committed_entries
            or self.reads
            or self.soft_state is not None
            or self.snapshot is not None
            or bool(self.read_states)
        )
