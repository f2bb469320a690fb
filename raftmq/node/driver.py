"""The one Ready order: which of a Ready's steps happen before the save and which after.

Sans-I/O, like the core: :class:`ReadyDriver` turns one :class:`~raftmq.core.ready.Ready`
into a short plan of steps -- :class:`Send`, :class:`Apply`, :class:`Persist`,
:class:`Advance` -- and keeps the two facts the order depends on from one Ready to the
next: the term and vote known durable, and the bookkeeping deferred to the next save.
The node loop (raftmq.node.loop) executes a plan with its storage, transport and applier;
the simulator (raftmq.testing.simulation) with its in-memory record, network and state
machine, so that the safety search tests the order that runs in production.

The rules, for one Ready::

    Send(AppendEntries)   first, when term and vote are durable and nothing is truncated
    Apply(committed)      before the save, when every committed entry precedes the new ones
    Persist(hard state + truncation + entries, the deferred bookkeeping in front)  ONE txn
    Send(the rest)        votes, replies, ... only once the save returned
    Apply(committed)      here otherwise
    Advance               advance the core, then serve the storage reads it asked for

A Ready that carries a snapshot to install (a follower far behind) runs in the strict order::

    PersistSnapshot       the snapshot replaces the log; hard state and entries after it; ONE txn
    Restore               the state machine restores from the snapshot's bytes
    Send(all)             the reply that says it is installed, and the rest
    Apply(committed)      entries after the snapshot
    Advance

A hard state that changes only the commit index (term and vote durable) is not saved on
its own: it rides with the bookkeeping of the entries applied in the same Ready (applied
index, sessions, watermark), which waits for the next save of entries or an idle flush.
Commit is volatile in Raft (Figure 2): losing it in a crash costs a re-apply, not safety.

A driver lives as long as the process that runs it: a crash loses it (and so the deferred
bookkeeping); a restart builds a new one from the durable hard state.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftmq.core.messages import AppendEntries, Message
from raftmq.core.ready import Ready
from raftmq.core.types import Entry, HardState, Snapshot
from raftmq.storage.port import PersistBatch

__all__ = [
    "Advance",
    "Apply",
    "Persist",
    "PersistSnapshot",
    "ReadyDriver",
    "Restore",
    "Send",
    "Step",
]


@dataclass(frozen=True, slots=True)
class Send:
    """Hand ``messages`` to the transport, in order."""

    messages: list[Message]  # not empty; a subset of the Ready's messages, in their order


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply ``entries`` in index order, then :meth:`ReadyDriver.defer` their bookkeeping
    with ``hard_state``."""

    entries: tuple[Entry, ...]  # the Ready's committed entries, not empty
    hard_state: HardState | None  # a commit-only hard state saved with them, or None


@dataclass(frozen=True, slots=True)
class Persist:
    """Save :meth:`ReadyDriver.to_save` of this step, durably, in one transaction."""

    batch: PersistBatch  # the Ready's own part: hard state, truncation, entries; not empty


@dataclass(frozen=True, slots=True)
class PersistSnapshot:
    """Install ``snapshot`` in storage -- it replaces the whole log, and the state machine's
    durable state with its bytes -- then save :meth:`ReadyDriver.to_save` of this step, in
    ONE durable transaction (a crash leaves the old log and state, or all of the new)."""

    snapshot: Snapshot  # from the leader; index > every index this node committed
    batch: PersistBatch  # hard state and the entries after the snapshot (may be empty)


@dataclass(frozen=True, slots=True)
class Restore:
    """Restore the state machine from ``snapshot`` (durable already); applying goes on at
    ``snapshot.index + 1``."""

    snapshot: Snapshot  # the one the previous PersistSnapshot saved


@dataclass(frozen=True, slots=True)
class Advance:
    """Call ``core.advance(ready)``, then serve the Ready's storage reads (``step_read``)."""


Step = Send | Apply | Persist | PersistSnapshot | Restore | Advance


