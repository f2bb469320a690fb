"""Log replication (§5.3): the leader's step function and sends, the follower's append.

The leader keeps a :class:`Progress` per follower: PROBE sends one AppendEntries per
heartbeat until the follower's log matches, REPLICATE pipelines batches within a
bounded inflight window, SNAPSHOT sends the snapshot when the entries a follower needs
are compacted (:mod:`~raftmq.core.snapshots`). Rejections carry a conflict hint so the
leader skips a whole term per round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from raftmq.core import applying, membership, reads, snapshots
from raftmq.core.fast import new_append, new_append_reply, new_entry
from raftmq.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    ReadIndexRequest,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.core.progress import Progress, ProgressState
from raftmq.core.state import RaftState
from raftmq.core.types import Entry, EntryKind, LogRead, LogReadResult, Membership, Role
from raftmq.core.votes import handle_vote_request

log = logging.getLogger("raftmq.core.replication")

# Heartbeats in a row with unacknowledged sends and no progress before the leader
# assumes the tail of its pipeline was lost and probes again.
STALL_HEARTBEATS = 2


# --------------------------------------------------------------------- leader side


def become_leader(s: RaftState) -> None:
    """Won the election: set up progress and append the no-op of this term (§5.4.2)."""
    s.setup_leader()
    noop = new_entry(s.raft_log.last_index + 1, s.term, EntryKind.NOOP, b"")
    append_as_leader(s, [noop])


def append_as_leader(s: RaftState, entries: Sequence[Entry]) -> None:
    """Append the leader's own new entries and schedule sending them."""
    s.raft_log.append(entries)
    membership.appended(s, entries)
    s.bcast_pending = True


def append_config(s: RaftState, m: Membership) -> int:
    """Append a configuration entry holding ``m`` (in force at once) and return its
    index; the caller checked the rules of :mod:`raftmq.core.membership`."""
    index = s.raft_log.last_index + 1
    append_as_leader(s, [new_entry(index, s.term, EntryKind.CONFIG, membership.encode(m))])
    return index


def flush(s: RaftState) -> None:
    """Offer entries appended since the last flush to every follower, in one pass.

    Appends only set ``bcast_pending`` so that many proposals between two Readys
    share one AppendEntries per follower.
    """
    if s.bcast_pending:
        s.bcast_pending = False
        send_to_all(s)
    if s.read_waiting and reads.promote(s):
        read_round(s)
    reads.release(s)


def read_round(s: RaftState) -> None:
    """Ask every follower to confirm this leadership for read round ``s.read_seq``: an
    empty AppendEntries where its log is known to match (REPLICATE) or at the probe in
    flight (PROBE), which changes nothing else; a follower being sent a snapshot is not
    asked (raftmq.core.reads)."""
    first = s.raft_log.first_index
    for peer, pr in s.progress.items():
        if pr.state is ProgressState.SNAPSHOT or pr.read is not None:
            continue
        prev = pr.match if pr.state is ProgressState.REPLICATE else pr.next - 1
        if prev < first - 1:
            continue  # compacted here: the follower needs a snapshot, not this
        s.send(
            new_append(
                term=s.term,
                sender=s.id,
                recipient=peer,
                prev_log_index=prev,
                prev_log_term=s.raft_log.term(prev),
                entries=(),
                leader_commit=s.commit,
                read_seq=s.read_seq,
            )
        )
        if prev > pr.sent:
            pr.sent = prev


def send_to_all(s: RaftState) -> None:
    """Offer new entries to every follower (as far as its state allows)."""
    for peer, pr in s.progress.items():
        send_append(s, peer, pr)


def send_append(s: RaftState, peer: str, pr: Progress) -> None:
    """Send as much as ``pr`` allows: one probe, batches up to the inflight window, or
    snapshot chunks when the follower needs compacted entries."""
    cfg = s.cfg
    rlog = s.raft_log
    while True:
        if pr.read is not None:
            return  # waiting for storage to hand us older entries
        if pr.state is ProgressState.SNAPSHOT:
            snapshots.send_chunks(s, peer, pr)
            return
        if pr.next < rlog.first_index:
            if pr.state is ProgressState.PROBE and pr.paused:
                return
            snapshots.start(s, peer, pr)
            return
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
            s.reads.append(read)
            return
        entries = rlog.slice(nxt, hi, cfg.max_batch_bytes) if nxt <= hi else []
        _send_entries(s, peer, pr, nxt, entries)
        if pr.state is ProgressState.PROBE:
            return


