"""Raft's safety properties (§5.2-§5.4, Figure 3), checked incrementally.

:class:`SafetyChecker` is fed what a driver sees — roles, persisted log changes,
persisted commit indexes, applied entries — and raises a :class:`SafetyViolation`
(an ``AssertionError``) the moment one of these breaks:

* election safety: at most one leader per term, ever;
* log matching: two logs holding an entry with the same index and term hold the
  same entry there and identical prefixes before it (checked inductively: an
  (index, term) pair always names the same payload and the same previous term);
* leader completeness: an entry known committed in term t is in the log of every
  leader of a term > t;
* state machine safety: no two nodes apply different entries at one index, no
  node applies an index twice or out of order, and only committed entries apply;
* monotonic commit: a live node's commit index never decreases, a persisted commit
  never decreases across restarts, and a committed entry is never truncated;
* snapshots: a snapshot (taken or installed) never covers an uncommitted entry, and its
  state equals the state from replaying the committed log up to its index (given a
  ``replay`` function); a node that restores one applies on from its index.

A log whose prefix is compacted is passed as the entries it still holds plus ``base``,
the (index, term) just before them (``(0, 0)`` for a whole log).

Every check is incremental (each entry is examined a bounded number of times), so
the checker can run after every simulation step. It is independent of
:class:`~raftmq.testing.Simulation` and can be fed by any driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from raftmq.core.types import Entry

Replay = Callable[[Sequence[Entry]], bytes]
"""The state a state machine reaches by applying the given entries (index 1 first), as the
bytes of its snapshot."""


class SafetyViolation(AssertionError):
    """A Raft safety property was violated; the message says which and where."""


class ElectionSafetyViolation(SafetyViolation):
    """Two leaders in one term (§5.2)."""


class LogMatchingViolation(SafetyViolation):
    """Two logs agree on an (index, term) but not on the entry or its prefix (§5.3)."""


class LeaderCompletenessViolation(SafetyViolation):
    """A leader lacks an entry committed in an earlier term (§5.4)."""


class StateMachineSafetyViolation(SafetyViolation):
    """Different entries applied at one index, or an index applied twice (§5.4.3)."""


class CommitRegressionViolation(SafetyViolation):
    """A commit index went backwards, or a committed entry was truncated."""


class SnapshotViolation(SafetyViolation):
    """A snapshot covers an uncommitted entry, or its state is not the log's (§7)."""


def _describe(entry: Entry) -> str:
    data = entry.data if len(entry.data) <= 24 else entry.data[:24] + b"..."
    return f"(index={entry.index}, term={entry.term}, kind={entry.kind.name}, data={data!r})"


def _same(a: Entry, b: Entry) -> bool:
    return a.term == b.term and a.kind == b.kind and a.data == b.data


