"""The payload of a NORMAL log entry: one write, with its body and metadata.

Wire layout (also documented in docs/protocol.md)::

    b"\\x01" | uint32 big-endian length of meta | meta (compact JSON object) | body

``meta`` holds only the keys that are set: ``ct`` (content type), ``h`` (string/number
headers), ``mid`` (message id), ``pid`` (producer id), ``seq`` (producer sequence).
The body is carried byte for byte.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from raftmq.errors import MalformedMessage

_VERSION = 1
_HEAD = struct.Struct(">BI")

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
        raw = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
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
            except ValueError as exc:
                raise MalformedMessage(f"record meta is not JSON: {exc}") from exc
            if not isinstance(meta, dict):
                raise MalformedMessage("record meta is not an object")
        seq = meta.get("seq")
        return cls(
            body=payload[end:],
            content_type=meta.get("ct"),
            headers=dict(meta.get("h") or {}),
            message_id=meta.get("mid"),
            producer_id=meta.get("pid"),
            seq=int(seq) if seq is not None else None,
        )