def _send_entries(s: RaftState, peer: str, pr: Progress, nxt: int, entries: list[Entry]) -> None:
    s.send(
        new_append(
            term=s.term,
            sender=s.id,
            recipient=peer,
            prev_log_index=nxt - 1,
            prev_log_term=s.raft_log.term(nxt - 1),
            entries=tuple(entries),
            leader_commit=s.commit,
            read_seq=s.read_seq,
        )
    )
    told = nxt - 1 + len(entries)
    if told > pr.sent:
        pr.sent = told
    if pr.state is ProgressState.PROBE:
        pr.paused = True
    elif entries:
        last = entries[-1].index
        pr.next = last + 1
        pr.inflight.append(last)


def step_peer_read(s: RaftState, result: LogReadResult) -> None:
    """Entries read from storage for a lagging follower: send them if still wanted."""
    read = result.read
    peer = read.peer
    pr = s.progress.get(peer) if peer is not None and s.role is Role.LEADER else None
    if pr is None or pr.read != read:
        return
    pr.read = None
    if peer is None:
        return
    if read.lo < s.raft_log.first_index:
        send_append(s, peer, pr)  # compacted while we read: a snapshot instead
        return
    ents = list(result.entries)
    ok = bool(ents) and read.lo == pr.next
    for pos, ent in enumerate(ents):
        if ent.index != read.lo + pos or ent.term != s.raft_log.term(ent.index):
            ok = False
            break
    if ok:
        _send_entries(s, peer, pr, read.lo, ents)
    elif read.lo == pr.next:
        # Storage could not serve what we asked: retry from match + 1 at the next
        # heartbeat instead of spinning on the same read.
        log.warning("%s: storage returned nothing usable for %s..%s", s.id, read.lo, read.hi)
        pr.become_probe()
        pr.paused = True
        return
    send_append(s, peer, pr)


def heartbeat(s: RaftState) -> None:
    """Heartbeat every follower: empty AppendEntries at its match, or a probe."""
    first = s.raft_log.first_index
    for peer, pr in s.progress.items():
        if pr.state is ProgressState.SNAPSHOT:
            snapshots.heartbeat(s, peer, pr)
            continue
        if pr.state is ProgressState.REPLICATE and pr.match + 1 < first:
            pr.become_probe()  # its match is compacted away: on to a snapshot
        if pr.state is ProgressState.REPLICATE:
            if pr.inflight and pr.match == pr.match_at_heartbeat:
                pr.stalled_heartbeats += 1
            else:
                pr.stalled_heartbeats = 0
            pr.match_at_heartbeat = pr.match
            if pr.stalled_heartbeats >= STALL_HEARTBEATS:
                log.debug("%s: pipeline to %s stalled at %s, probing", s.id, peer, pr.match)
                pr.become_probe()
                send_append(s, peer, pr)
                continue
            s.send(_heartbeat_at_match(s, peer, pr))
        else:
            pr.paused = False
            send_append(s, peer, pr)
    if s.departing:
        membership.forget_departed(s)


def keepalives(s: RaftState) -> list[AppendEntries]:
    """Heartbeats built from the state without changing it: an empty AppendEntries at
    each replicating follower's match, exactly what :func:`heartbeat` sends it, for a
    leader whose loop is held up between two Readys (a slow save or apply; see
    ``raftmq.node.loop``). A follower that is probing or receiving a snapshot gets none:
    its next message is the pipeline's own. Empty unless this node leads."""
    if s.role is not Role.LEADER:
        return []
    first = s.raft_log.first_index
    out: list[AppendEntries] = []
    for peer, pr in s.progress.items():
        if pr.state is not ProgressState.REPLICATE or pr.match + 1 < first:
            continue
        out.append(_heartbeat_at_match(s, peer, pr))
    return out


