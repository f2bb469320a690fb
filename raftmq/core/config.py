"""Core configuration: defaults and validation in one place (hashicorp's DefaultConfig idea).

Time in the core is counted in logical ticks. A real node calls ``tick()`` every
``tick_interval`` seconds (node setting, default 0.05 s), so the defaults below mean
an election timeout of 0.5-1.0 s and a heartbeat every 0.1 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from raftmq.core.messages import MAX_APPEND_ENTRIES, MAX_SNAPSHOT_CHUNK
from raftmq.core.types import NODE_ID_PATTERN
from raftmq.errors import ConfigError

DEFAULT_ELECTION_TICKS = 10
DEFAULT_HEARTBEAT_TICKS = 2
DEFAULT_MAX_BATCH_ENTRIES = 512
DEFAULT_MAX_BATCH_BYTES = 1 << 20
DEFAULT_MAX_INFLIGHT = 64
# Every cached entry is three objects the garbage collector walks on each full collection:
# with 16,384 those pauses took 10-60 ms on a node under load, with 4,096 2-8 ms. Older
# entries (a follower far behind) are read from storage in batches.
DEFAULT_MAX_CACHED_ENTRIES = 4_096
# hashicorp/raft's TrailingLogs: a follower a little behind catches up from the log, not
# from a snapshot.
DEFAULT_TRAILING_ENTRIES = 10_240
DEFAULT_SNAPSHOT_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Configuration of one :class:`~raftmq.core.raft.RaftCore`.

    Invariant (checked by :meth:`validate`): at least one voter, every id a valid node id
    (so that every message the core builds passes validation), 0 < heartbeat_ticks <
    election_ticks, all limits positive, max_batch_entries <= MAX_APPEND_ENTRIES,
    snapshot_chunk_bytes <= MAX_SNAPSHOT_CHUNK, trailing_entries >= 0.
    """

    node_id: str  # this node's id
    # The voter set the cluster starts with (the seed; later configurations come from
    # the log, raftmq.core.membership). A node outside it waits to be added.
    voters: tuple[str, ...]
    election_ticks: int = DEFAULT_ELECTION_TICKS  # base election timeout; randomized in [e, 2e)
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS  # leader heartbeat interval
    pre_vote: bool = True  # thesis §9.6
    check_quorum: bool = True  # leader steps down without a majority for an election timeout
    max_batch_entries: int = DEFAULT_MAX_BATCH_ENTRIES  # entries per AppendEntries
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES  # payload bytes per AppendEntries
    max_inflight: int = DEFAULT_MAX_INFLIGHT  # unacknowledged AppendEntries per follower
    max_cached_entries: int = DEFAULT_MAX_CACHED_ENTRIES  # applied entries kept in memory
    trailing_entries: int = DEFAULT_TRAILING_ENTRIES  # entries kept before a snapshot's index
    snapshot_chunk_bytes: int = DEFAULT_SNAPSHOT_CHUNK_BYTES  # bytes per InstallSnapshot

    def validate(self) -> RaftConfig:
        """Return self, or raise :class:`ConfigError` naming the first invalid field."""
        if not self.node_id:
            raise ConfigError("node_id must not be empty")
        if len(set(self.voters)) != len(self.voters):
            raise ConfigError(f"voters contain duplicates: {self.voters!r}")
        for voter in self.voters:
            if not re.fullmatch(NODE_ID_PATTERN, voter):
                raise ConfigError(f"voter id {voter!r} does not match {NODE_ID_PATTERN}")
        if not self.voters:
            raise ConfigError("voters must name at least one node")
        if self.heartbeat_ticks <= 0:
            raise ConfigError("heartbeat_ticks must be positive")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_ticks must be greater than heartbeat_ticks")
        limits = (
            "max_batch_entries",
            "max_batch_bytes",
            "max_inflight",
            "max_cached_entries",
            "snapshot_chunk_bytes",
        )
        for name in limits:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.trailing_entries < 0:
            raise ConfigError("trailing_entries must not be negative")
        if self.snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK:
            raise ConfigError(f"snapshot_chunk_bytes must be at most {MAX_SNAPSHOT_CHUNK}")
        if self.max_batch_entries > MAX_APPEND_ENTRIES:
            raise ConfigError(f"max_batch_entries must be at most {MAX_APPEND_ENTRIES}")
        return self