class ReadyDriver:
    """Plans each Ready of one core incarnation (see the module docstring).

    The methods named after a rule (:meth:`sends_early`, :meth:`applies_first`,
    :meth:`defers_hard_state`) are the whole policy; a test can plant a bug in one of them
    (a subclass) and watch the safety search catch it.
    """

    def __init__(self, durable_vote: tuple[int, str | None]) -> None:
        self.durable_vote = durable_vote  # (term, voted_for) known saved
        # Bookkeeping not yet saved (applied index, sessions, watermark, a commit-only hard
        # state): it rides with the next save, or is flushed when the driver's owner idles.
        self.deferred: PersistBatch | None = None

    def plan(self, ready: Ready) -> list[Step]:
        """The steps that carry out ``ready``, in order; the last one is :class:`Advance`."""
        if ready.snapshot is not None:
            return self.plan_install(ready, ready.snapshot)
        hard = ready.hard_state
        votes_durable = hard is None or (hard.term, hard.voted_for) == self.durable_vote
        defer_hard = hard is not None and self.defers_hard_state(ready, votes_durable)
        early: list[Message] = []
        late: list[Message] = []
        for message in ready.messages:
            (early if self.sends_early(ready, message, votes_durable) else late).append(message)
        committed = ready.committed_entries
        apply = Apply(committed, hard if defer_hard else None) if committed else None
        apply_first = apply is not None and self.applies_first(ready)
        batch = PersistBatch(
            hard_state=None if defer_hard else hard,
            truncate_from=ready.truncate_from,
            entries=ready.entries,
        )
        steps: list[Step] = []
        if early:
            steps.append(Send(early))
        if apply is not None and apply_first:
            steps.append(apply)
        if not batch.is_empty():
            steps.append(Persist(batch))
        if late:
            steps.append(Send(late))
        if apply is not None and not apply_first:
            steps.append(apply)
        steps.append(Advance())
        return steps

    def plan_install(self, ready: Ready, snapshot: Snapshot) -> list[Step]:
        """A Ready with a snapshot to install: save it (with the hard state and any entries
        after it), restore the state machine, then send (the reply that says the snapshot
        is in place promises it is durable), then apply what follows it."""
        batch = PersistBatch(
            hard_state=ready.hard_state, truncate_from=ready.truncate_from, entries=ready.entries
        )
        steps: list[Step] = [PersistSnapshot(snapshot, batch), Restore(snapshot)]
        if ready.messages:
            steps.append(Send(list(ready.messages)))
        if ready.committed_entries:
            steps.append(Apply(ready.committed_entries, None))
        steps.append(Advance())
        return steps

    def sends_early(self, ready: Ready, message: Message, votes_durable: bool) -> bool:
        """Whether ``message`` may leave before the save: only AppendEntries, only while
        term and vote are durable and nothing is truncated.

        Thesis §10.2.1: the leader may write its log in parallel with replicating it. Safe
        because replies are stepped only after this save returned, so the leader never
        counts its own entries before they are durable. Everything else (votes, replies)
        depends on the save and waits for it (persist before send)."""
        return isinstance(message, AppendEntries) and votes_durable and ready.truncate_from is None

    def applies_first(self, ready: Ready) -> bool:
        """Whether the committed entries are applied before the save: when they all precede
        the Ready's new entries and nothing is truncated.

        Those entries are durable already (the leader steps no reply before its save
        returned; a follower's commit never covers entries it has not saved), so a commit
        does not wait for the save of newer entries, and its bookkeeping rides with it."""
        if ready.truncate_from is not None:
            return False
        return not ready.entries or ready.committed_entries[-1].index < ready.entries[0].index

    def defers_hard_state(self, ready: Ready, votes_durable: bool) -> bool:
        """Whether the Ready's hard state is deferred with the applied bookkeeping instead
        of saved now: when only its commit index changed and entries are applied with it.

        Term and vote must be durable before any message leaves; the commit index need
        not be (Figure 2 calls it volatile)."""
        return votes_durable and bool(ready.committed_entries)

    def defer(self, batch: PersistBatch) -> None:
        """Keep ``batch`` (bookkeeping, no log change) for the next save."""
        self.deferred = batch if self.deferred is None else self.deferred.followed_by(batch)

    def to_save(self, step: Persist | PersistSnapshot) -> PersistBatch:
        """The batch to save for ``step``: the deferred bookkeeping in front of it.

        The caller saves it before it asks anything else of this driver; a save that fails
        for good ends the driver with its owner (the loop fails, the simulated node
        crashes), so the term and vote are recorded as durable here."""
        batch = step.batch
        if self.deferred is not None:
            batch, self.deferred = self.deferred.followed_by(batch), None
        if batch.hard_state is not None:
            self.durable_vote = (batch.hard_state.term, batch.hard_state.voted_for)
        return batch

    def take_deferred(self) -> PersistBatch | None:
        """The deferred bookkeeping, handed over to be saved now (None when there is none)."""
        batch, self.deferred = self.deferred, None
        return batch