def _heartbeat_at_match(s: RaftState, peer: str, pr: Progress) -> AppendEntries:
    """The empty AppendEntries a replicating follower gets at its match: a heartbeat,
    carrying the commit index and the current read round."""
    return new_append(
        term=s.term,
        sender=s.id,
        recipient=peer,
        prev_log_index=pr.match,
        prev_log_term=s.raft_log.term(pr.match),
        entries=(),
        leader_commit=s.commit,
        read_seq=s.read_seq,
    )


def tick_leader(s: RaftState) -> None:
    """Leader tick: heartbeats, check-quorum, leadership-transfer timeout."""
    cfg = s.cfg
    s.heartbeat_elapsed += 1
    s.election_elapsed += 1
    if s.election_elapsed >= cfg.election_ticks:
        s.election_elapsed = 0
        if cfg.check_quorum:
            active = membership.quorum_value(
                s, {peer: int(pr.recent_active) for peer, pr in s.progress.items()}, 1
            )
            if not active:
                log.info("%s: lost contact with a majority in term %s", s.id, s.term)
                s.become_follower(s.term, None)
                return
            for pr in s.progress.values():
                pr.recent_active = False
        if s.transferee is not None:
            log.info("%s: leadership transfer to %s timed out", s.id, s.transferee)
            s.transferee = None
    if s.heartbeat_elapsed >= cfg.heartbeat_ticks:
        s.heartbeat_elapsed = 0
        pinned = membership.pins_due(s)
        if pinned is not None:
            log.info("%s: pinning the databases of %s", s.id, _newly_pinned(s, pinned))
            append_config(s, pinned)
        flush(s)
        heartbeat(s)


def _newly_pinned(s: RaftState, m: Membership) -> str:
    return ", ".join(f"{n}={inc}" for n, inc in m.incarnations if n not in s.pins)


def maybe_commit(s: RaftState) -> bool:
    """§5.3/§5.4.2: commit the highest index on a majority if it is of the current term."""
    # The leader's own log counts while it is a voter, as far as storage holds it
    # (thesis §10.2.1): a leader that is the only voter commits an entry after saving
    # it, never in the Ready that appends it (whose early AppendEntries would carry the
    # commit to learners before the entry is durable anywhere).
    candidate = membership.quorum_value(
        s, {peer: pr.match for peer, pr in s.progress.items()}, s.stable_last
    )
    if candidate > s.commit and s.raft_log.term(candidate) == s.term:
        applying.commit_to(s, candidate)
        return True
    return False


def start_transfer(s: RaftState, to: str) -> None:
    """Begin leadership transfer (§3.10): TimeoutNow once ``to`` is up to date."""
    if s.transferee == to:
        return
    s.transferee = to
    s.election_elapsed = 0  # the transfer must finish within one election timeout
    pr = s.progress[to]
    if pr.match == s.raft_log.last_index:
        _send_timeout_now(s, to)
    else:
        flush(s)
        # Resend from match + 1: an optimistic pipeline may have lost its tail.
        pr.become_probe()
        send_append(s, to, pr)


def _send_timeout_now(s: RaftState, to: str) -> None:
    # The other followers hear first whom we hand over to, so that the transferee's
    # vote request (sent after ours reached it) may pass their lease (see votes.py).
    for peer in s.others:
        if peer != to:
            s.send(TimeoutNow(term=s.term, sender=s.id, recipient=peer, transferee=to))
    s.send(TimeoutNow(term=s.term, sender=s.id, recipient=to, transferee=to))


