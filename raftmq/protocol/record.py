"""The payload of a NORMAL log entry: one write, with its body and metadata.

Wire layout (also documented in docs/protocol.md)::

    b"\\x01" | uint32 big-endian length of meta | meta (compact JSON object) | body

``meta`` holds only the keys that are set: ``ct`` (content type), ``h`` (string/number
headers), ``mid`` (message id), ``pid`` (producer id), ``seq`` (producer sequence).
The body is carried byte for byte.

A **batch** of writes travels as ONE AMQP message (AMQP ``type`` = :data:`BATCH_TYPE`)
whose body is the records one after the other, each behind its length::

    ( uint32 big-endian length L | L bytes: one record in the layout above )*
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from raftmq.errors import MalformedMessage

_VERSION = 1
_HEAD = struct.Struct(">BI")
_LENGTH = struct.Struct(">I")
_META_JSON = json.JSONEncoder(separators=(",", ":"))  # json.dumps would build one per call

BATCH_TYPE = "raftmq.batch"
"""AMQP ``type`` of a write message that carries a batch of records (docs/protocol.md §3)."""

BATCH_CONTENT_TYPE = "application/vnd.raftmq.batch"
"""AMQP ``content_type`` the Python Producer sets on batches (informative only)."""

MAX_BATCH_RECORDS = 10_000
"""A batch with more records than this is refused as a whole (``bad_batch``)."""

HeaderValue = str | int | float | bool
"""Header values that survive the log (AMQP tables are narrowed to these)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One write as stored in the log. Invariant: seq is set iff producer_id is set."""

    body: bytes  # the producer's body, byte for byte
    content_type: str | None = None  # e.g. "application/json"
    headers: dict[str, HeaderValue] = field(default_factory=dict)  # producer headers kept
    message_id: str | None = None  # producer's AMQP message_id, if any
    producer_id: str | None = None  # client-session producer id (thesis §6.3)
    seq: int | None = None  # producer's sequence number within its session

    def encode(self) -> bytes:
        """Serialise to the entry payload layout."""
        meta: dict[str, Any] = {}
        if self.content_type is not None:
            meta["ct"] = self.content_type
        if self.headers:
            meta["h"] = self.headers
        if self.message_id is not None:
            meta["mid"] = self.message_id
        if self.producer_id is not None:
            meta["pid"] = self.producer_id
            meta["seq"] = self.seq
        raw = _META_JSON.encode(meta).encode() if meta else b""
        return _HEAD.pack(_VERSION, len(raw)) + raw + self.body

    @classmethod
    def decode(cls, payload: bytes) -> Record:
        """Parse an entry payload; raise :class:`MalformedMessage` when it is not one."""
        if len(payload) < _HEAD.size:
            raise MalformedMessage("record too short")
        version, meta_len = _HEAD.unpack_from(payload)
        if version != _VERSION:
            raise MalformedMessage(f"unknown record version {version}")
        end = _HEAD.size + meta_len
        if end > len(payload):
            raise MalformedMessage("record meta length exceeds payload")
        meta: dict[str, Any] = {}
        if meta_len:
            try:
                meta = json.loads(payload[_HEAD.size : end])
            except (ValueError, RecursionError) as exc:  # deep nesting exhausts the stack
                raise MalformedMessage(f"record meta is not JSON: {exc}") from exc
            if not isinstance(meta, dict):
                raise MalformedMessage("record meta is not an object")
        for key in ("ct", "mid", "pid"):
            if not isinstance(meta.get(key, ""), str):
                raise MalformedMessage(f"record meta {key!r} is not a string")
        seq = meta.get("seq")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
            raise MalformedMessage("record meta 'seq' is not an integer")
        headers = meta.get("h") or {}
        if not isinstance(headers, dict):
            raise MalformedMessage("record meta 'h' is not an object")
        return cls(
            body=payload[end:],
            content_type=meta.get("ct"),
            headers=headers,
            message_id=meta.get("mid"),
            producer_id=meta.get("pid"),
            seq=seq,
        )


def encode_batch(records: list[bytes]) -> bytes:
    """The body of a batch message: each encoded record behind its uint32 length."""
    parts: list[bytes] = []
    for payload in records:
        parts.append(_LENGTH.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


def decode_batch(body: bytes) -> list[bytes]:
    """Split a batch body into its encoded records (not decoded: each is judged on its
    own); raise :class:`MalformedMessage` when the framing is broken or too long."""
    out: list[bytes] = []
    view = memoryview(body)
    at, end = 0, len(body)
    while at < end:
        if end - at < _LENGTH.size:
            raise MalformedMessage(f"truncated record length at byte {at}")
        (length,) = _LENGTH.unpack_from(view, at)
        at += _LENGTH.size
        if length > end - at:
            raise MalformedMessage(f"record at byte {at} claims {length} bytes, {end - at} left")
        out.append(bytes(view[at : at + length]))
        at += length
        if len(out) > MAX_BATCH_RECORDS:
            raise MalformedMessage(f"more than {MAX_BATCH_RECORDS} records")
    return out
