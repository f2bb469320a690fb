"""Snapshots (§7; thesis ch. 5): compaction, and InstallSnapshot on both sides.

The host (a driver) takes a snapshot of its state machine at an applied index and hands
the bytes to :func:`take_snapshot`; the core keeps the latest snapshot and forgets the log
up to ``trailing_entries`` before it (hashicorp's TrailingLogs). A leader whose follower
needs compacted entries sends that snapshot in chunks of at most
``snapshot_chunk_bytes``, at most ``max_inflight`` chunks ahead of what the follower
acknowledged (:class:`~raftmq.core.progress.Progress` in SNAPSHOT, as in etcd-io/raft).
The follower keeps the bytes it holds in a row; each reply says how many, so a lost,
duplicated or reordered chunk costs a resend, never a wrong state. Once it holds them
all it hands the snapshot to its driver in ``Ready.snapshot`` (installed atomically:
state, log replaced, hard state) and continues from ``snapshot.index + 1``.

A leader that hears of no progress for :data:`SNAPSHOT_STALL_HEARTBEATS` heartbeats
resends from where the follower's latest reply said it was (a follower that restarted
says 0: the transfer starts over; one that did not resumes).
"""

from __future__ import annotations

import logging

from raftmq.core import applying, membership
from raftmq.core.messages import InstallSnapshot, InstallSnapshotReply
from raftmq.core.progress import Progress, ProgressState
from raftmq.core.state import RaftState
from raftmq.core.types import Membership, Snapshot
from raftmq.errors import ConfigError

log = logging.getLogger("raftmq.core.snapshots")

SNAPSHOT_STALL_HEARTBEATS = 2
"""Heartbeats in a row without acknowledged bytes before a transfer is resent."""

SNAPSHOT_WINDOW_BYTES = 8 << 20
"""Snapshot bytes in flight past what the follower acknowledged, at most (one chunk at
least). Raft messages live one election timeout on the broker: a window of
``max_inflight`` 1 MiB chunks (64 MiB) queued more than a follower decodes in that time,
the rest expired, and every stall cost two heartbeats and a resend -- a 100 MB state
moved at 1-2 MB/s (benchmarks/retention.py)."""


# --------------------------------------------------------------------- the host's side


def take_snapshot(s: RaftState, index: int, data: bytes) -> Snapshot:
    """The state machine's ``data`` at ``index`` (<= applied): keep it as the latest
    snapshot and compact the log up to ``index - trailing_entries``."""
    if not 1 <= index <= s.applied:
        raise ValueError(f"a snapshot at {index} must cover applied entries (applied {s.applied})")
    current = s.snapshot
    if current is not None and index <= current.index:
        return current
    term = s.raft_log.term(index)
    if term == 0:  # pragma: no cover - applied entries after the snapshot are in the log
        raise ValueError(f"no term known at {index}")
    m = membership.at(s, index)
    snapshot = _snapshot(index, term, m, data)
    s.snapshot = snapshot
    s.raft_log.compact(index - s.cfg.trailing_entries)
    membership.compacted(s, s.raft_log.first_index)
    return snapshot


# --------------------------------------------------------------------- leader side


def start(s: RaftState, peer: str, pr: Progress) -> None:
    """``peer`` needs entries before our first index: send it our snapshot."""
    snapshot = s.snapshot
    if snapshot is None:  # pragma: no cover - the log is compacted only by a snapshot
        raise RuntimeError("compacted log without a snapshot")
    log.debug(
        "%s: %s needs %s < first index; sending snapshot %s", s.id, peer, pr.next, snapshot.index
    )
    pr.become_snapshot(snapshot)
    send_chunks(s, peer, pr)


def send_chunks(s: RaftState, peer: str, pr: Progress) -> None:
    """Send chunks from ``snap_sent`` while the window (max_inflight chunks past what the
    follower acknowledged, at most SNAPSHOT_WINDOW_BYTES) allows; ``paused`` once the last
    chunk is out."""
    snapshot = pr.pending
    if snapshot is None or pr.paused:
        return
    chunk = s.cfg.snapshot_chunk_bytes
    window = max(chunk, min(s.cfg.max_inflight * chunk, SNAPSHOT_WINDOW_BYTES))
    data = snapshot.data
    size = len(data)
    while pr.snap_sent - pr.snap_acked < window:
        offset = pr.snap_sent
        if offset >= size > 0:
            pr.paused = True  # all of it is out (a chunk past the end would be invalid)
            return
        piece = data[offset : offset + chunk]
        done = offset + len(piece) == size
        s.send(
            InstallSnapshot(
                term=s.term,
                sender=s.id,
                recipient=peer,
                last_index=snapshot.index,
                last_term=snapshot.term,
                voters=snapshot.voters,
                learners=snapshot.learners,
                incarnations=snapshot.incarnations,
                size=size,
                offset=offset,
                data=piece,
                done=done,
                leader_commit=s.commit,
            )
        )
        pr.snap_sent = offset + len(piece)
        if done:
            pr.paused = True
            return