def step_leader(s: RaftState, msg: Message) -> None:
    """Leader: track follower progress; answer vote requests (always rejected here)."""
    if isinstance(msg, AppendEntriesReply):
        pr = s.progress.get(msg.sender)
        if pr is not None and _answers_what_we_sent(s, pr, msg):
            pr.recent_active = True
            if msg.success and msg.sender not in s.pins:  # (pinned: nothing to learn)
                membership.heard_holding(s, msg.sender, msg.incarnation, msg.match_index)
            reads.acked(s, pr, msg.read_seq)
            _handle_append_reply(s, msg.sender, pr, msg)
            reads.release(s)
    elif isinstance(msg, InstallSnapshotReply):
        pr = s.progress.get(msg.sender)
        if pr is not None and _snapshot_reply_is_possible(s, pr, msg):
            pr.recent_active = True
            if msg.done:
                membership.heard_holding(s, msg.sender, msg.incarnation, msg.last_index)
                _handle_snapshot_done(s, msg.sender, pr, msg.last_index)
            else:
                snapshots.progress_report(s, msg.sender, pr, msg)
    elif isinstance(msg, ReadIndexRequest):
        reads.step_request(s, msg)
    elif isinstance(msg, RequestVote):
        handle_vote_request(s, msg)
    elif isinstance(msg, RequestVoteReply):
        pr = s.progress.get(msg.sender)
        if pr is not None:
            pr.recent_active = True  # a late answer from our own election
    # A TimeoutNow or InstallSnapshot of our own term names another leader of it: forged,
    # dropped.


def _snapshot_reply_is_possible(s: RaftState, pr: Progress, msg: InstallSnapshotReply) -> bool:
    """False for an answer about a snapshot beyond anything we told the follower about
    (as for AppendEntriesReply: believing it would move match past what is known)."""
    if msg.last_index <= pr.sent:
        return True
    log.warning(
        "%s: snapshot reply from %s names index %s, beyond %s we sent; dropped",
        s.id,
        msg.sender,
        msg.last_index,
        pr.sent,
    )
    return False


def _handle_snapshot_done(s: RaftState, peer: str, pr: Progress, index: int) -> None:
    """The follower's log matches ours up to ``index``: replicate from there."""
    updated = index > pr.match
    if updated:
        pr.match = index
    if pr.state is ProgressState.SNAPSHOT:
        pending = pr.pending
        if pending is None or pr.match >= pending.index:
            log.debug("%s: %s installed snapshot %s, probing", s.id, peer, index)
            pr.become_probe()
    elif pr.state is ProgressState.REPLICATE:
        pr.free_up_to(pr.match)
        if pr.next <= pr.match:
            pr.next = pr.match + 1
    elif updated:
        pr.become_probe()
    if updated:
        maybe_commit(s)
        if s.transferee == peer and pr.match == s.raft_log.last_index:
            _send_timeout_now(s, peer)
    send_append(s, peer, pr)


def _answers_what_we_sent(s: RaftState, pr: Progress, msg: AppendEntriesReply) -> bool:
    """False for a reply naming an index no AppendEntries of this term told the follower
    about (like etcd, out-of-range acks are ignored): it is forged or corrupt, and
    believing it would move match past our own log and stop commits for good."""
    index = msg.match_index if msg.success else msg.reject_index
    if index <= pr.sent:
        return True
    log.warning(
        "%s: %s reply from %s names index %s, beyond %s we sent; dropped",
        s.id,
        "success" if msg.success else "reject",
        msg.sender,
        index,
        pr.sent,
    )
    return False


