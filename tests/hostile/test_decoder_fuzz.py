"""Every decoder of bytes from the broker, fed arbitrary bytes: a clean rejection (a
raftmq exception, or the documented result) and never another exception.

A short run in ``make test``; ``make fuzz`` sets RAFTMQ_FUZZ_EXAMPLES for a long one.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from typing import Any

import aiormq.abc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import frame as pamqp_frame
from pamqp.commands import Basic
from pamqp.exceptions import UnmarshalingException
from pamqp.header import ContentHeader
from pydantic import ValidationError

from raftmq._amqp.guard import install_header_guard
from raftmq.client.committed import parse_delivered
from raftmq.errors import InvalidEnvelope, MalformedMessage
from raftmq.protocol.codec import RAFT_MESSAGE_TYPES, Envelope, decode
from raftmq.protocol.receipts import batch_outcomes
from raftmq.protocol.record import Record, decode_batch
from raftmq.protocol.requests import NodeStatus, WriteReply
from raftmq.protocol.watermark import decode_watermark
from raftmq.services.replay import ReplayRequest
from raftmq.services.write_rules import BadWrite, WriteRules

FUZZ = settings(
    max_examples=int(os.environ.get("RAFTMQ_FUZZ_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.too_slow],
    deadline=None,
)
_json_like = st.one_of(
    st.binary(max_size=400),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    ).map(lambda v: repr(v).replace("'", '"').replace("None", "null").encode()),
    st.just(b"[" * 3000),
)


def _clean(call: Callable[[], Any], *allowed: type[BaseException]) -> None:
    with contextlib.suppress(*allowed):
        call()


@FUZZ
@given(st.sampled_from([*sorted(RAFT_MESSAGE_TYPES), "x", ""]), _json_like)
def test_raft_messages(kind: str, body: bytes) -> None:
    envelope = Envelope(body=body, type=kind, cluster="C")
    _clean(
        lambda: decode(envelope, cluster="C", recipient="n1", max_bytes=1 << 20), InvalidEnvelope
    )


@FUZZ
@given(_json_like)
def test_records_batches_and_watermarks(data: bytes) -> None:
    _clean(lambda: Record.decode(data), MalformedMessage)
    _clean(lambda: decode_batch(data), MalformedMessage)
    watermark = decode_watermark(data)
    assert watermark is None or isinstance(watermark, int)
    rules = WriteRules(1 << 20)
    _clean(lambda: rules.from_batch(data), BadWrite)
    _clean(lambda: rules.from_batch(b"\x01" + struct.pack(">I", len(data)) + data), BadWrite)


@FUZZ
@given(_json_like, st.sampled_from(["ok", "error", None]), st.lists(st.integers(1, 9), max_size=3))
def test_receipts(body: bytes, status: str | None, seqs: list[int]) -> None:
    _clean(lambda: batch_outcomes(body, status, seqs), ValueError)


@FUZZ
@given(_json_like)
def test_request_answers_and_replay_requests(body: bytes) -> None:
    _clean(lambda: WriteReply.model_validate_json(body), ValidationError)
    _clean(lambda: NodeStatus.model_validate_json(body), ValidationError)
    _clean(lambda: ReplayRequest.model_validate_json(body), ValidationError)


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=40))
def test_committed_messages_from_raw_header_frames(properties: bytes, body: bytes) -> None:
    """A content header of arbitrary property bytes, as the broker would hand it over:
    the guarded decode never raises for a header with a body size, and the Subscriber's
    parser refuses what is not a committed message with MalformedMessage."""
    install_header_guard()
    payload = struct.pack(">HHQ", 60, 0, len(body)) + properties
    raw = struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"
    try:
        _, _, header = pamqp_frame.unmarshal(raw)
    except UnmarshalingException:
        raise AssertionError("the guard let a header with a body size fail") from None
    assert isinstance(header, ContentHeader) and header.body_size == len(body)
    delivered = aiormq.abc.DeliveredMessage(
        delivery=Basic.Deliver(consumer_tag="t", delivery_tag=1, exchange="", routing_key="q"),
        header=header,
        body=body,
        channel=None,  # type: ignore[arg-type]  # never read by the parser
    )
    _clean(lambda: parse_delivered(delivered), MalformedMessage)
    rules = WriteRules(1 << 20)
    props = header.properties
    _clean(
        lambda: rules.from_properties(body, props.headers, props.content_type, props.message_id),
        BadWrite,
    )
