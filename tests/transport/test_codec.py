"""The wire codec: round trips of every Raft message and the reasons for rejection."""

from __future__ import annotations

import pytest

from raftmq.core.messages import (
    AppendEntriesReply,
    Message,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.errors import DropReason, InvalidEnvelope, MalformedMessage
from raftmq.protocol.codec import RAFT_MESSAGE_TYPES, Envelope, decode, encode
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
]


def test_every_message_type_is_known() -> None:
    assert {m.type for m in MESSAGES} == RAFT_MESSAGE_TYPES


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
def test_round_trip(message: Message) -> None:
    envelope = encode(message, "c1", reply_to="q", correlation_id="x")
    assert (envelope.type, envelope.cluster) == (message.type, "c1")
    assert decode(envelope, cluster="c1", recipient="b", max_bytes=1 << 20) == message


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