def _handle_append_reply(s: RaftState, peer: str, pr: Progress, msg: AppendEntriesReply) -> None:
    if msg.success:
        updated = msg.match_index > pr.match
        if updated:
            pr.match = msg.match_index
        if pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= s.raft_log.first_index:
                pr.become_probe()  # it caught up by the log after all (a late ack)
        elif pr.state is ProgressState.PROBE:
            if msg.match_index >= pr.match:
                log.debug("%s: replicating to %s from %s", s.id, peer, pr.next)
                pr.become_replicate()
        else:
            pr.free_up_to(msg.match_index)
            if pr.next <= pr.match:
                pr.next = pr.match + 1
        if updated:
            maybe_commit(s)
            if s.transferee == peer and pr.match == s.raft_log.last_index:
                _send_timeout_now(s, peer)
        send_append(s, peer, pr)
        return
    # A rejection: ignore stale ones (for a prev index we know matches, or not our probe).
    if pr.state is ProgressState.SNAPSHOT:
        return  # a late answer to an AppendEntries sent before the snapshot
    if pr.state is ProgressState.REPLICATE:
        if msg.reject_index <= pr.match:
            return
    elif msg.reject_index != pr.next - 1:
        return
    hint = msg.conflict_index
    if msg.conflict_term > 0:
        last_of_term = s.raft_log.last_index_of_term(msg.conflict_term)
        if last_of_term > 0:
            hint = last_of_term + 1
    probing, previous = pr.state is ProgressState.PROBE, pr.next
    pr.become_probe()
    pr.next = max(pr.match + 1, min(hint, msg.reject_index))
    log.debug("%s: %s rejected index %s, probing from %s", s.id, peer, msg.reject_index, pr.next)
    if probing and pr.next == previous:
        # It refused the very probe we would send again: it holds less than it once
        # acknowledged (a lost or restored disk). Ask again at the next heartbeat, not
        # at once: an immediate resend is a reject/probe storm at network speed.
        pr.paused = True
        return
    send_append(s, peer, pr)


# --------------------------------------------------------------------- follower side


def handle_append_entries(s: RaftState, msg: AppendEntries) -> None:
    """§5.3: consistency check, keep a matching prefix, truncate only a conflict."""
    rlog = s.raft_log
    prev = msg.prev_log_index
    ents = msg.entries
    base = rlog.first_index - 1
    if prev < base:
        # Compacted here, so committed, so the leader holds the same entries there: skip
        # to our first index (§5.3's check at the snapshot's index always passes).
        skip = base - prev
        if skip >= len(ents):
            _ack(s, msg.sender, prev + len(ents), msg.read_seq)
            return
        if ents[skip - 1].term != rlog.prev_term:
            log.error("%s: leader %s conflicts with compacted index %s", s.id, msg.sender, base)
            return
        ents = ents[skip:]
        prev = base
    elif prev > rlog.last_index or rlog.term(prev) != msg.prev_log_term:
        if prev > rlog.last_index:
            conflict_term, conflict_index = 0, rlog.last_index + 1
        else:
            conflict_term = rlog.term(prev)
            if prev < rlog.first_index:
                conflict_index = s.commit + 1
            else:
                conflict_index = max(rlog.first_index_of_run(prev), s.commit + 1)
        s.send(
            new_append_reply(
                incarnation=s.incarnation,
                term=s.term,
                sender=s.id,
                recipient=msg.sender,
                success=False,
                match_index=0,
                reject_index=prev,
                conflict_term=conflict_term,
                conflict_index=conflict_index,
                read_seq=msg.read_seq,
            )
        )
        return
    last_new = prev + len(ents)
    if ents:
        pos = 0
        overlap = min(rlog.last_index, last_new) - prev
        while pos < overlap and rlog.term(prev + 1 + pos) == ents[pos].term:
            pos += 1  # already held: a re-delivered prefix is never truncated
        if pos < len(ents):
            first_new = prev + 1 + pos
            if first_new <= rlog.last_index:
                if first_new <= s.commit:
                    log.error(
                        "%s: leader %s conflicts with committed index %s; ignoring",
                        s.id,
                        msg.sender,
                        first_new,
                    )
                    return
                s.truncate(first_new)
                membership.truncated(s, first_new)
            rlog.append(ents[pos:])
            membership.appended(s, ents[pos:])
    applying.commit_to(s, min(msg.leader_commit, last_new))
    _ack(s, msg.sender, last_new, msg.read_seq)


def _ack(s: RaftState, leader: str, match: int, read_seq: int) -> None:
    s.send(
        new_append_reply(
            incarnation=s.incarnation,
            term=s.term,
            sender=s.id,
            recipient=leader,
            success=True,
            match_index=match,
            reject_index=0,
            conflict_term=0,
            conflict_index=0,
            read_seq=read_seq,
        )
    )


def handle_install_snapshot(s: RaftState, msg: InstallSnapshot) -> None:
    """A chunk of the leader's snapshot (see :mod:`~raftmq.core.snapshots`)."""
    snapshots.handle_install_snapshot(s, msg)
