"""Every Raft message, one name per type, used everywhere (core, transport, tests).

All messages are frozen pydantic models with a literal ``type`` discriminator so
that the transport can decode any of them through :data:`MESSAGE_ADAPTER`.
``sender`` and ``recipient`` are node ids.

Everything here comes off the broker, so validation is where hostile values stop:
terms are at most :data:`~raftmq.core.types.MAX_TERM` (one increment still fits a
signed 64-bit column), indexes at most :data:`~raftmq.core.types.MAX_INDEX`, node ids
match :data:`~raftmq.core.types.NODE_ID_PATTERN`, an AppendEntries holds at most
:data:`MAX_APPEND_ENTRIES` contiguous entries of non-decreasing terms no newer than the
message, an InstallSnapshot carries at most :data:`MAX_SNAPSHOT_CHUNK` bytes of a snapshot
of at most :data:`MAX_SNAPSHOT_BYTES` and names at most :data:`MAX_VOTERS` distinct voters.
A message that breaks any of these never reaches the core.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from raftmq.core.types import (
    INCARNATION_PATTERN,
    MAX_INDEX,
    MAX_TERM,
    Entry,
    Incarnation,
    Index,
    NodeId,
    Term,
)

MAX_APPEND_ENTRIES = 65_536
"""Most entries one AppendEntries may carry (``RaftConfig.max_batch_entries`` stays below)."""

MAX_SNAPSHOT_CHUNK = 4 * 1024 * 1024
"""Most snapshot bytes one InstallSnapshot may carry (``RaftConfig.snapshot_chunk_bytes``
stays below; base64 in JSON makes it about 5.6 MB on the wire)."""

MAX_SNAPSHOT_BYTES = 2**40
"""Largest snapshot a transfer may announce (1 TiB): offsets stay far inside 64 bits."""

MAX_VOTERS = 255
"""Most voters a configuration in a message may name."""

SnapshotIndex = Annotated[int, Field(ge=1, le=MAX_INDEX)]
"""The index a snapshot covers up to: never 0 (nothing to cover)."""

SnapshotTerm = Annotated[int, Field(ge=1, le=MAX_TERM)]
"""The term of a snapshot's last entry: never 0."""

SnapshotOffset = Annotated[int, Field(ge=0, le=MAX_SNAPSHOT_BYTES)]
"""A byte position in a snapshot."""

Pin = tuple[NodeId, Annotated[str, Field(pattern=INCARNATION_PATTERN)]]
"""A configuration's (member, incarnation) pair."""


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    term: Term  # sender's current term (for pre-vote requests: the term it would campaign in)
    sender: NodeId  # node id of the sender
    recipient: NodeId  # node id of the recipient


class RequestVote(_Base):
    """Candidate asks for a vote (§5.2), or a pre-candidate asks whether it could win (§9.6)."""

    type: Literal["request_vote"] = "request_vote"
    last_log_index: Index  # index of the candidate's last entry (§5.4.1)
    last_log_term: Term  # term of the candidate's last entry (§5.4.1); <= term
    pre_vote: bool = False  # a pre-vote: grants change no state
    # Campaign started by a TimeoutNow: passes the lease of a node that knows this
    # candidate was named by the leader it follows (see raftmq.core.votes).
    transfer: bool = False
    incarnation: Incarnation = ""  # the candidate's database (raftmq.core.membership)

    @model_validator(mode="after")
    def _candidate_log_is_possible(self) -> RequestVote:
        # A log's last term is never newer than its owner's term, and only an empty log
        # has last term 0.
        if self.last_log_term > self.term:
            raise ValueError("last_log_term is newer than the candidate's term")
        if (self.last_log_index == 0) != (self.last_log_term == 0):
            raise ValueError("last_log_term is 0 exactly when the log is empty")
        return self


class RequestVoteReply(_Base):
    """Answer to :class:`RequestVote`."""

    type: Literal["request_vote_reply"] = "request_vote_reply"
    granted: bool  # vote (or pre-vote) granted
    pre_vote: bool = False  # answers a pre-vote
    incarnation: Incarnation = ""  # the voter's database (raftmq.core.membership)


class AppendEntries(_Base):
    """Leader replicates entries and heartbeats (§5.3)."""

    type: Literal["append_entries"] = "append_entries"
    prev_log_index: Index  # index of the entry immediately preceding `entries`
    prev_log_term: Term  # term of the entry at prev_log_index; <= term
    # entries to store (empty for a heartbeat); indexes prev_log_index + 1.., terms
    # non-decreasing from prev_log_term and never newer than `term`
    entries: Annotated[tuple[Entry, ...], Field(max_length=MAX_APPEND_ENTRIES)] = ()
    leader_commit: Index  # leader's commit index
    # The leader's read round when it sent this (ReadIndex, thesis §6.4); echoed in the reply.
    read_seq: Index = 0

    @model_validator(mode="after")
    def _entries_continue_prev(self) -> AppendEntries:
        # What the follower's log code assumes of a leader's batch (§5.3): checked here,
        # once, so that a malformed batch is a counted drop and never an exception later.
        prev, last_term = self.prev_log_index, self.prev_log_term
        if last_term > self.term or (prev == 0) != (last_term == 0):
            raise ValueError("prev_log_term is impossible for prev_log_index and term")
        if prev + len(self.entries) > MAX_INDEX:
            raise ValueError("entries run past the highest index")
        index = prev
        for ent in self.entries:
            index += 1
            if ent.index != index or ent.term < last_term:
                raise ValueError("entries are not contiguous with non-decreasing terms")
            last_term = ent.term
        if last_term > self.term:
            raise ValueError("an entry is newer than the leader's term")
        return self


