"""RaftCore: the sans-I/O Raft state machine (after etcd-io/raft).

Inputs are :meth:`RaftCore.tick`, :meth:`RaftCore.step`, proposals and storage
read results; the output is one :class:`Ready` at a time, acknowledged with
:meth:`RaftCore.advance`. Role behaviour lives in :mod:`raftmq.core.election`
(follower, pre-candidate, candidate) and :mod:`raftmq.core.replication` (leader);
``become_*`` swaps the step function like etcd's ``becomeX``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

from raftmq.core import applying, election, replication
from raftmq.core.config import RaftConfig
from raftmq.core.fast import new_entry, new_hard_state
from raftmq.core.log import RaftLog
from raftmq.core.messages import Message
from raftmq.core.progress import Progress
from raftmq.core.ready import Ready
from raftmq.core.types import (
    CoreStatus,
    Entry,
    EntryKind,
    InitialState,
    LogRead,
    LogReadResult,
    Role,
    SoftState,
)
from raftmq.errors import ConfigError, NotLeader

log = logging.getLogger("raftmq.core.raft")


class RaftCore:
    """One Raft node's state machine: pure, deterministic, no I/O.

    Invariants: applied <= commit <= last_index (commit may exceed the persisted log
    only on a leader inside one Ready); term and commit never decrease; voted_for is
    the vote of the current term.
    """

    __slots__ = (
        "_applied",
        "_apply_buf",
        "_apply_read",
        "_bcast_pending",
        "_cfg",
        "_commit",
        "_election_elapsed",
        "_heartbeat_elapsed",
        "_id",
        "_leader_id",
        "_log",
        "_msgs",
        "_others",
        "_pending_truncate",
        "_persisted_hs",
        "_progress",
        "_quorum",
        "_randomized_timeout",
        "_reads",
        "_reported_ss",
        "_rng",
        "_role",
        "_stable_last",
        "_step_role",
        "_term",
        "_transferee",
        "_trunc_since_ready",
        "_vote",
        "_votes",
    )

    def __init__(
        self, config: RaftConfig, initial: InitialState | None = None, *, seed: int | None = None
    ) -> None:
        self._cfg = config.validate()  # immutable configuration
        initial = initial if initial is not None else InitialState()
        # All randomness comes from here: same seed, same run.
        self._rng = random.Random(seed) if seed is not None else random.Random()
        self._id = config.node_id  # this node
        self._others = tuple(v for v in config.voters if v != config.node_id)  # peer voters
        self._quorum = len(config.voters) // 2 + 1  # votes/replicas for a majority
        hs = initial.hard_state
        self._term = hs.term  # current term; never decreases
        self._vote: str | None = hs.voted_for  # vote cast in _term
        self._log = RaftLog(initial)  # term runs + entry window
        self._applied = initial.applied  # highest index applied and advanced
        self._commit = max(hs.commit, initial.applied)  # commit index; never decreases
        if self._commit > self._log.last_index:
            raise ConfigError(f"commit {self._commit} beyond last index {self._log.last_index}")
        self._stable_last = self._log.last_index  # last index storage holds (after advances)
        self._pending_truncate: int | None = None  # storage must drop entries from here
        self._trunc_since_ready: int | None = None  # lowest truncation since the last ready()
        self._persisted_hs = (hs.term, hs.voted_for, hs.commit)  # hard state storage holds
        self._reported_ss = SoftState(Role.FOLLOWER, None, hs.term)  # last soft state handed out
        self._msgs: list[Message] = []  # to send; prefix removed by advance()
        self._reads: list[LogRead] = []  # storage reads to hand out; prefix removed by advance()
        self._apply_read: LogRead | None = None  # outstanding read of committed entries
        self._apply_buf: list[Entry] = []  # read-back entries applied+1.. not in the window
        self._role = Role.FOLLOWER  # current role
        self._leader_id: str | None = None  # leader of _term when known
        self._election_elapsed = 0  # ticks since last reset (leader: since last quorum check)
        self._heartbeat_elapsed = 0  # leader: ticks since last heartbeat
        self._randomized_timeout = config.election_ticks  # in [e, 2e), redrawn on each reset
        self._votes: dict[str, bool] = {}  # (pre-)candidate: answers received this round
        self._progress: dict[str, Progress] = {}  # leader: per peer voter
        self._transferee: str | None = None  # leader: leadership transfer target
        self._bcast_pending = False  # leader: new entries not yet offered to followers
        self._step_role: Callable[[RaftCore, Message], None] = election.step_follower
        self.become_follower(self._term, None)
        applying.request_missing(self)

    # ----------------------------------------------------------------- read-only state

    @property
    def id(self) -> str:
        """This node's id."""
        return self._id

    @property
    def role(self) -> Role:
        """Current role."""
        return self._role

    @property
    def term(self) -> int:
        """Current term."""
        return self._term

    @property
    def leader_id(self) -> str | None:
        """Known leader of the current term, or None."""
        return self._leader_id

    @property
    def voted_for(self) -> str | None:
        """Vote cast in the current term, or None."""
        return self._vote

    @property
    def commit_index(self) -> int:
        """Highest index known committed."""
        return self._commit

    @property
    def applied_index(self) -> int:
        """Highest index applied (handed out in a Ready and advanced)."""
        return self._applied

    @property
    def last_index(self) -> int:
        """Index of the last log entry (0 when empty)."""
        return self._log.last_index

    @property
    def first_index(self) -> int:
        """Index of the first log entry held."""
        return self._log.first_index

    @property
    def config(self) -> RaftConfig:
        """The configuration this core runs with."""
        return self._cfg

    def last_term(self) -> int:
        """Term of the last log entry (0 when empty)."""
        return self._log.last_term()

    def log_term(self, index: int) -> int:
        """Term of the entry at ``index`` (0 outside the log), from the term runs."""
        return self._log.term(index)

    def status(self) -> CoreStatus:
        """A read-only snapshot of this core."""
        progress = {peer: pr.view() for peer, pr in self._progress.items()}
        return CoreStatus(
            id=self._id,
            role=self._role,
            term=self._term,
            leader_id=self._leader_id,
            commit=self._commit,
            applied=self._applied,
            last_index=self._log.last_index,
            voters=self._cfg.voters,
            progress=progress,
        )

    # ----------------------------------------------------------------- inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self._role is Role.LEADER:
            replication.tick_leader(self)
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._randomized_timeout:
                self._election_elapsed = 0
                self.campaign()

    def step(self, msg: Message) -> None:
        """Process one message; stale, duplicated or misaddressed ones are harmless."""
        if msg.recipient != self._id or msg.sender == self._id:
            return
        if msg.sender not in self._others:
            log.debug("%s: dropping message from non-voter %s", self._id, msg.sender)
            return
        if msg.term > self._term:
            if not election.accept_higher_term(self, msg):
                return
        elif msg.term < self._term:
            election.answer_stale(self, msg)
            return
        self._step_role(self, msg)

    def propose(self, data: bytes) -> int:
        """Append one NORMAL entry (leader only) and return its index."""
        return self.propose_batch((data,))

    def propose_batch(self, items: Sequence[bytes]) -> int:
        """Append one NORMAL entry per item (leader only); return the first one's index."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader_id)
        if self._transferee is not None:
            raise NotLeader(self._transferee, "leadership transfer in progress")
        first = self._log.last_index + 1
        term = self._term
        normal = EntryKind.NORMAL
        entries = [new_entry(first + pos, term, normal, data) for pos, data in enumerate(items)]
        replication.append_as_leader(self, entries)
        return first

    def campaign(self) -> None:
        """Start an election now (a pre-vote round first when pre-vote is enabled)."""
        if self._role is Role.LEADER:
            return
        election.campaign(self, pre_vote=self._cfg.pre_vote, transfer=False)

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to ``to`` (§3.10): catch it up, then send TimeoutNow."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader_id)
        if to == self._id:
            return
        if to not in self._progress:
            raise ConfigError(f"{to!r} is not a voter")
        replication.start_transfer(self, to)

    def step_read(self, result: LogReadResult) -> None:
        """Take the driver's answer to a LogRead; a stale or useless answer is dropped."""
        read = result.read
        if read.peer is None:
            applying.step_apply_read(self, result)
        else:
            replication.step_peer_read(self, result)

    # ----------------------------------------------------------------- role changes

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._leader_id = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        e = self._cfg.election_ticks
        self._randomized_timeout = self._rng.randrange(e, 2 * e)
        self._votes = {}
        self._progress = {}
        self._transferee = None
        self._bcast_pending = False

    def become_follower(self, term: int, leader_id: str | None) -> None:
        """Follow ``leader_id`` (or nobody yet) in ``term``."""
        if self._role is not Role.FOLLOWER or term != self._term:
            log.debug("%s: follower in term %s (leader %s)", self._id, term, leader_id)
        self._reset(term)
        self._role = Role.FOLLOWER
        self._leader_id = leader_id
        self._step_role = election.step_follower

    def become_pre_candidate(self) -> None:
        """Ask for pre-votes for term + 1 without changing any state (thesis §9.6)."""
        self._role = Role.PRE_CANDIDATE
        self._leader_id = None
        e = self._cfg.election_ticks
        self._randomized_timeout = self._rng.randrange(e, 2 * e)
        self._votes = {}
        self._progress = {}
        self._step_role = election.step_candidate

    def become_candidate(self) -> None:
        """Start a real election: new term, vote for self (§5.2)."""
        self._reset(self._term + 1)
        self._vote = self._id
        self._role = Role.CANDIDATE
        self._step_role = election.step_candidate
        log.debug("%s: candidate in term %s", self._id, self._term)

    def become_leader(self) -> None:
        """Won the election: set up progress and append the no-op of this term (§5.4.2)."""
        self._reset(self._term)
        self._role = Role.LEADER
        self._leader_id = self._id
        self._step_role = replication.step_leader
        next_index = self._log.last_index + 1
        self._progress = {peer: Progress(next_index) for peer in self._others}
        log.info("%s: leader in term %s", self._id, self._term)
        noop = new_entry(next_index, self._term, EntryKind.NOOP, b"")
        replication.append_as_leader(self, [noop])

    # ----------------------------------------------------------------- helpers for roles

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    def _set_commit(self, index: int) -> None:
        if index > self._commit:
            self._commit = index
            applying.request_missing(self)

    def _truncate(self, index: int) -> None:
        """Drop the log suffix from ``index`` and remember what storage must drop."""
        self._log.truncate_from(index)
        if self._trunc_since_ready is None or index < self._trunc_since_ready:
            self._trunc_since_ready = index
        if index <= self._stable_last and (
            self._pending_truncate is None or index < self._pending_truncate
        ):
            self._pending_truncate = index

    # ----------------------------------------------------------------- output

    def _flush(self) -> None:
        if self._bcast_pending:
            self._bcast_pending = False
            replication.send_to_all(self)

    def _hard_state_changed(self) -> bool:
        return (self._term, self._vote, self._commit) != self._persisted_hs

    def _soft_state(self) -> SoftState:
        return SoftState(self._role, self._leader_id, self._term)

    def _unstable_from(self) -> int:
        if self._pending_truncate is not None:
            return self._pending_truncate
        return self._stable_last + 1

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return something to do."""
        self._flush()
        if self._msgs or self._reads or self._pending_truncate is not None:
            return True
        rlog = self._log
        last = rlog.last_index
        if self._stable_last < last or self._hard_state_changed():
            return True
        nxt = self._applied + 1
        if nxt <= self._commit and nxt <= last and (self._apply_buf or nxt >= rlog.window_start):
            return True
        ss = self._reported_ss
        return ss.role is not self._role or ss.leader_id != self._leader_id or ss.term != self._term

    def ready(self) -> Ready:
        """Everything pending since the last advance (calling twice returns the same work)."""
        self._flush()
        self._trunc_since_ready = None
        hard_state = None
        if self._hard_state_changed():
            hard_state = new_hard_state(self._term, self._vote, self._commit)
        start = self._unstable_from()
        last = self._log.last_index
        entries = tuple(self._log.slice(start, last)) if start <= last else ()
        soft = self._soft_state()
        return Ready(
            hard_state=hard_state,
            truncate_from=self._pending_truncate,
            entries=entries,
            messages=tuple(self._msgs),
            committed_entries=applying.committed_to_apply(self),
            reads=tuple(self._reads),
            soft_state=soft if soft != self._reported_ss else None,
        )

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied ``ready``; forget it."""
        if ready.hard_state is not None:
            hs = ready.hard_state
            self._persisted_hs = (hs.term, hs.voted_for, hs.commit)
        if ready.entries:
            stable = ready.entries[-1].index
        elif ready.truncate_from is not None:
            stable = ready.truncate_from - 1
        else:
            stable = self._stable_last
        trunc = self._trunc_since_ready
        self._pending_truncate = trunc if trunc is not None and trunc <= stable else None
        self._trunc_since_ready = None
        self._stable_last = stable
        if ready.messages:
            del self._msgs[: len(ready.messages)]
        if ready.reads:
            del self._reads[: len(ready.reads)]
        if ready.committed_entries:
            applying.mark_applied(self, ready.committed_entries)
        if ready.soft_state is not None:
            self._reported_ss = ready.soft_state
        applying.request_missing(self)