def heartbeat(s: RaftState, peer: str, pr: Progress) -> None:
    """A heartbeat in SNAPSHOT: resend from the follower's last word after a stall."""
    if pr.snap_acked == pr.snap_acked_at_heartbeat:
        pr.stalled_heartbeats += 1
    else:
        pr.stalled_heartbeats = 0
    pr.snap_acked_at_heartbeat = pr.snap_acked
    if pr.stalled_heartbeats >= SNAPSHOT_STALL_HEARTBEATS:
        pr.stalled_heartbeats = 0
        pr.snap_sent = pr.snap_acked = pr.snap_reported
        pr.paused = False
    send_chunks(s, peer, pr)


def progress_report(s: RaftState, peer: str, pr: Progress, msg: InstallSnapshotReply) -> None:
    """The follower holds ``msg.offset`` bytes of the transfer: move the window."""
    snapshot = pr.pending
    if pr.state is not ProgressState.SNAPSHOT or snapshot is None:
        return
    if (msg.last_index, msg.last_term) != (snapshot.index, snapshot.term):
        return  # about another transfer
    if msg.offset > len(snapshot.data):
        log.warning("%s: %s reports offset %s past the snapshot", s.id, peer, msg.offset)
        return
    pr.snap_reported = msg.offset
    if msg.offset > pr.snap_acked:
        pr.snap_acked = msg.offset
        if pr.snap_sent < pr.snap_acked:
            pr.snap_sent = pr.snap_acked
    send_chunks(s, peer, pr)


# --------------------------------------------------------------------- follower side


def handle_install_snapshot(s: RaftState, msg: InstallSnapshot) -> None:
    """Take one chunk from the leader of our term; install the snapshot once complete."""
    index, term = msg.last_index, msg.last_term
    rlog = s.raft_log
    if index <= s.commit:
        _reply(s, msg, 0, done=True)  # committed here already: our log matches up to it
        return
    if index <= rlog.last_index and rlog.term(index) == term:
        # §7: our log holds the snapshot's last entry; keep what follows it.
        applying.commit_to(s, index)
        _reply(s, msg, 0, done=True)
        return
    try:
        m = membership.membership(msg.voters, msg.learners, msg.incarnations)
    except ConfigError as exc:
        log.error(
            "%s: snapshot from %s has a bad configuration (%s); dropped", s.id, msg.sender, exc
        )
        return
    key = (msg.sender, index, term, msg.size)
    if key != s.incoming_key:
        if msg.offset != 0:
            _reply(s, msg, 0, done=False)  # we hold nothing of it: start over
            return
        s.incoming_key = key
        s.incoming = bytearray()
    buf = s.incoming
    if msg.offset == len(buf):
        buf += msg.data
    # else a duplicate (behind) or a gap (ahead): our reply says where we are
    if len(buf) < msg.size:
        _reply(s, msg, len(buf), done=False)
        return
    _install(s, _snapshot(index, term, m, bytes(buf)))
    _reply(s, msg, 0, done=True)


def _snapshot(index: int, term: int, m: Membership, data: bytes) -> Snapshot:
    """The snapshot at ``index`` of the state ``data``, with configuration ``m``."""
    return Snapshot(
        index=index,
        term=term,
        voters=m.voters,
        data=data,
        learners=m.learners,
        incarnations=m.incarnations,
    )


def _install(s: RaftState, snapshot: Snapshot) -> None:
    """Replace the log by ``snapshot`` (index > commit) and hand it to the driver."""
    log.info("%s: installing snapshot at %s (term %s)", s.id, snapshot.index, snapshot.term)
    s.raft_log.restore(snapshot.index, snapshot.term)
    membership.installed(s, snapshot.index, snapshot.membership)
    s.snapshot = snapshot
    s.pending_snapshot = snapshot
    s.commit = snapshot.index
    s.applied = snapshot.index  # the driver restores the state machine before applying on
    s.apply_buf.clear()
    s.apply_read = None  # an answer to it is now stale, and dropped
    s.stable_last = snapshot.index  # storage holds exactly the snapshot once it is saved
    s.pending_truncate = None  # the snapshot replaces the whole log
    s.trunc_since_ready = None
    s.incoming_key = None
    s.incoming = bytearray()


def _reply(s: RaftState, msg: InstallSnapshot, offset: int, *, done: bool) -> None:
    s.send(
        InstallSnapshotReply(
            incarnation=s.incarnation,
            term=s.term,
            sender=s.id,
            recipient=msg.sender,
            last_index=msg.last_index,
            last_term=msg.last_term,
            offset=offset,
            done=done,
        )
    )
