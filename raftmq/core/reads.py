"""ReadIndex (thesis §6.4): linearizable reads without writing to the log.

A read asked of the leader gets the leader's commit index as its *read index* once two
things hold:

1. The leader has committed an entry of its own term (its no-op, §5.4.2 / §6.4 step 1):
   only then is its commit index at least that of every earlier leader. Reads asked
   before wait for it (``read_waiting``).
2. A majority still knew it as leader *after* the read was asked (step 2): the leader
   starts a new read round (``read_seq``), every AppendEntries it sends carries the
   round, and each follower echoes the round of the AppendEntries it answers. A read of
   round r is confirmed once a majority (the leader included) answered round r or later
   in this term; no other leader can have committed anything it would miss.

A read asked of a follower is forwarded to the leader it follows
(:class:`~raftmq.core.messages.ReadIndexRequest`); the leader confirms it like its own
and answers with the read index (:class:`~raftmq.core.messages.ReadIndexReply`), which
the follower accepts only from that leader in that term. The host then waits until its
state machine applied the read index and serves the read (steps 3-4).

Confirmed and failed reads leave the core as :class:`ReadState` in the next Ready;
leadership lost before confirmation, or a follower's leader changing, fails every read
not yet answered (index None; ``RaftState.fail_reads``) -- a forwarded read whose request
or answer was lost is the host's to time out. A round number above the leader's current
one is no honest echo and is ignored.
"""

from __future__ import annotations

import logging

from raftmq.core import membership
from raftmq.core.messages import ReadIndexReply, ReadIndexRequest
from raftmq.core.progress import Progress
from raftmq.core.state import RaftState
from raftmq.core.types import ReadState, Role
from raftmq.errors import NotLeader

__all__ = ["acked", "promote", "release", "request", "step_reply", "step_request"]

log = logging.getLogger("raftmq.core.reads")

MAX_FORWARDED = 10_000  # reads a follower has forwarded and not yet heard back about
MAX_WAITING = 100_000  # reads a leader holds unconfirmed (its own and followers')


def request(s: RaftState, request_id: int) -> None:
    """Queue read ``request_id`` (leader), or forward it to the leader (follower);
    NotLeader (with the leader hint) when there is no leader to ask or too many reads
    wait already."""
    if s.role is Role.LEADER:
        if len(s.read_waiting) + len(s.read_pending) >= MAX_WAITING:
            raise NotLeader(s.id, "too many reads waiting for confirmation")
        s.read_waiting.append((request_id, None))
        return
    if s.role is not Role.FOLLOWER or s.leader_id is None:
        raise NotLeader(s.leader_id)
    if len(s.read_forwarded) >= MAX_FORWARDED:
        raise NotLeader(s.leader_id, "too many reads waiting for the leader")
    s.read_forwarded.add(request_id)
    s.send(ReadIndexRequest(term=s.term, sender=s.id, recipient=s.leader_id, request_id=request_id))


def step_request(s: RaftState, msg: ReadIndexRequest) -> None:
    """Leader: a follower's read, confirmed like our own and answered to it. Past
    MAX_WAITING unconfirmed reads (a leader that cannot reach a majority, or a flood of
    requests) a follower's read is dropped and logged: its asker times out, and the
    leader's memory stays bounded."""
    if msg.sender not in s.progress:
        return
    if len(s.read_waiting) + len(s.read_pending) >= MAX_WAITING:
        log.warning("%s: %s unconfirmed reads; dropping %s's", s.id, MAX_WAITING, msg.sender)
        return
    s.read_waiting.append((msg.request_id, msg.sender))


def step_reply(s: RaftState, msg: ReadIndexReply) -> None:
    """Follower: the read index of a read we forwarded, from the leader we follow."""
    if msg.sender == s.leader_id and msg.request_id in s.read_forwarded:
        s.read_forwarded.discard(msg.request_id)
        s.read_states.append(ReadState(msg.request_id, msg.index))


def promote(s: RaftState) -> bool:
    """Start a read round for the waiting reads once this term has a committed entry;
    True when followers must be asked (a cluster of one confirms at once)."""
    if not s.read_waiting or s.raft_log.term(s.commit) != s.term:
        return False
    s.read_seq += 1
    for request_id, origin in s.read_waiting:
        s.read_pending.append((request_id, origin, s.commit, s.read_seq))
    s.read_waiting.clear()
    return bool(s.progress)


def acked(s: RaftState, pr: Progress, read_seq: int) -> None:
    """A follower answered an AppendEntries of round ``read_seq`` in this term."""
    if pr.read_acked < read_seq <= s.read_seq:
        pr.read_acked = read_seq


def release(s: RaftState) -> None:
    """Hand out (or answer) the reads whose round a majority confirmed."""
    pending = s.read_pending
    if not pending:
        return
    # A majority of the voters (the leader among them while it is one) answered:
    confirmed = membership.quorum_value(
        s, {peer: pr.read_acked for peer, pr in s.progress.items()}, s.read_seq
    )
    while pending and pending[0][3] <= confirmed:
        request_id, origin, index, _ = pending.popleft()
        if origin is None:
            s.read_states.append(ReadState(request_id, index))
        else:
            s.send(
                ReadIndexReply(
                    term=s.term, sender=s.id, recipient=origin, request_id=request_id, index=index
                )
            )
