"""The wire codec: round trips of every Raft message and the reasons for rejection."""

from __future__ import annotations

import pytest

from raftmq.core.messages import (
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    ReadIndexReply,
    ReadIndexRequest,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.errors import DropReason, InvalidEnvelope, MalformedMessage
from raftmq.protocol.codec import (
    RAFT_MESSAGE_TYPES,
    Envelope,
    decode,
    encode,
    snapshot_chunk_body_bytes,
)
from raftmq.protocol.names import inbox_queue

from .helpers import append, vote

MESSAGES: list[Message] = [
    vote("a", "b"),
    RequestVoteReply(term=3, sender="a", recipient="b", granted=False, pre_vote=True),
    append("a", "b", 4, data=b"\x00\xff binary"),
    AppendEntriesReply(
        term=3, sender="a", recipient="b", success=False, reject_index=9, conflict_term=2
    ),
    TimeoutNow(term=5, sender="a", recipient="b"),
    InstallSnapshot(
        term=5,
        sender="a",
        recipient="b",
        last_index=40,
        last_term=4,
        voters=("a", "b", "c"),
        size=12,
        offset=4,
        data=b"\x00\xff chunk",
        done=True,
        leader_commit=41,
    ),
    InstallSnapshotReply(term=5, sender="a", recipient="b", last_index=40, last_term=4, offset=7),
    ReadIndexRequest(term=5, sender="a", recipient="b", request_id=12),
    ReadIndexReply(term=5, sender="a", recipient="b", request_id=12, index=40),
]


def test_every_message_type_is_known() -> None:
    assert {m.type for m in MESSAGES} == RAFT_MESSAGE_TYPES


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
def test_round_trip(message: Message) -> None:
    envelope = encode(message, "c1", reply_to="q", correlation_id="x")
    assert (envelope.type, envelope.cluster) == (message.type, "c1")
    assert decode(envelope, cluster="c1", recipient="b", max_bytes=1 << 20) == message


def test_a_full_chunk_fits_its_bound() -> None:
    chunk = InstallSnapshot(
        term=5,
        sender="a" * 64,
        recipient="b" * 64,
        last_index=2**62,
        last_term=4,
        voters=tuple(f"{i:064d}" for i in range(255)),
        size=2**40,
        offset=2**40 - 100_000,
        data=bytes(range(256)) * 390 + b"abcd",
        done=False,
        leader_commit=2**62,
    )
    body = encode(chunk, "c1").body
    assert len(body) <= snapshot_chunk_body_bytes(len(chunk.data))
    assert decode(encode(chunk, "c1"), cluster="c1", recipient="b" * 64, max_bytes=len(body))


def test_rejection_is_a_malformed_message_with_a_reason() -> None:
    envelope = Envelope(b"{}", "append_entries", "other")
    with pytest.raises(MalformedMessage) as caught:
        decode(envelope, cluster="c1", recipient="b", max_bytes=1024)
    assert isinstance(caught.value, InvalidEnvelope)
    assert caught.value.reason is DropReason.WRONG_CLUSTER


def test_size_is_checked_before_parsing() -> None:
    envelope = Envelope(b"garbage" * 100, "append_entries", None)
    with pytest.raises(InvalidEnvelope) as caught:
        decode(envelope, cluster="c1", recipient="b", max_bytes=10)
    assert caught.value.reason is DropReason.OVERSIZED


def test_inbox_queue_name_is_the_public_protocol() -> None:
    assert inbox_queue("prod", "n2") == "raftmq.prod.node.n2"
