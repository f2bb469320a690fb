"""Elections: campaigning, counting votes, and the follower/candidate step functions.

§5.2 (leader election) and thesis §9.6 (pre-vote). The vote rules every role shares
(granting votes, the lease, term checks) are in :mod:`~raftmq.core.votes`; a won
election hands over to :mod:`~raftmq.core.replication`, which never imports this
module.
"""

from __future__ import annotations

import logging

from raftmq.core import replication
from raftmq.core.messages import (
    AppendEntries,
    Message,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.core.state import RaftState
from raftmq.core.types import Role
from raftmq.core.votes import handle_vote_request

log = logging.getLogger("raftmq.core.election")


def tick(s: RaftState) -> None:
    """Non-leader tick: campaign once the randomized election timeout has passed."""
    s.election_elapsed += 1
    if s.election_elapsed >= s.randomized_timeout:
        s.election_elapsed = 0
        campaign(s, pre_vote=s.cfg.pre_vote, transfer=False)


def campaign(s: RaftState, *, pre_vote: bool, transfer: bool) -> None:
    """Start a pre-vote round or a real election and ask every other voter."""
    if pre_vote:
        s.become_pre_candidate()
        term = s.term + 1
    else:
        s.become_candidate()
        term = s.term
    if _tally(s, s.id, granted=True):
        return
    for peer in s.others:
        s.send(
            RequestVote(
                term=term,
                sender=s.id,
                recipient=peer,
                last_log_index=s.raft_log.last_index,
                last_log_term=s.raft_log.last_term(),
                pre_vote=pre_vote,
                transfer=transfer,
            )
        )


def _tally(s: RaftState, voter: str, *, granted: bool) -> bool:
    """Record one answer; act on a decided outcome and return True when decided."""
    s.votes.setdefault(voter, granted)
    yes = sum(1 for g in s.votes.values() if g)
    no = len(s.votes) - yes
    if yes >= s.quorum:
        if s.role is Role.PRE_CANDIDATE:
            campaign(s, pre_vote=False, transfer=False)
        else:
            replication.become_leader(s)
        return True
    if no >= s.quorum:
        s.become_follower(s.term, None)
        return True
    return False


def step_follower(s: RaftState, msg: Message) -> None:
    """Follower: obey the leader of this term, vote, or campaign on TimeoutNow."""
    if isinstance(msg, AppendEntries):
        s.election_elapsed = 0
        s.leader_id = msg.sender
        replication.handle_append_entries(s, msg)
    elif isinstance(msg, RequestVote):
        handle_vote_request(s, msg)
    elif isinstance(msg, TimeoutNow):
        log.info("%s: TimeoutNow from %s, campaigning", s.id, msg.sender)
        campaign(s, pre_vote=False, transfer=True)


def step_candidate(s: RaftState, msg: Message) -> None:
    """Pre-candidate and candidate: count answers, fall back on a leader of this term."""
    if isinstance(msg, AppendEntries):
        # §5.2: a valid AppendEntries of our term means someone else won.
        s.become_follower(msg.term, msg.sender)
        replication.handle_append_entries(s, msg)
    elif isinstance(msg, RequestVote):
        handle_vote_request(s, msg)
    elif isinstance(msg, RequestVoteReply):
        if msg.pre_vote != (s.role is Role.PRE_CANDIDATE):
            return  # an answer to the other kind of round
        _tally(s, msg.sender, granted=msg.granted)
