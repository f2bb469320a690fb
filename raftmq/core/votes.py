"""Term and vote rules every role follows, whatever its step function.

§5.1 (a higher term turns any node into a follower, a lower one is answered with
ours), §5.2 (one vote per term), §5.4.1 (the up-to-date check) and thesis §9.6 (the
leader lease that check-quorum gives followers). Both
:mod:`~raftmq.core.election` and :mod:`~raftmq.core.replication` use these, so they
live below both and neither role module needs the other for them.

Who may break a lease (thesis §3.10, §9.6). With check-quorum a node that heard from
its leader within the election timeout ignores higher-term vote requests; leadership
transfer must get past that, and etcd lets any request marked as a transfer through.
Here a transfer vote for term T + 1 passes the lease of a node in term T only when the
leader of T asked for it, as that node knows it:

* the leader of T itself: the candidate is its own ``transferee``;
* a follower in T: its leader of T (the node whose AppendEntries it obeys) named the
  candidate in a TimeoutNow within the last election timeout. The leader sends that
  notice to every follower just before the TimeoutNow that starts the candidate.

And a TimeoutNow starts a campaign only on a follower whose leader of the message's
term is its sender. So a member that is not the leader (or a stale, replayed or
duplicated message) can no longer force an election past a live leader's lease: its
transfer votes are plain votes, its TimeoutNow are dropped. This changes nothing for
safety: the lease was never part of it (§5.2's one vote per term and §5.4.1's
up-to-date check still decide every vote), it only decides who may disrupt.

Replies that could not answer anything this node sent in a higher term (a granted vote
or a successful append for a term other than ours, a TimeoutNow from the future) are
dropped instead of moving the term: only a refusal carries a higher term honestly.
"""

from __future__ import annotations

import logging

from raftmq.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.core.state import RaftState
from raftmq.core.types import Role

log = logging.getLogger("raftmq.core.election")  # the name these messages always had


def in_lease(s: RaftState) -> bool:
    """True when check-quorum is on and this node heard from a live leader within the
    election timeout (without check-quorum there is no lease, as in etcd-io/raft)."""
    return (
        s.cfg.check_quorum and s.leader_id is not None and s.election_elapsed < s.cfg.election_ticks
    )


def transfer_sanctioned(s: RaftState, msg: RequestVote) -> bool:
    """True when ``msg`` is a transfer vote the leader of our term asked for (see above)."""
    if not msg.transfer or msg.pre_vote or msg.term != s.term + 1:
        return False
    if s.role is Role.LEADER:
        return s.transferee == msg.sender
    return s.role is Role.FOLLOWER and s.leader_id is not None and s.transfer_notice == msg.sender


def accept_higher_term(s: RaftState, msg: Message) -> bool:
    """Handle ``msg.term > s.term``; return False when the message must be dropped."""
    if isinstance(msg, RequestVote):
        if in_lease(s) and not transfer_sanctioned(s, msg):
            # A live leader exists: a disruptive candidate must not depose it (§9.6).
            log.debug("%s: ignoring %s vote request in lease", s.id, msg.sender)
            return False
        if msg.pre_vote:
            return True  # a pre-vote changes no state
    elif isinstance(msg, RequestVoteReply) and msg.granted:
        # A grant carries the term it was asked for: our pre-vote's term + 1 is the only
        # higher one, and the term moves when we campaign. Any other is forged.
        return msg.pre_vote and msg.term == s.term + 1 and s.role is Role.PRE_CANDIDATE
    elif isinstance(msg, AppendEntriesReply | InstallSnapshotReply) and (
        msg.success if isinstance(msg, AppendEntriesReply) else msg.done
    ):
        return False  # a success carries the term of our own request: never a higher one
    elif isinstance(msg, TimeoutNow):
        return False  # only a leader we follow sends it, in the term we know it in
    leader = msg.sender if isinstance(msg, AppendEntries | InstallSnapshot) else None
    s.become_follower(msg.term, leader)
    return True


def answer_stale(s: RaftState, msg: Message) -> None:
    """A lower-term request gets a reply carrying our term, so its sender steps down."""
    if isinstance(msg, AppendEntries):
        s.send(
            AppendEntriesReply(
                incarnation=s.incarnation,
                term=s.term,
                sender=s.id,
                recipient=msg.sender,
                success=False,
                reject_index=msg.prev_log_index,
            )
        )
    elif isinstance(msg, InstallSnapshot):
        s.send(
            InstallSnapshotReply(
                incarnation=s.incarnation,
                term=s.term,
                sender=s.id,
                recipient=msg.sender,
                last_index=msg.last_index,
                last_term=msg.last_term,
            )
        )
    elif isinstance(msg, RequestVote):
        s.send(
            RequestVoteReply(
                incarnation=s.incarnation,
                term=s.term,
                sender=s.id,
                recipient=msg.sender,
                granted=False,
                pre_vote=msg.pre_vote,
            )
        )
    # Replies and TimeoutNow of an older term are simply ignored.


def handle_vote_request(s: RaftState, msg: RequestVote) -> None:
    """§5.2/§5.4.1: grant at most one vote per term, only to an up-to-date log."""
    can_vote = (
        s.vote == msg.sender
        or (s.vote is None and s.leader_id is None)
        or (msg.pre_vote and msg.term > s.term)
    )
    up_to_date = s.raft_log.is_up_to_date(msg.last_log_term, msg.last_log_index)
    kind = "pre-vote" if msg.pre_vote else "vote"
    if can_vote and up_to_date:
        log.debug("%s: granting %s to %s for term %s", s.id, kind, msg.sender, msg.term)
        if not msg.pre_vote:
            s.election_elapsed = 0
            s.vote = msg.sender  # persisted by the same Ready that carries the reply
        s.send(
            RequestVoteReply(
                incarnation=s.incarnation,
                term=msg.term,
                sender=s.id,
                recipient=msg.sender,
                granted=True,
                pre_vote=msg.pre_vote,
            )
        )
    else:
        log.debug(
            "%s: refusing %s to %s for term %s: %s",
            s.id,
            kind,
            msg.sender,
            msg.term,
            "its log is behind ours" if can_vote else f"voted for {s.vote or s.leader_id}",
        )
        s.send(
            RequestVoteReply(
                incarnation=s.incarnation,
                term=s.term,
                sender=s.id,
                recipient=msg.sender,
                granted=False,
                pre_vote=msg.pre_vote,
            )
        )
