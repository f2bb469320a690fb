"""Elections: campaigning, counting votes, and the follower/candidate step functions.

§5.2 (leader election) and thesis §9.6 (pre-vote). The vote rules every role shares
(granting votes, the lease, term checks) are in :mod:`~raftmq.core.votes`; a won
election hands over to :mod:`~raftmq.core.replication`, which never imports this
module.
"""

from __future__ import annotations

import logging

from raftmq.core import membership, reads, replication
from raftmq.core.messages import (
    AppendEntries,
    InstallSnapshot,
    Message,
    ReadIndexReply,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.core.state import RaftState
from raftmq.core.types import ElectionCause, Role
from raftmq.core.votes import handle_vote_request

log = logging.getLogger("raftmq.core.election")


def tick(s: RaftState) -> None:
    """Non-leader tick: campaign once the randomized election timeout has passed."""
    if s.transfer_notice is not None:
        # A transfer the leader announced lasts as long as the leader waits for it.
        s.notice_elapsed += 1
        if s.notice_elapsed >= s.cfg.election_ticks:
            s.transfer_notice = None
    s.election_elapsed += 1
    if s.election_elapsed >= s.randomized_timeout:
        s.election_elapsed = 0
        if not membership.may_campaign(s):
            # A learner, a member-to-be or a removed server never campaigns; it forgets a
            # leader it no longer hears, which ends its lease (else it would refuse the
            # votes of a cluster that needs it, for good).
            if s.leader_id is not None:
                s.become_follower(s.term, None)
            return
        _count(s, ElectionCause.TIMEOUT)
        campaign(s, pre_vote=s.cfg.pre_vote, transfer=False)


def _count(s: RaftState, cause: ElectionCause) -> None:
    """Count an election about to start (none is started at the largest term)."""
    if s.can_campaign():
        s.elections_started[cause] += 1


def campaign(s: RaftState, *, pre_vote: bool, transfer: bool) -> None:
    """Start a pre-vote round or a real election and ask every other voter."""
    if not s.can_campaign():
        log.error("%s: term %s is the highest there is; not campaigning", s.id, s.term)
        return
    if not membership.may_campaign(s):
        log.info("%s: not a voter; not campaigning", s.id)
        return
    if pre_vote:
        s.become_pre_candidate()
        term = s.term + 1
    else:
        s.become_candidate()
        term = s.term
    if _tally(s, s.id, granted=True):
        return
    for peer in s.voter_peers:
        s.send(
            RequestVote(
                incarnation=s.incarnation,
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
    voters = s.members.voters  # answers of others (a configuration changed) do not count
    yes = sum(1 for v, g in s.votes.items() if g and v in voters)
    no = sum(1 for v, g in s.votes.items() if not g and v in voters)
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
    """Follower: obey the leader of this term, vote, or campaign on its TimeoutNow."""
    if isinstance(msg, AppendEntries | InstallSnapshot):
        if s.leader_id is not None and msg.sender != s.leader_id:
            # §5.2: one leader per term. A second one is forged; obeying it would let
            # it overwrite entries the real leader replicated here.
            log.error(
                "%s: %s from %s but %s leads term %s; dropped",
                s.id,
                type(msg).__name__,
                msg.sender,
                s.leader_id,
                s.term,
            )
            return
        s.election_elapsed = 0
        s.leader_id = msg.sender
        if isinstance(msg, AppendEntries):
            replication.handle_append_entries(s, msg)
        else:
            replication.handle_install_snapshot(s, msg)
    elif isinstance(msg, RequestVote):
        handle_vote_request(s, msg)
    elif isinstance(msg, TimeoutNow):
        _handle_timeout_now(s, msg)
    elif isinstance(msg, ReadIndexReply):
        reads.step_reply(s, msg)


def _handle_timeout_now(s: RaftState, msg: TimeoutNow) -> None:
    """Thesis §3.10, honoured only from the leader this follower obeys in this term."""
    if s.leader_id is None or msg.sender != s.leader_id:
        log.warning("%s: TimeoutNow from %s, who does not lead us; dropped", s.id, msg.sender)
        return
    target = msg.transferee if msg.transferee is not None else s.id
    if target == s.id:
        log.info("%s: TimeoutNow from %s, campaigning", s.id, msg.sender)
        _count(s, ElectionCause.TRANSFER)
        campaign(s, pre_vote=False, transfer=True)
    elif target in s.others and target != msg.sender:
        s.transfer_notice = target  # its transfer vote for term + 1 may pass our lease
        s.notice_elapsed = 0


def step_candidate(s: RaftState, msg: Message) -> None:
    """Pre-candidate and candidate: count answers, fall back on a leader of this term."""
    if isinstance(msg, AppendEntries):
        # §5.2: a valid AppendEntries of our term means someone else won.
        s.become_follower(msg.term, msg.sender)
        replication.handle_append_entries(s, msg)
    elif isinstance(msg, InstallSnapshot):
        s.become_follower(msg.term, msg.sender)
        replication.handle_install_snapshot(s, msg)
    elif isinstance(msg, RequestVote):
        handle_vote_request(s, msg)
    elif isinstance(msg, RequestVoteReply):
        if msg.pre_vote != (s.role is Role.PRE_CANDIDATE):
            return  # an answer to the other kind of round
        if msg.granted and msg.term != (s.term + 1 if msg.pre_vote else s.term):
            return  # a grant carries the term it was asked for: forged
        _tally(s, msg.sender, granted=msg.granted)