class AppendEntriesReply(_Base):
    """Answer to :class:`AppendEntries`.

    On success ``match_index`` is the highest index known to match the leader's log.
    On rejection ``reject_index`` is the prev_log_index that failed and the follower
    gives a hint for fast backtracking: ``conflict_term`` is the term it holds at
    reject_index (0 when its log is too short) and ``conflict_index`` the first index
    it holds for that term (or its last index + 1 when the log is too short).
    """

    type: Literal["append_entries_reply"] = "append_entries_reply"
    success: bool  # consistency check passed and entries stored
    match_index: Index = 0  # on success: last index that matches the leader
    reject_index: Index = 0  # on failure: the prev_log_index rejected
    conflict_term: Term = 0  # on failure: follower's term at reject_index, 0 if none
    conflict_index: Index = 0  # on failure: first index of conflict_term, or last index + 1
    read_seq: Index = 0  # the read round of the AppendEntries this answers
    incarnation: Incarnation = ""  # the follower's database (raftmq.core.membership)


class TimeoutNow(_Base):
    """Leader hands leadership to ``transferee`` (leadership transfer, thesis §3.10).

    The transferee (``None`` means the recipient) campaigns at once; every other
    recipient learns that a transfer vote from the transferee for the next term was
    asked for by its leader and may pass its lease (see :mod:`raftmq.core.votes`).
    """

    type: Literal["timeout_now"] = "timeout_now"
    transferee: NodeId | None = None  # who must campaign; None: the recipient


class InstallSnapshot(_Base):
    """Leader sends a follower one chunk of its snapshot (§7; thesis §5.2; hashicorp's
    chunked InstallSnapshot), when the entries the follower needs are compacted away.

    A transfer is named by (sender, last_index, last_term, size); the follower keeps the
    bytes it has and says how far it got, so a lost, duplicated or reordered chunk costs a
    resend and never a wrong state.
    """

    type: Literal["install_snapshot"] = "install_snapshot"
    last_index: SnapshotIndex  # the snapshot replaces the log up to this index
    last_term: SnapshotTerm  # term of the entry at last_index; <= term
    voters: Annotated[tuple[NodeId, ...], Field(min_length=1, max_length=MAX_VOTERS)]
    learners: Annotated[tuple[NodeId, ...], Field(max_length=MAX_VOTERS)] = ()
    # the configuration's pinned incarnations (members only)
    incarnations: Annotated[tuple[Pin, ...], Field(max_length=MAX_VOTERS)] = ()
    size: SnapshotOffset  # total bytes of the snapshot's state
    offset: SnapshotOffset  # position of `data` in the state
    data: Annotated[bytes, Field(max_length=MAX_SNAPSHOT_CHUNK)] = b""  # the chunk
    done: bool  # this chunk ends the state: offset + len(data) == size
    leader_commit: Index  # leader's commit index (>= last_index)

    @model_validator(mode="after")
    def _chunk_fits(self) -> InstallSnapshot:
        if self.last_term > self.term:
            raise ValueError("last_term is newer than the leader's term")
        if self.leader_commit < self.last_index:
            raise ValueError("a snapshot covers uncommitted entries")
        end = self.offset + len(self.data)
        if end > self.size:
            raise ValueError("chunk runs past the snapshot's size")
        if self.done != (end == self.size):
            raise ValueError("done is set exactly on the chunk that ends the snapshot")
        if not self.data and self.size > 0:
            raise ValueError("an empty chunk of a non-empty snapshot")
        if len(set(self.voters)) != len(self.voters):
            raise ValueError("voters contain duplicates")
        if len(set(self.learners)) != len(self.learners) or set(self.learners) & set(self.voters):
            raise ValueError("learners contain duplicates or voters")
        pinned = [node for node, _ in self.incarnations]
        if len(set(pinned)) != len(pinned) or not set(pinned) <= {*self.voters, *self.learners}:
            raise ValueError("incarnations name a member twice or a non-member")
        return self


class InstallSnapshotReply(_Base):
    """Answer to :class:`InstallSnapshot`: how many bytes of that transfer the follower
    holds in a row (``offset``), or ``done`` once its log reaches ``last_index`` (installed,
    or already held)."""

    type: Literal["install_snapshot_reply"] = "install_snapshot_reply"
    last_index: SnapshotIndex  # the snapshot this answers
    last_term: SnapshotTerm  # its term
    offset: SnapshotOffset = 0  # bytes held: the next chunk wanted starts here
    done: bool = False  # the follower's log now matches up to last_index
    incarnation: Incarnation = ""  # the follower's database (raftmq.core.membership)


class ReadIndexRequest(_Base):
    """A follower asks the leader it follows for a read index on behalf of one of its
    reads (thesis §6.4; etcd's MsgReadIndex)."""

    type: Literal["read_index"] = "read_index"
    request_id: Index  # the follower's id of the read


class ReadIndexReply(_Base):
    """The leader's answer to :class:`ReadIndexRequest`, once a majority confirmed its
    leadership after the request: the follower's read waits until it applied ``index``."""

    type: Literal["read_index_reply"] = "read_index_reply"
    request_id: Index  # the id the follower asked with
    index: Index  # the read index: the leader's commit index when the read was confirmed


Message = Annotated[
    RequestVote
    | RequestVoteReply
    | AppendEntries
    | AppendEntriesReply
    | TimeoutNow
    | InstallSnapshot
    | InstallSnapshotReply
    | ReadIndexRequest
    | ReadIndexReply,
    Field(discriminator="type"),
]
"""Any Raft message."""

MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)
"""Validates/serialises any :data:`Message` (``validate_json`` / ``dump_json``)."""
