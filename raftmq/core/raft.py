"""RaftCore: the sans-I/O Raft state machine (after etcd-io/raft).

Inputs are :meth:`RaftCore.tick`, :meth:`RaftCore.step`, proposals and storage
read results; the output is one :class:`Ready` at a time, acknowledged with
:meth:`RaftCore.advance`. The state lives in a :class:`~raftmq.core.state.RaftState`;
role behaviour lives in :mod:`raftmq.core.votes` (rules every role follows),
:mod:`raftmq.core.election` (follower, pre-candidate, candidate) and
:mod:`raftmq.core.replication` (leader), and :meth:`RaftCore.step` dispatches on the
role like etcd's ``step`` function pointer.

Dependency order inside the core (each module imports only modules before it)::

    types, messages, config, log, progress, fast, ready
      -> state -> applying -> votes -> snapshots -> replication -> election -> raft
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from raftmq.core import applying, election, membership, reads, replication, snapshots, votes
from raftmq.core.config import RaftConfig
from raftmq.core.fast import new_entry, new_hard_state
from raftmq.core.membership import ChangeKind, ConfChange
from raftmq.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshotReply,
    Message,
    RequestVote,
    RequestVoteReply,
)
from raftmq.core.ready import Ready
from raftmq.core.state import RaftState
from raftmq.core.types import (
    MAX_TERM,
    CoreStatus,
    ElectionCause,
    EntryKind,
    InitialState,
    LogReadResult,
    Membership,
    Role,
    Snapshot,
)
from raftmq.errors import ConfigError, ConfigPending, NotLeader

log = logging.getLogger("raftmq.core.raft")

# Bound once: step() and tick() compare the role on every call, and looking a member
# up on an Enum class costs several times a global load.
_FOLLOWER = Role.FOLLOWER
_LEADER = Role.LEADER
_NORMAL = EntryKind.NORMAL
# The messages that speak for a database (raftmq.core.membership, "Incarnations").
_TOLD = (AppendEntriesReply, RequestVote, RequestVoteReply, InstallSnapshotReply)


class RaftCore:
    """One Raft node's state machine: pure, deterministic, no I/O.

    Invariants: applied <= commit <= last_index, and a leader's commit never exceeds
    what its own storage holds unless a majority of the other voters holds it; term and
    commit never decrease; voted_for is the vote of the current term.
    """

    __slots__ = ("_state",)

    def __init__(
        self, config: RaftConfig, initial: InitialState | None = None, *, seed: int | None = None
    ) -> None:
        s = RaftState(config, initial, seed=seed)
        self._state = s  # everything this node knows; the role modules work on it
        snapshot = s.snapshot
        if snapshot is None:
            base, base_index = s.members, 0  # the seed: RaftConfig.voters
        else:
            base = membership.membership(snapshot.voters, snapshot.learners, snapshot.incarnations)
            base_index = snapshot.index
        entries = initial.config_entries if initial is not None else ()
        membership.start(s, base, base_index, entries)
        s.become_follower(s.term, None)
        applying.request_missing(s)

    # ----------------------------------------------------------------- read-only state

    @property
    def id(self) -> str:
        """This node's id."""
        return self._state.id

    @property
    def role(self) -> Role:
        """Current role."""
        return self._state.role

    @property
    def term(self) -> int:
        """Current term."""
        return self._state.term

    @property
    def leader_id(self) -> str | None:
        """Known leader of the current term, or None."""
        return self._state.leader_id

    @property
    def voted_for(self) -> str | None:
        """Vote cast in the current term, or None."""
        return self._state.vote

    @property
    def commit_index(self) -> int:
        """Highest index known committed."""
        return self._state.commit

    @property
    def applied_index(self) -> int:
        """Highest index applied (handed out in a Ready and advanced)."""
        return self._state.applied

    @property
    def last_index(self) -> int:
        """Index of the last log entry (0 when empty)."""
        return self._state.raft_log.last_index

    @property
    def first_index(self) -> int:
        """Index of the first log entry held."""
        return self._state.raft_log.first_index

    @property
    def membership(self) -> Membership:
        """The configuration in force: the latest in the log, committed or not."""
        return self._state.members

    @property
    def config_index(self) -> int:
        """Index of the configuration entry in force (0: the seed; a snapshot's index
        when it came with one)."""
        return self._state.config_history[-1][0]

    @property
    def config_pending(self) -> bool:
        """True while a configuration entry of the log is not committed."""
        return membership.pending(self._state)

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot taken or installed (None before the first)."""
        return self._state.snapshot

    @property
    def config(self) -> RaftConfig:
        """The configuration this core runs with."""
        return self._state.cfg

    def last_term(self) -> int:
        """Term of the last log entry (0 when empty)."""
        return self._state.raft_log.last_term()

    def log_term(self, index: int) -> int:
        """Term of the entry at ``index`` (0 outside the log), from the term runs."""
        return self._state.raft_log.term(index)

    @property
    def elections_started(self) -> dict[ElectionCause, int]:
        """Elections this core started since it was made, by cause (a pre-vote round and
        the election it leads to count once; :meth:`campaign` calls are not counted)."""
        return dict(self._state.elections_started)

    @property
    def strangers_dropped(self) -> int:
        """Messages dropped because they came from a database that is not the sender's
        pinned one (raftmq.core.membership, "Incarnations")."""
        return self._state.strangers_dropped

    def most_caught_up_peer(self, exclude: Collection[str] = ()) -> str | None:
        """The leader's choice of whom to hand leadership to (thesis §3.10): the other
        voter with the highest match index, the lowest id among equals, leaving out
        ``exclude`` (earlier targets that did not take over) and members answering from
        another database than their own. None when this node does
        not lead or no other voter is left."""
        s = self._state
        if s.role is not _LEADER:
            return None
        candidates = [
            (-pr.match, peer)
            for peer, pr in s.progress.items()
            if peer not in exclude and peer in s.voter_peers and peer not in s.strangers
        ]
        return min(candidates)[1] if candidates else None

    def keepalives(self) -> list[AppendEntries]:
        """Heartbeats for every replicating follower, built without changing anything
        (no Ready, no progress), so a leader may send them while a Ready is still being
        handled, e.g. during a slow save; each is the heartbeat the next tick would send.
        Empty unless this node leads."""
        return replication.keepalives(self._state)

    def status(self) -> CoreStatus:
        """A read-only snapshot of this core."""
        s = self._state
        progress = {peer: pr.view() for peer, pr in s.progress.items()}
        return CoreStatus(
            id=s.id,
            role=s.role,
            term=s.term,
            leader_id=s.leader_id,
            commit=s.commit,
            applied=s.applied,
            last_index=s.raft_log.last_index,
            voters=s.members.voters,
            progress=progress,
            learners=s.members.learners,
            incarnation=s.incarnation,
            strangers=tuple(sorted(s.strangers.items()))
            + (() if membership.own_database_pinned(s) else ((s.id, s.incarnation),)),
        )

    # ----------------------------------------------------------------- inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        s = self._state
        if s.role is _LEADER:
            replication.tick_leader(s)
        else:
            election.tick(s)

    def step(self, msg: Message) -> None:
        """Process one message; stale, duplicated or misaddressed ones are harmless."""
        s = self._state
        if msg.recipient != s.id or msg.sender == s.id:
            return
        # No sender is refused for being outside our configuration: our configuration may
        # be behind (or ahead, uncommitted) of the leader's, and Raft needs us to follow
        # the leader of the highest term anyway (thesis §4.2). Only voters' answers count
        # (raftmq.core.membership), and the lease keeps removed servers from disrupting.
        if msg.term > MAX_TERM:
            return  # validation stops these; a term past it could never be incremented
        if type(msg) in _TOLD and not membership.admits(s, msg.sender, msg.incarnation):  # type: ignore[union-attr]
            return  # from a database that is not that member's: moves nothing
        if msg.term > s.term:
            if not votes.accept_higher_term(s, msg):
                return
        elif msg.term < s.term:
            votes.answer_stale(s, msg)
            return
        role = s.role
        if role is _LEADER:
            replication.step_leader(s, msg)
        elif role is _FOLLOWER:
            election.step_follower(s, msg)
        else:
            election.step_candidate(s, msg)

    def propose(self, data: bytes) -> int:
        """Append one NORMAL entry (leader only) and return its index."""
        return self.propose_batch((data,))

    def propose_batch(self, items: Sequence[bytes]) -> int:
        """Append one NORMAL entry per item (leader only); return the first one's index."""
        s = self._state
        if s.role is not _LEADER:
            raise NotLeader(s.leader_id)
        if s.transferee is not None:
            raise NotLeader(s.transferee, "leadership transfer in progress")
        first = s.raft_log.last_index + 1
        term = s.term
        normal = _NORMAL
        entries = [new_entry(first + pos, term, normal, data) for pos, data in enumerate(items)]
        replication.append_as_leader(s, entries)
        return first

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a configuration entry that makes ``change`` (leader only; in force at
        once, raftmq.core.membership) and return its index. ConfigError while another
        change is not committed, before an entry of this term is committed (thesis §4.1:
        ask again shortly), or when the change does not apply; NotLeader otherwise."""
        s = self._state
        if s.role is not _LEADER:
            raise NotLeader(s.leader_id)
        if s.transferee is not None:
            raise NotLeader(s.transferee, "leadership transfer in progress")
        if membership.pending(s):
            raise ConfigPending("a configuration change is not committed yet")
        if s.raft_log.term(s.commit) != s.term:
            raise ConfigPending("no entry of this leader's term is committed yet; ask again")
        if change.kind is ChangeKind.REPLACE:
            if change.node_id == s.id:
                raise ConfigError(f"{s.id} leads with its own database: nothing to replace")
            if change.incarnation is None:
                # The database it answers from now, when that is not its pin's.
                change = ConfChange(change.kind, change.node_id, s.strangers.get(change.node_id))
        return replication.append_config(s, change.applied_to(s.members))

    def campaign(self) -> None:
        """Start an election now (a pre-vote round first when pre-vote is enabled)."""
        s = self._state
        if s.role is _LEADER:
            return
        election.campaign(s, pre_vote=s.cfg.pre_vote, transfer=False)

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to ``to`` (§3.10): catch it up, then send TimeoutNow."""
        s = self._state
        if s.role is not _LEADER:
            raise NotLeader(s.leader_id)
        if to == s.id:
            return
        if to not in s.voter_peers or to not in s.progress:
            raise ConfigError(f"{to!r} is not a voter")
        if to in s.strangers:
            raise ConfigError(f"{to!r} answers from another database than its own: not a voter")
        replication.start_transfer(s, to)

    def take_snapshot(self, index: int, data: bytes) -> Snapshot:
        """The host took a snapshot of its state machine at ``index`` (<= applied_index):
        keep it (a leader sends it to followers that need compacted entries) and compact
        the log up to ``index - trailing_entries``. The host must then make the snapshot
        durable and delete the entries before :attr:`first_index` from storage. An index
        not past the current snapshot changes nothing and returns the current one."""
        return snapshots.take_snapshot(self._state, index, data)

    def read_index(self, request_id: int) -> None:
        """Ask for a linearizable read (thesis §6.4, raftmq.core.reads): a later Ready's
        ``read_states`` answers ``request_id`` with the index the state machine must have
        applied before serving it, or with None when leadership was lost first. Raises
        NotLeader (with the leader hint) when this node does not lead."""
        reads.request(self._state, request_id)

    def forget_read(self, request_id: int) -> None:
        """The host gave up on read ``request_id`` (timed out): a follower stops waiting
        for the leader's answer to it."""
        self._state.read_forwarded.discard(request_id)

    def step_read(self, result: LogReadResult) -> None:
        """Take the driver's answer to a LogRead; a stale or useless answer is dropped."""
        if result.read.peer is None:
            applying.step_apply_read(self._state, result)
        else:
            replication.step_peer_read(self._state, result)

    # ----------------------------------------------------------------- role changes

    def become_follower(self, term: int, leader_id: str | None) -> None:
        """Follow ``leader_id`` (or nobody yet) in ``term``."""
        self._state.become_follower(term, leader_id)

    def become_pre_candidate(self) -> None:
        """Ask for pre-votes for term + 1 without changing any state (thesis §9.6)."""
        self._state.become_pre_candidate()

    def become_candidate(self) -> None:
        """Start a real election: new term, vote for self (§5.2)."""
        self._state.become_candidate()

    def become_leader(self) -> None:
        """Won the election: set up progress and append the no-op of this term (§5.4.2)."""
        replication.become_leader(self._state)

    # ----------------------------------------------------------------- output

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return something to do."""
        s = self._state
        membership.step_down_if_removed(s)
        replication.flush(s)
        if s.msgs or s.reads or s.pending_truncate is not None or s.read_states:
            return True
        if s.pending_snapshot is not None:
            return True
        rlog = s.raft_log
        last = rlog.last_index
        if s.stable_last < last or s.hard_state_changed():
            return True
        nxt = s.applied + 1
        if nxt <= s.commit and nxt <= last and (s.apply_buf or nxt >= rlog.window_start):
            return True
        ss = s.reported_ss
        return ss.role is not s.role or ss.leader_id != s.leader_id or ss.term != s.term

    def ready(self) -> Ready:
        """Everything pending since the last advance (calling twice returns the same work)."""
        s = self._state
        replication.flush(s)
        s.trunc_since_ready = None
        hard_state = None
        if s.hard_state_changed():
            hard_state = new_hard_state(s.term, s.vote, s.commit)
        start = s.unstable_from()
        last = s.raft_log.last_index
        entries = tuple(s.raft_log.slice(start, last)) if start <= last else ()
        soft = s.soft_state()
        return Ready(
            hard_state=hard_state,
            truncate_from=s.pending_truncate,
            entries=entries,
            messages=tuple(s.msgs),
            committed_entries=applying.committed_to_apply(s),
            reads=tuple(s.reads),
            soft_state=soft if soft != s.reported_ss else None,
            snapshot=s.pending_snapshot,
            read_states=tuple(s.read_states),
        )

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied ``ready``; forget it."""
        s = self._state
        if ready.hard_state is not None:
            hs = ready.hard_state
            s.persisted_hs = (hs.term, hs.voted_for, hs.commit)
        if ready.snapshot is not None and ready.snapshot is s.pending_snapshot:
            s.pending_snapshot = None
        if ready.entries:
            stable = ready.entries[-1].index
        elif ready.snapshot is not None:
            stable = max(s.stable_last, ready.snapshot.index)
        elif ready.truncate_from is not None:
            stable = ready.truncate_from - 1
        else:
            stable = s.stable_last
        trunc = s.trunc_since_ready
        s.pending_truncate = trunc if trunc is not None and trunc <= stable else None
        s.trunc_since_ready = None
        grew = stable > s.stable_last
        s.stable_last = stable
        if grew and s.role is _LEADER:
            replication.maybe_commit(s)  # its own saved entries count now (a sole voter)
        if ready.messages:
            del s.msgs[: len(ready.messages)]
        if ready.reads:
            del s.reads[: len(ready.reads)]
        if ready.read_states:
            del s.read_states[: len(ready.read_states)]
        if ready.committed_entries:
            applying.mark_applied(s, ready.committed_entries)
        if ready.soft_state is not None:
            s.reported_ss = ready.soft_state
        applying.request_missing(s)
