"""Hypothesis strategies for hostile writes: AMQP properties, header tables (nested, every
field type pamqp writes, huge, odd keys), bodies, and batches whose records carry
arbitrary JSON meta. One generator for the broker-free tests and the 3-node test.

:func:`expected_committed` says, from the documented rules alone (docs/protocol.md §3, §6),
what a subscriber must receive for a write the cluster accepted.
"""

from __future__ import annotations

import datetime
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from raftmq.protocol import names
from raftmq.protocol.limits import FRAME_MAX

_INT64 = st.integers(-(2**63), 2**63 - 1)
_odd_keys = st.sampled_from(
    ["", "raftmq-index", "raftmq-producer", "raftmq-seq", "x-death", "\x00", "é" * 127, "k" * 255]
)
_keys = st.one_of(st.text(max_size=12), _odd_keys).filter(lambda k: len(k.encode()) <= 255)
_scalars = st.one_of(
    st.booleans(),
    _INT64,
    st.floats(width=32),  # pamqp writes floats as 32-bit: these survive the trip exactly
    st.text(max_size=30),
    st.binary(max_size=20).map(bytearray),
    st.decimals(places=2, min_value=-(10**6), max_value=10**6, allow_nan=False),
    st.datetimes(
        min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2100, 1, 1)
    ).map(lambda d: d.replace(microsecond=0)),
    st.none(),
)
amqp_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_huge = st.integers(100_000, FRAME_MAX - 2_000).map(lambda n: {"big": "x" * n})
amqp_headers = st.one_of(
    st.dictionaries(_keys, amqp_values, max_size=6),
    _huge,
    st.fixed_dictionaries(
        {
            names.H_PRODUCER: st.one_of(st.text(max_size=10), st.just("raftmq:dup:1")),
            names.H_SEQ: st.one_of(_INT64, st.text(alphabet="0123456789", min_size=1, max_size=30)),
        }
    ),
)
_short_text = st.text(max_size=40).filter(lambda t: len(t.encode()) <= 255)
_message_ids = st.one_of(st.none(), _short_text, st.just("m" * 255))

# What JSON meta of a batch record may hold: anything, including what the rules refuse.
_json_values = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.just("\ud800"),
        st.none(),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_meta = st.fixed_dictionaries(
    {},
    optional={
        "ct": st.one_of(_short_text, st.just("\ud800"), _json_values),
        "h": st.one_of(
            st.dictionaries(
                st.one_of(st.text(max_size=8), st.just("\udc80k")), _json_values, max_size=4
            ),
            _json_values,
        ),
        "mid": st.one_of(_short_text, st.just("m" * 250), _json_values),
        "pid": st.one_of(st.text(max_size=10), st.just("\ud800"), st.just("raftmq:dup:abc")),
        "seq": st.one_of(st.integers(-5, 2**70), _json_values),
    },
)


def encode_record(meta: dict[str, Any], body: bytes) -> bytes:
    """A record in the layout of docs/protocol.md §8, meta encoded as given."""
    raw = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
    return struct.pack(">BI", 1, len(raw)) + raw + body


records = st.one_of(
    st.builds(encode_record, _meta, st.binary(max_size=50)),
    st.binary(max_size=30),  # not a record at all
)


@dataclass
class HostileWrite:
    """One message for the writes queue: a single write, or a batch of records."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    message_id: str | None = None
    batch: list[bytes] | None = None  # the records, when this is a batch message


single_writes = st.builds(
    HostileWrite,
    body=st.binary(max_size=300),
    headers=amqp_headers,
    content_type=st.one_of(st.none(), _short_text),
    message_id=_message_ids,
)
batches = st.builds(
    lambda rs: HostileWrite(body=b"", batch=rs), st.lists(records, min_size=1, max_size=6)
)
hostile_writes = st.one_of(single_writes, batches)


def plain(value: Any) -> Any:
    """A header value as a record keeps it (docs/protocol.md §3), or None when dropped."""
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return None
    return None


def expected_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """The producer headers a committed message carries for these write headers."""
    kept = {}
    for key, value in headers.items():
        if not key.startswith("raftmq-") and plain(value) is not None:
            kept[key] = plain(value)
    return kept
