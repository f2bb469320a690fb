"""Sans-I/O Raft core: pure, deterministic, no asyncio, SQL or AMQP.

The core is stepped with messages (:meth:`RaftCore.step`) and logical ticks
(:meth:`RaftCore.tick`) and hands back, in one :class:`Ready`, what must be
persisted, sent and applied; :meth:`RaftCore.advance` says it was done.
"""

from raftmq.core.config import RaftConfig
from raftmq.core.messages import (
    MESSAGE_ADAPTER,
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    ReadIndexReply,
    ReadIndexRequest,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.core.raft import RaftCore
from raftmq.core.ready import Ready
from raftmq.core.types import (
    CoreStatus,
    ElectionCause,
    Entry,
    EntryKind,
    HardState,
    InitialState,
    LogRead,
    LogReadResult,
    ProgressView,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)

__all__ = [
    "MESSAGE_ADAPTER",
    "AppendEntries",
    "AppendEntriesReply",
    "CoreStatus",
    "ElectionCause",
    "Entry",
    "EntryKind",
    "HardState",
    "InitialState",
    "InstallSnapshot",
    "InstallSnapshotReply",
    "LogRead",
    "LogReadResult",
    "Message",
    "ProgressView",
    "RaftConfig",
    "RaftCore",
    "ReadIndexReply",
    "ReadIndexRequest",
    "ReadState",
    "Ready",
    "RequestVote",
    "RequestVoteReply",
    "Role",
    "Snapshot",
    "SoftState",
    "TimeoutNow",
]
