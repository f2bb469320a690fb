"""What a leader knows about each follower's log (etcd's Progress)."""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from raftmq.core.types import LogRead, ProgressView, Snapshot


class ProgressState(StrEnum):
    """How the leader replicates to one follower."""

    PROBE = "probe"  # one AppendEntries per heartbeat until the follower's log matches
    REPLICATE = "replicate"  # optimistic pipelining within the inflight window
    SNAPSHOT = "snapshot"  # the entries it needs are compacted: send a snapshot in chunks


class Progress:
    """Replication state of one follower, kept by the leader for its term only.

    Invariants: match <= sent; match < next; match never decreases; in PROBE
    ``inflight`` is empty; in REPLICATE ``inflight`` holds ascending last indexes of
    unacknowledged sends; in SNAPSHOT ``pending`` is the snapshot being sent and
    snap_acked <= snap_sent <= its size, otherwise ``pending`` is None.
    """

    __slots__ = (
        "inflight",
        "match",
        "match_at_heartbeat",
        "next",
        "paused",
        "pending",
        "read",
        "read_acked",
        "recent_active",
        "sent",
        "snap_acked",
        "snap_acked_at_heartbeat",
        "snap_reported",
        "snap_sent",
        "stalled_heartbeats",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0  # highest index known to match the leader's log
        # Highest index any AppendEntries of this term told the follower about (its
        # prev_log_index + entries): no honest reply names a higher one.
        self.sent = 0
        self.next = next_index  # next index to send
        self.state = ProgressState.PROBE  # a new leader knows nothing: probe first
        self.paused = False  # PROBE: a probe is outstanding, wait for a reply or heartbeat
        self.inflight: deque[int] = deque()  # REPLICATE: last index of each unacked send
        self.recent_active = False  # heard from the follower since the last quorum check
        self.read: LogRead | None = None  # outstanding storage read for this follower
        self.read_acked = 0  # highest read round the follower answered in this term
        self.match_at_heartbeat = 0  # match seen at the previous heartbeat (stall detection)
        self.stalled_heartbeats = 0  # heartbeats in a row with inflight sends and no progress
        self.pending: Snapshot | None = None  # SNAPSHOT: the snapshot being sent
        self.snap_sent = 0  # SNAPSHOT: bytes of it sent (the next chunk starts here)
        self.snap_acked = 0  # SNAPSHOT: most bytes the follower said it holds
        self.snap_reported = 0  # SNAPSHOT: bytes it held by its latest reply (may go back)
        self.snap_acked_at_heartbeat = 0  # SNAPSHOT: snap_acked at the previous heartbeat

    def become_probe(self) -> None:
        """Fall back to probing from match + 1 (after a rejection, a stall or a snapshot)."""
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.paused = False
        self.inflight.clear()
        self.stalled_heartbeats = 0
        self.pending = None

    def become_snapshot(self, snapshot: Snapshot) -> None:
        """The follower needs compacted entries: send ``snapshot`` from its first byte (or
        from where the follower says it is, once it answers)."""
        self.state = ProgressState.SNAPSHOT
        self.paused = False
        self.inflight.clear()
        self.stalled_heartbeats = 0
        self.pending = snapshot
        self.snap_sent = self.snap_acked = self.snap_reported = 0
        self.snap_acked_at_heartbeat = 0
        if snapshot.index > self.sent:
            self.sent = snapshot.index  # a reply may now name it

    def become_replicate(self) -> None:
        """The follower's log matches up to ``match``: pipeline from there."""
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.paused = False
        self.inflight.clear()
        self.stalled_heartbeats = 0
        self.pending = None

    def free_up_to(self, index: int) -> None:
        """Forget inflight sends acknowledged by a reply matching ``index``."""
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()

    def view(self) -> ProgressView:
        """A read-only snapshot."""
        return ProgressView(self.match, self.next, self.state.value, self.recent_active)
