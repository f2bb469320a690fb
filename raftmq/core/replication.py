"""Log replication (§5.3): the leader's step function and sends, the follower's append.

The leader keeps a :class:`Progress` per follower: PROBE sends one AppendEntries per
heartbeat until the follower's log matches, REPLICATE pipelines batches within a
bounded inflight window. Rejections carry a conflict hint so the leader skips a
whole term per round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from raftmq.core import election
from raftmq.core.fast import new_append, new_append_reply
from raftmq.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Message,
    RequestVote,
    TimeoutNow,
)
from raftmq.core.progress import Progress, ProgressState
from raftmq.core.types import Entry, LogRead, LogReadResult, Role

if TYPE_CHECKING:
    from raftmq.core.raft import RaftCore

log = logging.getLogger("raftmq.core.replication")

# Heartbeats in a row with unacknowledged sends and no progress before the leader
# assumes the tail of its pipeline was lost and probes again.
STALL_HEARTBEATS = 2

_construct_append = new_append
_construct_reply = new_append_reply


# --------------------------------------------------------------------- leader side


def append_as_leader(r: RaftCore, entries: Sequence[Entry]) -> None:
    """Append the leader's own new entries and schedule sending them."""
    r._log.append(entries)
    r._bcast_pending = True
    if not r._others:
        maybe_commit(r)


def send_to_all(r: RaftCore) -> None:
    """Offer new entries to every follower (as far as its state allows)."""
    for peer, pr in r._progress.items():
        send_append(r, peer, pr)


def send_append(r: RaftCore, peer: str, pr: Progress) -> None:
    """Send as much as ``pr`` allows: one probe, or batches up to the inflight window."""
    cfg = r._cfg
    rlog = r._log
    while True:
        if pr.read is not None:
            return  # waiting for storage to hand us older entries
        if pr.state is ProgressState.PROBE:
            if pr.paused:
                return
        elif len(pr.inflight) >= cfg.max_inflight or pr.next > rlog.last_index:
            return
        nxt = pr.next
        hi = min(rlog.last_index, nxt + cfg.max_batch_entries - 1)
        start = rlog.window_start
        if nxt < start and nxt <= hi:
            read = LogRead(lo=nxt, hi=min(hi, start - 1), max_bytes=cfg.max_batch_bytes, peer=peer)
            pr.read = read
            r._reads.append(read)
            return
        entries = rlog.slice(nxt, hi, cfg.max_batch_bytes) if nxt <= hi else []
        _send_entries(r, peer, pr, nxt, entries)
        if pr.state is ProgressState.PROBE:
            return


def _send_entries(r: RaftCore, peer: str, pr: Progress, nxt: int, entries: list[Entry]) -> None:
    r._send(
        _construct_append(
            term=r._term,
            sender=r._id,
            recipient=peer,
            prev_log_index=nxt - 1,
            prev_log_term=r._log.term(nxt - 1),
            entries=tuple(entries),
            leader_commit=r._commit,
        )
    )
    if pr.state is ProgressState.PROBE:
        pr.paused = True
    elif entries:
        last = entries[-1].index
        pr.next = last + 1
        pr.inflight.append(last)


def step_peer_read(r: RaftCore, result: LogReadResult) -> None:
    """Entries read from storage for a lagging follower: send them if still wanted."""
    read = result.read
    peer = read.peer
    pr = r._progress.get(peer) if peer is not None and r._role is Role.LEADER else None
    if pr is None or pr.read != read:
        return
    pr.read = None
    ents = list(result.entries)
    ok = bool(ents) and read.lo == pr.next
    for pos, ent in enumerate(ents):
        if ent.index != read.lo + pos or ent.term != r._log.term(ent.index):
            ok = False
            break
    if peer is None:
        return
    if ok:
        _send_entries(r, peer, pr, read.lo, ents)
    elif read.lo == pr.next:
        # Storage could not serve what we asked: retry from match + 1 at the next
        # heartbeat instead of spinning on the same read.
        log.warning("%s: storage returned nothing usable for %s..%s", r._id, read.lo, read.hi)
        pr.become_probe()
        pr.paused = True
        return
    send_append(r, peer, pr)


def heartbeat(r: RaftCore) -> None:
    """Heartbeat every follower: empty AppendEntries at its match, or a probe."""
    for peer, pr in r._progress.items():
        if pr.state is ProgressState.REPLICATE:
            if pr.inflight and pr.match == pr.match_at_heartbeat:
                pr.stalled_heartbeats += 1
            else:
                pr.stalled_heartbeats = 0
            pr.match_at_heartbeat = pr.match
            if pr.stalled_heartbeats >= STALL_HEARTBEATS:
                log.debug("%s: pipeline to %s stalled at %s, probing", r._id, peer, pr.match)
                pr.become_probe()
                send_append(r, peer, pr)
                continue
            r._send(
                _construct_append(
                    term=r._term,
                    sender=r._id,
                    recipient=peer,
                    prev_log_index=pr.match,
                    prev_log_term=r._log.term(pr.match),
                    entries=(),
                    leader_commit=r._commit,
                )
            )
        else:
            pr.paused = False
            send_append(r, peer, pr)