class SafetyChecker:
    """Incremental checker of Raft's safety properties across a cluster's history."""

    def __init__(self, replay: Replay | None = None) -> None:
        self.replay = replay  # the state a snapshot must hold; None: states are not compared
        self.leaders: dict[int, str] = {}  # term -> the one node seen leading it
        self._entry_ids: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        # ^ (index, term) -> (kind, data, term at index - 1): one value per pair, ever
        self.committed: list[Entry] = []  # committed[i - 1] is the entry committed at i
        self._commit_by_term: dict[int, int] = {}  # term -> highest commit known in that term
        self._node_commit_checked: dict[str, int] = {}  # node -> prefix verified vs committed
        self._persisted_commit: dict[str, int] = {}  # node -> highest persisted commit
        self._live_commit: dict[str, int] = {}  # node -> commit of its current incarnation
        self._applied: dict[str, int] = {}  # node -> last index it applied
        self._leader_checked: dict[tuple[str, int], int] = {}  # (leader, term) -> prefix checked

    # -- election safety -------------------------------------------------------------
    def observe_leader(self, node_id: str, term: int) -> None:
        """``node_id`` is leader in ``term``: no other node may ever lead that term."""
        other = self.leaders.setdefault(term, node_id)
        if other != node_id:
            raise ElectionSafetyViolation(
                f"election safety: both {other!r} and {node_id!r} were leader in term {term}"
            )

    # -- log matching, no committed truncation -----------------------------------------
    def observe_log_change(
        self,
        node_id: str,
        log: Sequence[Entry],
        truncate_from: int | None,
        appended: int,
        base: tuple[int, int] = (0, 0),
    ) -> None:
        """``log`` is ``node_id``'s persisted log (index i at ``log[i - base[0] - 1]``) after it
        dropped the suffix from ``truncate_from`` (if any) and appended its last ``appended``
        entries; ``base`` is the (index, term) before ``log[0]`` (a snapshot's)."""
        commit = self._persisted_commit.get(node_id, 0)
        if truncate_from is not None and truncate_from <= commit:
            raise CommitRegressionViolation(
                f"node {node_id!r} truncated its log from {truncate_from} "
                f"but index {commit} was already committed"
            )
        ids = self._entry_ids
        start = len(log) - appended
        offset = base[0] + 1
        for pos in range(start, len(log)):
            entry = log[pos]
            if entry.index != pos + offset:
                raise LogMatchingViolation(
                    f"node {node_id!r} stored {_describe(entry)} at position {pos + offset}: "
                    "appended entries are not contiguous"
                )
            prev_term = log[pos - 1].term if pos else base[1]
            if entry.term < prev_term:
                raise LogMatchingViolation(
                    f"node {node_id!r} log terms decrease at {_describe(entry)} "
                    f"(previous term {prev_term})"
                )
            key = (entry.index, entry.term)
            ident = (int(entry.kind), entry.data, prev_term)
            known = ids.setdefault(key, ident)
            if known != ident:
                raise LogMatchingViolation(
                    f"log matching: node {node_id!r} holds {_describe(entry)} after term "
                    f"{prev_term}, but another log held (kind={known[0]}, data={known[1]!r}) "
                    f"after term {known[2]} at the same index and term"
                )

    # -- commit: monotonic, committed prefix agreed, leader completeness ---------------
    def observe_commit(
        self,
        node_id: str,
        term: int,
        commit: int,
        log: Sequence[Entry],
        *,
        persisted: bool = True,
        base: tuple[int, int] = (0, 0),
    ) -> None:
        """``node_id`` persisted ``commit`` while in ``term``; ``log`` is its persisted log.

        With ``persisted=False`` the commit index is only held in memory (a driver applies
        entries before it saves the commit that covers them: commit is volatile, Figure 2):
        it must still be within the durable log and agree with what is known committed,
        but a restart may start below it. Indexes up to ``base[0]`` are a snapshot's, checked
        when it was taken or installed."""
        if persisted:
            before = self._persisted_commit.get(node_id, 0)
            if commit < before:
                raise CommitRegressionViolation(
                    f"node {node_id!r} persisted commit {commit} after having persisted {before}"
                )
            self._persisted_commit[node_id] = commit
        first = base[0] + 1
        last = base[0] + len(log)
        if commit > last:
            raise CommitRegressionViolation(
                f"node {node_id!r} committed index {commit} but its durable log ends at {last}"
            )
        if commit > self._commit_by_term.get(term, 0):
            self._commit_by_term[term] = commit
        checked = self._node_commit_checked.get(node_id, 0)
        committed = self.committed
        if checked < base[0]:
            self._check_boundary(node_id, base)
        for index in range(max(checked + 1, first), commit + 1):
            entry = log[index - first]
            if index <= len(committed):
                if not _same(committed[index - 1], entry):
                    raise StateMachineSafetyViolation(
                        f"node {node_id!r} commits {_describe(entry)} but "
                        f"{_describe(committed[index - 1])} was committed at that index"
                    )
            else:
                committed.append(entry)
        if commit > checked:
            self._node_commit_checked[node_id] = commit

    def observe_live_commit(self, node_id: str, commit: int) -> None:
        """The running incarnation of ``node_id`` reports ``commit``; it must never decrease."""
        before = self._live_commit.get(node_id, 0)
        if commit < before:
            raise CommitRegressionViolation(
                f"node {node_id!r} commit index went back from {before} to {commit}"
            )
        self._live_commit[node_id] = commit

    def observe_crash(self, node_id: str, resume_applied: int | None = None) -> None:
        """``node_id`` lost its volatile state; its next incarnation starts a new commit
        history. ``resume_applied``: the saved applied index its state machine restarts
        from (what was applied after it is applied again), None when nothing was lost."""
        self._live_commit.pop(node_id, None)
        if resume_applied is not None:
            self._applied[node_id] = resume_applied
        self._leader_checked = {k: v for k, v in self._leader_checked.items() if k[0] != node_id}

    def observe_wipe(self, node_id: str) -> None:
        """``node_id`` lost its database (a replaced disk): it starts over from an empty
        log and commit 0 under another incarnation. What it held stops counting for it;
        every property still holds for what the cluster committed."""
        self.observe_crash(node_id, resume_applied=0)
        self._persisted_commit.pop(node_id, None)
        self._node_commit_checked.pop(node_id, None)

    def check_leader(
        self, node_id: str, term: int, log: Sequence[Entry], base: tuple[int, int] = (0, 0)
    ) -> None:
        """Leader completeness: ``node_id``, leader of ``term``, must hold (in its persisted
        ``log``, after its snapshot ending at ``base``) every entry known committed in an
        earlier term."""
        required = 0
        for commit_term, commit in self._commit_by_term.items():
            if commit_term < term and commit > required:
                required = commit
        key = (node_id, term)
        done = self._leader_checked.get(key, 0)
        if required <= done:
            return
        committed = self.committed
        first = base[0] + 1
        if done < base[0]:
            self._check_boundary(node_id, base)
        for index in range(max(done + 1, first), required + 1):
            want = committed[index - 1]
            pos = index - first
            if pos >= len(log) or not _same(log[pos], want):
                have = _describe(log[pos]) if pos < len(log) else "nothing"
                raise LeaderCompletenessViolation(
                    f"leader completeness: {node_id!r} leads term {term} holding {have} at "
                    f"index {index}, but {_describe(want)} was committed in an earlier term"
                )
        self._leader_checked[key] = required

    # -- snapshots ----------------------------------------------------------------------
    def _check_boundary(self, node_id: str, base: tuple[int, int]) -> None:
        """The (index, term) a node's log starts after is a committed entry: by log matching
        its whole prefix is the committed one."""
        index, term = base
        committed = self.committed
        if index > len(committed) or committed[index - 1].term != term:
            known = _describe(committed[index - 1]) if index <= len(committed) else "nothing"
            raise SnapshotViolation(
                f"node {node_id!r} compacted its log up to (index={index}, term={term}), "
                f"but the committed entry there is {known}"
            )

    def observe_snapshot(self, node_id: str, index: int, term: int, data: bytes) -> None:
        """``node_id`` took or installed a snapshot of the state at ``index`` (``term``): it
        covers only committed entries, and ``data`` is the state replaying them gives."""
        committed = self.committed
        if index > len(committed) or committed[index - 1].term != term:
            known = _describe(committed[index - 1]) if index <= len(committed) else "nothing"
            raise SnapshotViolation(
                f"node {node_id!r} holds a snapshot at (index={index}, term={term}) covering "
                f"entries not committed: the committed entry there is {known}"
            )
        if self.replay is not None and self.replay(committed[:index]) != data:
            raise SnapshotViolation(
                f"node {node_id!r}: its snapshot at {index} is not the state the committed "
                "log up to it replays to"
            )

    def observe_restore(self, node_id: str, index: int, term: int, state: bytes) -> None:
        """``node_id``'s state machine was restored from a snapshot at ``index`` and now holds
        ``state``: that must be the committed log's state there; it applies on from
        index + 1."""
        self.observe_snapshot(node_id, index, term, state)
        self._applied[node_id] = index

    # -- state machine safety -----------------------------------------------------------
    def observe_apply(self, node_id: str, entry: Entry) -> None:
        """``node_id`` applied ``entry``: in order, once, and only what was committed there."""
        last = self._applied.get(node_id, 0)
        if entry.index != last + 1:
            raise StateMachineSafetyViolation(
                f"node {node_id!r} applied {_describe(entry)} right after index {last} "
                "(indexes must be applied once each, in order)"
            )
        committed = self.committed
        if entry.index > len(committed) or not _same(committed[entry.index - 1], entry):
            known = (
                _describe(committed[entry.index - 1])
                if entry.index <= len(committed)
                else "nothing known committed"
            )
            raise StateMachineSafetyViolation(
                f"state machine safety: node {node_id!r} applied {_describe(entry)} "
                f"but the committed entry at that index is {known}"
            )
        self._applied[node_id] = entry.index


