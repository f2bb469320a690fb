"""The record layout and the batch framing (docs/protocol.md §3 and §8): round trips, and
every malformed input refused with MalformedMessage, never another exception."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftmq.errors import MalformedMessage
from raftmq.protocol.record import MAX_BATCH_RECORDS, Record, decode_batch, encode_batch

_values = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans())
_records = st.builds(
    Record,
    body=st.binary(max_size=200),
    content_type=st.none() | st.text(max_size=20),
    headers=st.dictionaries(st.text(max_size=10), _values, max_size=4),
    message_id=st.none() | st.text(max_size=20),
)


@given(st.lists(_records, max_size=20))
def test_batch_round_trip(records: list[Record]) -> None:
    body = encode_batch([r.encode() for r in records])
    assert [Record.decode(p) for p in decode_batch(body)] == records


@given(st.binary(max_size=300))
def test_garbage_is_refused_cleanly(garbage: bytes) -> None:
    """Any bytes either parse (and then re-encode to a valid form) or raise
    MalformedMessage: nothing else escapes to crash the ingest path."""
    try:
        parts = decode_batch(garbage)
    except MalformedMessage:
        parts = None
    if parts is not None:
        assert encode_batch(parts) == garbage
    try:
        record = Record.decode(garbage)
    except MalformedMessage:
        return
    assert Record.decode(record.encode()) == record


def test_empty_batch_has_no_records() -> None:
    assert decode_batch(b"") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\x00", "truncated record length"),
        (struct.pack(">I", 10) + b"abc", "claims 10 bytes"),
        (struct.pack(">I", 0) * (MAX_BATCH_RECORDS + 1), "more than"),
    ],
)
def test_broken_framing(body: bytes, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        decode_batch(body)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (b'{"seq":"7","pid":"p"}', "'seq' is not an integer"),
        (b'{"seq":true,"pid":"p"}', "'seq' is not an integer"),
        (b'{"pid":5,"seq":1}', "'pid' is not a string"),
        (b'{"ct":[1]}', "'ct' is not a string"),
        (b'{"h":[1,2]}', "'h' is not an object"),
        (b"[1]", "not an object"),
        (b"{", "not JSON"),
    ],
)
def test_record_meta_of_the_wrong_shape(meta: bytes, message: str) -> None:
    payload = struct.pack(">BI", 1, len(meta)) + meta + b"body"
    with pytest.raises(MalformedMessage, match=message):
        Record.decode(payload)
