"""Every Raft message, one name per type, used everywhere (core, transport, tests).

All messages are frozen pydantic models with a literal ``type`` discriminator so
that the transport can decode any of them through :data:`MESSAGE_ADAPTER`.
``sender`` and ``recipient`` are node ids.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from raftmq.core.types import Entry


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    term: int  # sender's current term (for pre-vote requests: the term it would campaign in)
    sender: str  # node id of the sender
    recipient: str  # node id of the recipient


class RequestVote(_Base):
    """Candidate asks for a vote (§5.2), or a pre-candidate asks whether it could win (§9.6)."""

    type: Literal["request_vote"] = "request_vote"
    last_log_index: int  # index of the candidate's last entry (§5.4.1)
    last_log_term: int  # term of the candidate's last entry (§5.4.1)
    pre_vote: bool = False  # a pre-vote: grants change no state
    transfer: bool = False  # campaign started by leadership transfer (bypasses lease checks)


class RequestVoteReply(_Base):
    """Answer to :class:`RequestVote`."""

    type: Literal["request_vote_reply"] = "request_vote_reply"
    granted: bool  # vote (or pre-vote) granted
    pre_vote: bool = False  # answers a pre-vote


class AppendEntries(_Base):
    """Leader replicates entries and heartbeats (§5.3)."""

    type: Literal["append_entries"] = "append_entries"
    prev_log_index: int  # index of the entry immediately preceding `entries`
    prev_log_term: int  # term of the entry at prev_log_index
    entries: tuple[Entry, ...] = ()  # entries to store (empty for a heartbeat)
    leader_commit: int  # leader's commit index


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
    match_index: int = 0  # on success: last index that matches the leader
    reject_index: int = 0  # on failure: the prev_log_index rejected
    conflict_term: int = 0  # on failure: follower's term at reject_index, 0 if none
    conflict_index: int = 0  # on failure: first index of conflict_term, or last index + 1


class TimeoutNow(_Base):
    """Leader tells an up-to-date follower to campaign at once (leadership transfer, §3.10)."""

    type: Literal["timeout_now"] = "timeout_now"


Message = Annotated[
    RequestVote | RequestVoteReply | AppendEntries | AppendEntriesReply | TimeoutNow,
    Field(discriminator="type"),
]
"""Any Raft message."""

MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)
"""Validates/serialises any :data:`Message` (``validate_json`` / ``dump_json``)."""