def tick_leader(r: RaftCore) -> None:
    """Leader tick: heartbeats, check-quorum, leadership-transfer timeout."""
    cfg = r._cfg
    r._heartbeat_elapsed += 1
    r._election_elapsed += 1
    if r._election_elapsed >= cfg.election_ticks:
        r._election_elapsed = 0
        if cfg.check_quorum:
            active = 1 + sum(1 for pr in r._progress.values() if pr.recent_active)
            if active < r._quorum:
                log.info("%s: lost contact with a majority in term %s", r._id, r._term)
                r.become_follower(r._term, None)
                return
            for pr in r._progress.values():
                pr.recent_active = False
        if r._transferee is not None:
            log.info("%s: leadership transfer to %s timed out", r._id, r._transferee)
            r._transferee = None
    if r._heartbeat_elapsed >= cfg.heartbeat_ticks:
        r._heartbeat_elapsed = 0
        r._flush()
        heartbeat(r)


def maybe_commit(r: RaftCore) -> bool:
    """§5.3/§5.4.2: commit the highest index on a majority if it is of the current term."""
    matches = sorted((pr.match for pr in r._progress.values()), reverse=True)
    matches.insert(0, r._log.last_index)  # the leader's own log (>= every match)
    candidate = matches[r._quorum - 1]
    if candidate > r._commit and r._log.term(candidate) == r._term:
        r._set_commit(candidate)
        return True
    return False


def start_transfer(r: RaftCore, to: str) -> None:
    """Begin leadership transfer (§3.10): TimeoutNow once ``to`` is up to date."""
    if r._transferee == to:
        return
    r._transferee = to
    r._election_elapsed = 0  # the transfer must finish within one election timeout
    pr = r._progress[to]
    if pr.match == r._log.last_index:
        _send_timeout_now(r, to)
    else:
        r._flush()
        # Resend from match + 1: an optimistic pipeline may have lost its tail.
        pr.become_probe()
        send_append(r, to, pr)


def _send_timeout_now(r: RaftCore, to: str) -> None:
    r._send(TimeoutNow(term=r._term, sender=r._id, recipient=to))


def step_leader(r: RaftCore, msg: Message) -> None:
    """Leader: track follower progress; answer vote requests (always rejected here)."""
    if isinstance(msg, AppendEntriesReply):
        pr = r._progress.get(msg.sender)
        if pr is not None:
            pr.recent_active = True
            _handle_append_reply(r, msg.sender, pr, msg)
    elif isinstance(msg, RequestVote):
        election.handle_vote_request(r, msg)
    else:
        pr = r._progress.get(msg.sender)
        if pr is not None:
            pr.recent_active = True


def _handle_append_reply(r: RaftCore, peer: str, pr: Progress, msg: AppendEntriesReply) -> None:
    if msg.success:
        updated = msg.match_index > pr.match
        if updated:
            pr.match = msg.match_index
        if pr.state is ProgressState.PROBE:
            if msg.match_index >= pr.match:
                pr.become_replicate()
        else:
            pr.free_up_to(msg.match_index)
            if pr.next <= pr.match:
                pr.next = pr.match + 1
        if updated:
            maybe_commit(r)
            if r._transferee == peer and pr.match == r._log.last_index:
                _send_timeout_now(r, peer)
        send_append(r, peer, pr)
        return
    # A rejection: ignore stale ones (for a prev index we know matches, or not our probe).
    if pr.state is ProgressState.REPLICATE:
        if msg.reject_index <= pr.match:
            return
    elif msg.reject_index != pr.next - 1:
        return
    hint = msg.conflict_index
    if msg.conflict_term > 0:
        last_of_term = r._log.last_index_of_term(msg.conflict_term)
        if last_of_term > 0:
            hint = last_of_term + 1
    pr.become_probe()
    pr.next = max(pr.match + 1, min(hint, msg.reject_index))
    send_append(r, peer, pr)


# --------------------------------------------------------------------- follower side


def handle_append_entries(r: RaftCore, msg: AppendEntries) -> None:
    """§5.3: consistency check, keep a matching prefix, truncate only a conflict."""
    rlog = r._log
    prev = msg.prev_log_index
    if prev > rlog.last_index or rlog.term(prev) != msg.prev_log_term:
        if prev > rlog.last_index:
            conflict_term, conflict_index = 0, rlog.last_index + 1
        else:
            conflict_term = rlog.term(prev)
            conflict_index = max(rlog.first_index_of_run(prev), r._commit + 1)
        r._send(
            _construct_reply(
                term=r._term,
                sender=r._id,
                recipient=msg.sender,
                success=False,
                match_index=0,
                reject_index=prev,
                conflict_term=conflict_term,
                conflict_index=conflict_index,
            )
        )
        return
    ents = msg.entries
    last_new = prev + len(ents)
    if ents:
        pos = 0
        overlap = min(rlog.last_index, last_new) - prev
        while pos < overlap and rlog.term(prev + 1 + pos) == ents[pos].term:
            pos += 1  # already held: a re-delivered prefix is never truncated
        if pos < len(ents):
            first_new = prev + 1 + pos
            if first_new <= rlog.last_index:
                if first_new <= r._commit:
                    log.error(
                        "%s: leader %s conflicts with committed index %s; ignoring",
                        r._id,
                        msg.sender,
                        first_new,
                    )
                    return
                r._truncate(first_new)
            rlog.append(ents[pos:])
    r._set_commit(min(msg.leader_commit, last_new))
    r._send(
        _construct_reply(
            term=r._term,
            sender=r._id,
            recipient=msg.sender,
            success=True,
            match_index=last_new,
            reject_index=0,
            conflict_term=0,
            conflict_index=0,
        )
    )