class LivenessViolation(AssertionError):
    """No leader within the bound after the faults were lifted (a liveness failure, not a
    safety one: Raft promises a leader only once a majority can talk, §5.2, §9)."""


class LivenessChecker:
    """Liveness after faults: once :meth:`arm` is called (every fault lifted, the
    adversary silent, a majority up and connected), some node must lead within
    ``bound`` ticks. Fed by any driver through :meth:`observe`.
    """

    def __init__(self, bound: int) -> None:
        if bound <= 0:
            raise ValueError(f"bound must be positive, got {bound!r}")
        self.bound = bound  # ticks allowed from arm() to a leader
        self.armed_at: int | None = None  # tick of the last arm(), None while faults last
        self.elected_after: int | None = None  # ticks it took, once a leader was seen

    def arm(self, now: int) -> None:
        """Faults are lifted at tick ``now``: the clock for a leader starts."""
        self.armed_at = now
        self.elected_after = None

    def disarm(self) -> None:
        """Faults are back: no promise until the next :meth:`arm`."""
        self.armed_at = None

    def observe(self, now: int, leader: str | None) -> None:
        """At tick ``now`` the connected leader is ``leader`` (None when there is none)."""
        if self.armed_at is None or self.elected_after is not None:
            return
        if leader is not None:
            self.elected_after = now - self.armed_at
        elif now - self.armed_at > self.bound:
            raise LivenessViolation(
                f"no leader {now - self.armed_at} ticks after every fault was lifted "
                f"(bound {self.bound})"
            )
