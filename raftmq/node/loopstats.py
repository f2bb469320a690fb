"""What the node loop measures about itself, for metrics (:mod:`raftmq.node.metrics`).

Only the loop task writes these, with a few integer additions per event and no lock:
a save costs two clock reads and one bisect into fixed buckets; a Raft message one dict
addition keyed by its class. The metrics collector copies them on the node's event loop
at scrape time; nothing here imports prometheus_client.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Seconds: an SQLite save with synchronous=FULL takes about a millisecond on an SSD, a
# Postgres one a few; anything near an election timeout (0.5 s by default) is trouble.
SAVE_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Durations:
    """Counts of durations per bucket (a histogram without prometheus_client's locks)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = SAVE_BUCKETS) -> None:
        self.bounds = bounds  # upper bounds (inclusive), ascending; +Inf is implied
        # Invariant: len(counts) == len(bounds) + 1; counts[i] holds bounds[i-1] < d <= bounds[i]
        # (not cumulative); the last one holds what exceeds every bound.
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0  # sum of the observed seconds

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last (the Prometheus histogram form)."""
        pairs = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            pairs.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return pairs

    def copy(self) -> Durations:
        """An independent copy (a scrape's snapshot)."""
        other = Durations(self.bounds)
        other.counts = list(self.counts)
        other.total = self.total
        return other


@dataclass(slots=True)
class LoopStats:
    """The loop's own measurements; written by the loop task only."""

    proposals: deque[Any]  # the loop's queued writes (not yet proposed)
    pending: dict[int, Any]  # the loop's proposed writes awaiting their commit
    running: bool = False  # True from the loop's start until stop is asked or it ends
    save_seconds: Durations = field(default_factory=Durations)  # each save, retries included
    # Raft messages handed to the transport / accepted from it, by message class
    sent: dict[type, int] = field(default_factory=dict)
    received: dict[type, int] = field(default_factory=dict)
    leader_changes: int = 0  # (term, leader) pairs seen with a known leader, since start
    last_leadership: tuple[int, str] | None = None  # the last (term, leader) counted
    # Follower: the highest commit index a leader announced (its AppendEntries), which
    # this node's own commit index trails until its log has caught up.
    leader_commit: int = 0

    @property
    def pending_writes(self) -> int:
        """Writes queued or proposed on this node whose outcome is not known yet."""
        return len(self.proposals) + len(self.pending)

    def count_sent(self, messages: list[Any]) -> None:
        """Count ``messages`` by class as handed to the transport."""
        sent = self.sent
        for message in messages:
            kind = type(message)
            sent[kind] = sent.get(kind, 0) + 1

    def heard_commit(self, leader_commit: int) -> None:
        """Note the commit index announced by the leader (commit indexes never go back)."""
        if leader_commit > self.leader_commit:
            self.leader_commit = leader_commit

    def saw_leader(self, term: int, leader_id: str | None) -> None:
        """Count a leadership change when ``(term, leader_id)`` names a new known leader."""
        if leader_id is not None and self.last_leadership != (term, leader_id):
            self.last_leadership = (term, leader_id)
            self.leader_changes += 1


def clock() -> float:
    """The clock save durations are measured with (monotonic, sub-microsecond)."""
    return time.perf_counter()
