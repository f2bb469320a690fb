"""Elections: term handling, vote rules, and the follower/candidate step functions.

§5.2 (one vote per term), §5.4.1 (the up-to-date check) and thesis §9.6 (pre-vote
and the leader lease that check-quorum gives followers).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raftmq.core import replication
from raftmq.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Message,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.core.types import Role

if TYPE_CHECKING:
    from raftmq.core.raft import RaftCore

log = logging.getLogger("raftmq.core.election")


def in_lease(r: RaftCore) -> bool:
    """True when this node heard from a live leader within the election timeout."""
    return r._leader_id is not None and r._election_elapsed < r._cfg.election_ticks


def accept_higher_term(r: RaftCore, msg: Message) -> bool:
    """Handle ``msg.term > r.term``; return False when the message must be dropped."""
    if isinstance(msg, RequestVote):
        if not msg.transfer and in_lease(r) and (msg.pre_vote or r._cfg.check_quorum):
            # A live leader exists: a disruptive candidate must not depose it (§9.6).
            log.debug("%s: ignoring %s vote request in lease", r._id, msg.sender)
            return False
        if msg.pre_vote:
            return True  # a pre-vote changes no state
    elif isinstance(msg, RequestVoteReply) and msg.pre_vote and msg.granted:
        return True  # our own pre-vote granted for term + 1: the term moves when we campaign
    leader = msg.sender if isinstance(msg, AppendEntries) else None
    r.become_follower(msg.term, leader)
    return True


def answer_stale(r: RaftCore, msg: Message) -> None:
    """A lower-term request gets a reply carrying our term, so its sender steps down."""
    if isinstance(msg, AppendEntries):
        r._send(
            AppendEntriesReply(
                term=r._term,
                sender=r._id,
                recipient=msg.sender,
                success=False,
                reject_index=msg.prev_log_index,
            )
        )
    elif isinstance(msg, RequestVote):
        r._send(
            RequestVoteReply(
                term=r._term,
                sender=r._id,
                recipient=msg.sender,
                granted=False,
                pre_vote=msg.pre_vote,
            )
        )
    # Replies and TimeoutNow of an older term are simply ignored.


def handle_vote_request(r: RaftCore, msg: RequestVote) -> None:
    """§5.2/§5.4.1: grant at most one vote per term, only to an up-to-date log."""
    can_vote = (
        r._vote == msg.sender
        or (r._vote is None and r._leader_id is None)
        or (msg.pre_vote and msg.term > r._term)
    )
    if can_vote and r._log.is_up_to_date(msg.last_log_term, msg.last_log_index):
        if not msg.pre_vote:
            r._election_elapsed = 0
            r._vote = msg.sender  # persisted by the same Ready that carries the reply
        r._send(
            RequestVoteReply(
                term=msg.term,
                sender=r._id,
                recipient=msg.sender,
                granted=True,
                pre_vote=msg.pre_vote,
            )
        )
    else:
        r._send(
            RequestVoteReply(
                term=r._term,
                sender=r._id,
                recipient=msg.sender,
                granted=False,
                pre_vote=msg.pre_vote,
            )
        )


def campaign(r: RaftCore, *, pre_vote: bool, transfer: bool) -> None:
    """Start a pre-vote round or a real election and ask every other voter."""
    if pre_vote:
        r.become_pre_candidate()
        term = r._term + 1
    else:
        r.become_candidate()
        term = r._term
    if _tally(r, r._id, granted=True):
        return
    for peer in r._others:
        r._send(
            RequestVote(
                term=term,
                sender=r._id,
                recipient=peer,
                last_log_index=r._log.last_index,
                last_log_term=r._log.last_term(),
                pre_vote=pre_vote,
                transfer=transfer,
            )
        )


def _tally(r: RaftCore, voter: str, *, granted: bool) -> bool:
    """Record one answer; act on a decided outcome and return True when decided."""
    r._votes.setdefault(voter, granted)
    yes = sum(1 for g in r._votes.values() if g)
    no = len(r._votes) - yes
    if yes >= r._quorum:
        if r._role is Role.PRE_CANDIDATE:
            campaign(r, pre_vote=False, transfer=False)
        else:
            r.become_leader()
        return True
    if no >= r._quorum:
        r.become_follower(r._term, None)
        return True
    return False


def step_follower(r: RaftCore, msg: Message) -> None:
    """Follower: obey the leader of this term, vote, or campaign on TimeoutNow."""
    if isinstance(msg, AppendEntries):
        r._election_elapsed = 0
        r._leader_id = msg.sender
        replication.handle_append_entries(r, msg)
    elif isinstance(msg, RequestVote):
        handle_vote_request(r, msg)
    elif isinstance(msg, TimeoutNow):
        log.info("%s: TimeoutNow from %s, campaigning", r._id, msg.sender)
        campaign(r, pre_vote=False, transfer=True)


def step_candidate(r: RaftCore, msg: Message) -> None:
    """Pre-candidate and candidate: count answers, fall back on a leader of this term."""
    if isinstance(msg, AppendEntries):
        # §5.2: a valid AppendEntries of our term means someone else won.
        r.become_follower(msg.term, msg.sender)
        replication.handle_append_entries(r, msg)
    elif isinstance(msg, RequestVote):
        handle_vote_request(r, msg)
    elif isinstance(msg, RequestVoteReply):
        if msg.pre_vote != (r._role is Role.PRE_CANDIDATE):
            return  # an answer to the other kind of round
        _tally(r, msg.sender, granted=msg.granted)
