"""RaftState: one node's Raft state and the primitive transitions every role uses.

After etcd-io/raft's ``raft`` struct: the role modules (:mod:`~raftmq.core.votes`,
:mod:`~raftmq.core.election`, :mod:`~raftmq.core.replication`,
:mod:`~raftmq.core.applying`) are functions of a :class:`RaftState` and use only its
public attributes and methods; :class:`~raftmq.core.raft.RaftCore` wraps it as the
public facade. This module imports none of them, so that the dependency order inside
the core stays one-way.
"""

from __future__ import annotations

import logging
import random
from collections import deque

from raftmq.core.config import RaftConfig
from raftmq.core.log import RaftLog
from raftmq.core.messages import Message
from raftmq.core.progress import Progress
from raftmq.core.types import (
    MAX_TERM,
    ElectionCause,
    Entry,
    InitialState,
    LogRead,
    Membership,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)
from raftmq.errors import ConfigError

log = logging.getLogger("raftmq.core.raft")  # the name these messages always had

# Bound once: looking a member up on an Enum class costs more than a global load.
_FOLLOWER = Role.FOLLOWER
_PRE_CANDIDATE = Role.PRE_CANDIDATE
_CANDIDATE = Role.CANDIDATE
_LEADER = Role.LEADER


class RaftState:
    """Everything one Raft node knows, in public attributes (invariants beside each).

    Invariants: applied <= commit <= raft_log.last_index (commit may exceed the
    persisted log only on a leader inside one Ready); term and commit never decrease;
    vote is the vote of the current term; term <= MAX_TERM (a node never campaigns past
    it); snapshot.index <= applied and snapshot.index >= raft_log.first_index - 1 (the
    log holds everything after the snapshot). Only the methods below change role or term.
    """

    __slots__ = (
        "applied",
        "apply_buf",
        "apply_read",
        "bcast_pending",
        "cfg",
        "commit",
        "config_history",
        "departing",
        "election_elapsed",
        "elections_started",
        "heard",
        "heartbeat_elapsed",
        "id",
        "incarnation",
        "incoming",
        "incoming_key",
        "leader_id",
        "members",
        "msgs",
        "notice_elapsed",
        "others",
        "pending_snapshot",
        "pending_truncate",
        "persisted_hs",
        "pins",
        "progress",
        "quorum",
        "raft_log",
        "randomized_timeout",
        "read_forwarded",
        "read_pending",
        "read_seq",
        "read_states",
        "read_waiting",
        "reads",
        "reported_ss",
        "rng",
        "role",
        "seen",
        "snapshot",
        "stable_last",
        "strangers",
        "strangers_dropped",
        "term",
        "transfer_notice",
        "transferee",
        "trunc_since_ready",
        "vote",
        "voter_peers",
        "votes",
    )

    def __init__(
        self, config: RaftConfig, initial: InitialState | None = None, *, seed: int | None = None
    ) -> None:
        self.cfg = config.validate()  # immutable configuration
        initial = initial if initial is not None else InitialState()
        # All randomness comes from here: same seed, same run.
        self.rng = random.Random(seed) if seed is not None else random.Random()
        self.id = config.node_id  # this node
        # The configuration in force (raftmq.core.membership keeps these together): the
        # latest in the log, with the configuration entries that may still be truncated
        # ((index, membership), ascending; the first is the base: a snapshot's or the
        # seed's at 0), the other members, the other voters, and the majority size.
        self.members = Membership(tuple(sorted(config.voters)))
        self.config_history: list[tuple[int, Membership]] = [(0, self.members)]
        self.others = tuple(sorted(self.members.members - {config.node_id}))  # other members
        self.voter_peers = tuple(v for v in self.members.voters if v != config.node_id)
        self.quorum = len(config.voters) // 2 + 1  # votes/replicas for a majority
        # Incarnations (raftmq.core.membership): this node's database's id, the pins of
        # the configuration in force (member -> incarnation), on a leader the database
        # of each peer that acknowledged that configuration, the peers last heard from a
        # database other than their pin's, and how many of their messages were dropped.
        self.incarnation = initial.incarnation
        self.pins: dict[str, str] = {}
        self.seen: dict[str, str] = {}
        self.heard: dict[str, str] = {}  # the database each unpinned peer last spoke for
        self.strangers: dict[str, str] = {}
        self.strangers_dropped = 0
        hs = initial.hard_state
        self.term = hs.term  # current term; never decreases
        self.vote: str | None = hs.voted_for  # vote cast in term
        self.raft_log = RaftLog(initial)  # term runs + entry window
        # The latest snapshot taken or installed (what a leader sends a follower whose
        # next index is compacted away); None until the first one.
        self.snapshot: Snapshot | None = initial.snapshot
        snap_index = initial.snapshot.index if initial.snapshot is not None else 0
        if snap_index and (
            snap_index < self.raft_log.first_index - 1 or snap_index > initial.applied
        ):
            raise ConfigError(f"snapshot at {snap_index} outside the log or beyond applied")
        self.applied = initial.applied  # highest index applied and advanced
        self.commit = max(hs.commit, initial.applied)  # commit index; never decreases
        last = self.raft_log.last_index
        if self.commit > last:
            raise ConfigError(f"commit {self.commit} beyond last index {last}")
        # Follower: a received snapshot handed to the driver in the next Ready, to install.
        self.pending_snapshot: Snapshot | None = None
        # Follower: the transfer being received, named (sender, index, term, size), and
        # the bytes of it held in a row from offset 0 (volatile: a restart starts over).
        self.incoming_key: tuple[str, int, int, int] | None = None
        self.incoming = bytearray()
        self.stable_last = last  # last index storage holds (after advances)
        self.pending_truncate: int | None = None  # storage must drop entries from here
        self.trunc_since_ready: int | None = None  # lowest truncation since the last ready()
        self.persisted_hs = (hs.term, hs.voted_for, hs.commit)  # hard state storage holds
        self.reported_ss = SoftState(_FOLLOWER, None, hs.term)  # last soft state handed out
        self.msgs: list[Message] = []  # to send; prefix removed by advance()
        self.reads: list[LogRead] = []  # storage reads to hand out; prefix removed by advance()
        self.apply_read: LogRead | None = None  # outstanding read of committed entries
        self.apply_buf: list[Entry] = []  # read-back entries applied+1.. not in the window
        self.role = _FOLLOWER  # current role
        self.leader_id: str | None = None  # leader of term when known
        self.election_elapsed = 0  # ticks since last reset (leader: since last quorum check)
        self.heartbeat_elapsed = 0  # leader: ticks since last heartbeat
        self.randomized_timeout = config.election_ticks  # in [e, 2e), redrawn on each reset
        self.votes: dict[str, bool] = {}  # (pre-)candidate: answers received this round
        self.progress: dict[str, Progress] = {}  # leader: per peer (members, departing)
        # Leader: members a configuration removed, still sent the log (never counted)
        # until they hold that configuration committed, so they learn they were removed:
        # peer -> index of the configuration entry.
        self.departing: dict[str, int] = {}
        self.transferee: str | None = None  # leader: leadership transfer target
        # Follower: the transferee its leader of this term named in a TimeoutNow (that
        # node's transfer vote for term + 1 may pass the lease); None when there is none.
        self.transfer_notice: str | None = None
        self.notice_elapsed = 0  # follower: ticks since transfer_notice was set
        self.bcast_pending = False  # leader: new entries not yet offered to followers
        # Elections this core started, by cause (a pre-vote round and the election it
        # leads to count once); only ever incremented, volatile like the rest.
        self.elections_started = dict.fromkeys(ElectionCause, 0)
        # ReadIndex (raftmq.core.reads): the current read round (leader), reads waiting
        # for this term's first commit, reads waiting for their round's majority, and
        # answers for the next Ready. Reads are (request id, origin): origin None for
        # this node's own, else the follower that forwarded it; pending ones also carry
        # (read index, round).
        self.read_seq = 0
        self.read_waiting: list[tuple[int, str | None]] = []
        self.read_pending: deque[tuple[int, str | None, int, int]] = deque()
        self.read_states: list[ReadState] = []
        self.read_forwarded: set[int] = set()  # follower: reads asked of the leader

    # ----------------------------------------------------------------- role changes

    def reset(self, term: int) -> None:
        """Enter ``term`` (clearing the vote when it is a new one) with fresh timers.

        Draws a new randomized election timeout and forgets all per-role state.
        """
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader_id = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        e = self.cfg.election_ticks
        self.randomized_timeout = self.rng.randrange(e, 2 * e)
        self.votes = {}
        self.progress = {}
        self.departing = {}
        self.transferee = None
        self.transfer_notice = None
        self.notice_elapsed = 0
        self.bcast_pending = False
        self.fail_reads()
        self.read_seq = 0

    def fail_reads(self) -> None:
        """Every read of this node not answered yet fails (its leadership or its leader
        changes; raftmq.core.reads); followers' reads are dropped (they time out)."""
        own = [r for r, origin, _, _ in self.read_pending if origin is None]
        own += [r for r, origin in self.read_waiting if origin is None]
        own += sorted(self.read_forwarded)  # a follower's: its leader changed
        self.read_states.extend(ReadState(request_id, None) for request_id in own)
        self.read_pending.clear()
        self.read_waiting.clear()
        self.read_forwarded.clear()

    def become_follower(self, term: int, leader_id: str | None) -> None:
        """Follow ``leader_id`` (or nobody yet) in ``term``."""
        if self.role is not _FOLLOWER or term != self.term:
            log.debug("%s: follower in term %s (leader %s)", self.id, term, leader_id)
        self.reset(term)
        self.role = _FOLLOWER
        self.leader_id = leader_id

    def can_campaign(self) -> bool:
        """True while term + 1 stays within MAX_TERM (a term from outside is at most
        MAX_TERM, so only a forged or corrupt one can bring a node there)."""
        return self.term < MAX_TERM

    def become_pre_candidate(self) -> None:
        """Ask for pre-votes for term + 1 without changing any state (thesis §9.6)."""
        self.fail_reads()
        self.role = _PRE_CANDIDATE
        self.leader_id = None
        self.transfer_notice = None
        e = self.cfg.election_ticks
        self.randomized_timeout = self.rng.randrange(e, 2 * e)
        self.votes = {}
        self.progress = {}

    def become_candidate(self) -> None:
        """Start a real election: new term, vote for self (§5.2); refused at MAX_TERM."""
        if not self.can_campaign():
            log.error("%s: term %s is the highest there is; not campaigning", self.id, self.term)
            return
        self.reset(self.term + 1)
        self.vote = self.id
        self.role = _CANDIDATE
        log.debug("%s: candidate in term %s", self.id, self.term)

    def setup_leader(self) -> None:
        """Take the leader role and a fresh Progress per peer, probing from last + 1.

        Only the first half of becoming leader: the caller must append this term's
        no-op next (:func:`raftmq.core.replication.become_leader`, §5.4.2).
        """
        self.reset(self.term)
        self.role = _LEADER
        self.leader_id = self.id
        next_index = self.raft_log.last_index + 1
        self.progress = {peer: Progress(next_index) for peer in self.others}
        log.info("%s: leader in term %s", self.id, self.term)

    # ----------------------------------------------------------------- primitives

    def send(self, msg: Message) -> None:
        """Queue ``msg``; it leaves in the next Ready, after that Ready is persisted."""
        self.msgs.append(msg)

    def truncate(self, index: int) -> None:
        """Drop the log suffix from ``index`` and remember what storage must drop."""
        self.raft_log.truncate_from(index)
        if self.trunc_since_ready is None or index < self.trunc_since_ready:
            self.trunc_since_ready = index
        if index <= self.stable_last and (
            self.pending_truncate is None or index < self.pending_truncate
        ):
            self.pending_truncate = index

    # ----------------------------------------------------------------- what storage lacks

    def hard_state_changed(self) -> bool:
        """True when term, vote or commit differ from what storage holds."""
        return (self.term, self.vote, self.commit) != self.persisted_hs

    def soft_state(self) -> SoftState:
        """The current role, leader and term."""
        return SoftState(self.role, self.leader_id, self.term)

    def unstable_from(self) -> int:
        """First log index storage does not hold yet (or must rewrite)."""
        if self.pending_truncate is not None:
            return self.pending_truncate
        return self.stable_last + 1
