"""Term and vote rules every role follows, whatever its step function.

§5.1 (a higher term turns any node into a follower, a lower one is answered with
ours), §5.2 (one vote per term), §5.4.1 (the up-to-date check) and thesis §9.6 (the
leader lease that check-quorum gives followers). Both
:mod:`~raftmq.core.election` and :mod:`~raftmq.core.replication` use these, so they
live below both and neither role module needs the other for them.
"""

from __future__ import annotations

import logging

from raftmq.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Message,
    RequestVote,
    RequestVoteReply,
)
from raftmq.core.state import RaftState

log = logging.getLogger("raftmq.core.election")  # the name these messages always had


def in_lease(s: RaftState) -> bool:
    """True when this node heard from a live leader within the election timeout."""
    return s.leader_id is not None and s.election_elapsed < s.cfg.election_ticks


def accept_higher_term(s: RaftState, msg: Message) -> bool:
    """Handle ``msg.term > s.term``; return False when the message must be dropped."""
    if isinstance(msg, RequestVote):
        if not msg.transfer and in_lease(s) and (msg.pre_vote or s.cfg.check_quorum):
            # A live leader exists: a disruptive candidate must not depose it (§9.6).
            log.debug("%s: ignoring %s vote request in lease", s.id, msg.sender)
            return False
        if msg.pre_vote:
            return True  # a pre-vote changes no state
    elif isinstance(msg, RequestVoteReply) and msg.pre_vote and msg.granted:
        return True  # our own pre-vote granted for term + 1: the term moves when we campaign
    leader = msg.sender if isinstance(msg, AppendEntries) else None
    s.become_follower(msg.term, leader)
    return True


def answer_stale(s: RaftState, msg: Message) -> None:
    """A lower-term request gets a reply carrying our term, so its sender steps down."""
    if isinstance(msg, AppendEntries):
        s.send(
            AppendEntriesReply(
                term=s.term,
                sender=s.id,
                recipient=msg.sender,
                success=False,
                reject_index=msg.prev_log_index,
            )
        )
    elif isinstance(msg, RequestVote):
        s.send(
            RequestVoteReply(
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
    if can_vote and s.raft_log.is_up_to_date(msg.last_log_term, msg.last_log_index):
        if not msg.pre_vote:
            s.election_elapsed = 0
            s.vote = msg.sender  # persisted by the same Ready that carries the reply
        s.send(
            RequestVoteReply(
                term=msg.term,
                sender=s.id,
                recipient=msg.sender,
                granted=True,
                pre_vote=msg.pre_vote,
            )
        )
    else:
        s.send(
            RequestVoteReply(
                term=s.term,
                sender=s.id,
                recipient=msg.sender,
                granted=False,
                pre_vote=msg.pre_vote,
            )
        )
