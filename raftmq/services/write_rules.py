"""What the cluster accepts as a write: ONE set of rules (docs/protocol.md §5).

:class:`WriteRules` judges one write, alone (a :class:`Delivery` of ``raftmq.C.writes``),
as one record of a batch (docs/protocol.md §3), or as the record of a node's ``write``
request, and turns it into the :class:`Record` and payload the leader proposes, or raises
:class:`BadWrite` saying why it can never be committed.

A write is judged by everything the cluster will do with it: its session key must fit the
session table on every database, every integer a signed 64-bit column or AMQP long-long,
every string must be valid UTF-8, and its committed message must be encodable by the
code fan-out and replay use and fit one frame with raftmq's own headers. So nothing that
was accepted can fail later, when it is applied, stored, fanned out or replayed.

The rules do no I/O; :class:`Delivery` is the writes-queue delivery they read, whose ack
and nack the ingest service (:mod:`raftmq.services.ingest`) calls.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from raftmq._amqp.delivery import (
    Delivered,
    ack,
    delivery_channel,
    delivery_tag,
    nack,
    properties,
)
from raftmq._amqp.wire import field_table
from raftmq.core.types import MAX_INDEX, MAX_TERM, Entry
from raftmq.errors import MalformedMessage, WriteRejected
from raftmq.node.sessions import MAX_PRODUCER_ID, RESERVED_PREFIX
from raftmq.protocol.limits import (
    FRAME_MAX,
    H_UNDECODABLE,
    INT64_MAX,
    MID_PREFIX,
    field_name_ok,
    int64_ok,
    session_key_ok,
    short_string_ok,
    utf8_ok,
)
from raftmq.protocol.names import H_INDEX, H_PREV_INDEX, H_PRODUCER, H_SEQ, H_TERM
from raftmq.protocol.record import HeaderValue, Record
from raftmq.services.fanout import committed_frames, committed_headers


class BadWrite(Exception):
    """A write that can never be committed; ``reason`` goes into ``raftmq-reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # short machine-readable reason plus detail


def _header_value(value: Any) -> HeaderValue | None:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes | bytearray):  # pamqp gives byte arrays as either
        with contextlib.suppress(UnicodeDecodeError):
            return bytes(value).decode()
    return None  # tables, arrays, timestamps, decimals, void: not carried


class Delivery:
    """One delivery of the writes queue, read straight from the raw channel: aio-pika's
    IncomingMessage costs ~26 attribute sets per message on the leader's hot path."""

    __slots__ = (
        "_channel",
        "body",
        "content_encoding",
        "content_type",
        "correlation_id",
        "delivery_tag",
        "headers",
        "message_id",
        "reply_to",
        "type",
    )

    def __init__(self, delivered: Delivered) -> None:
        props = properties(delivered)
        self.body: bytes = delivered.body
        self.headers: dict[str, Any] | None = props.headers
        self.content_type: str | None = props.content_type
        self.content_encoding: str | None = props.content_encoding
        self.message_id: str | None = props.message_id
        self.correlation_id: str | None = props.correlation_id
        self.reply_to: str | None = props.reply_to
        self.type: str | None = props.message_type
        self.delivery_tag = delivery_tag(delivered)
        self._channel = delivery_channel(delivered)

    async def nack(self) -> None:
        """Return the delivery to the queue (for the next leader)."""
        await nack(self._channel, self.delivery_tag, requeue=True)

    async def ack_through(self) -> None:
        """Ack this delivery and every earlier one of its channel (``multiple``)."""
        await ack(self._channel, self.delivery_tag, multiple=True)


def _session_fields(producer: object, seq_value: object) -> tuple[str | None, int | None]:
    """Validated (producer id, seq) of a write, (None, None) when it has neither."""
    if producer is None and seq_value is None:
        return None, None
    if not isinstance(producer, str) or not producer:
        raise BadWrite(f"invalid_producer: {H_PRODUCER} must be a non-empty string")
    if len(producer) > MAX_PRODUCER_ID or producer.startswith(RESERVED_PREFIX):
        raise BadWrite(f"invalid_producer: too long or reserved prefix {RESERVED_PREFIX!r}")
    if not session_key_ok(producer):
        raise BadWrite("invalid_producer: not valid UTF-8 text (or holds NUL)")
    if isinstance(seq_value, bytes | str):
        with contextlib.suppress(ValueError):
            seq_value = int(seq_value)
    if not isinstance(seq_value, int) or isinstance(seq_value, bool) or seq_value < 1:
        raise BadWrite(f"invalid_seq: {H_SEQ} must be an integer >= 1 with {H_PRODUCER}")
    if seq_value >= INT64_MAX:  # the session keeps seq + 1 in a BIGINT
        raise BadWrite(f"invalid_seq: {H_SEQ} must be below 2**63 - 1")
    return producer, seq_value


def kept_headers(raw: Mapping[str, Any]) -> dict[str, HeaderValue]:
    """The headers of ``raw`` that a record carries: plain values, no ``raftmq-`` ones."""
    headers: dict[str, HeaderValue] = {}
    for key, value in raw.items():
        kept = _header_value(value)
        if kept is not None and isinstance(key, str) and not key.startswith("raftmq-"):
            headers[key] = kept
    return headers


def header_problem(key: str, value: HeaderValue) -> str | None:
    """Why the kept header ``key: value`` cannot travel in a committed message, or None."""
    if not field_name_ok(key):
        return f"invalid_header: name {key[:40]!r} is not UTF-8 of at most 128 bytes"
    if isinstance(value, str):
        if not utf8_ok(value):
            return f"invalid_header: {key[:40]!r} is not valid UTF-8"
    elif isinstance(value, int) and not isinstance(value, bool) and not int64_ok(value):
        return f"invalid_header: {key[:40]!r} does not fit a signed 64-bit integer"
    return None


# The largest index and term a committed message can carry: its header is sized with them.
_LAST_ENTRY = Entry(index=MAX_INDEX, term=MAX_TERM)


def committed_header_size(record: Record) -> int:
    """Bytes of the content-header frame of ``record``'s committed message, encoded by the
    fan-out's own code (``struct.error`` when it cannot be encoded)."""
    headers = field_table(committed_headers(_LAST_ENTRY, record, MAX_INDEX))
    # Without the body: the header frame is all that must fit; the body is split in frames.
    return len(committed_frames(0, b"", 1, replace(record, body=b""), headers))


# Bytes of a content-header frame besides its properties (frame header and end, class,
# weight, body size, property flags), and of raftmq's own headers besides the producer id.
_FRAME_FIXED = 7 + 1 + 2 + 2 + 8 + 2 + 1  # ... and the delivery mode
_OWN_HEADERS = sum(1 + len(name) + 9 for name in (H_INDEX, H_TERM, H_PREV_INDEX, H_SEQ)) + (
    1 + len(H_PRODUCER) + 5
)


def committed_header_bound(record: Record) -> int:
    """An upper bound of :func:`committed_header_size`, by arithmetic (a UTF-8 code point
    takes at most 4 bytes, a number at most 9 with its type): encoding the header per
    write costs several times the other checks, and nearly every write is far below a
    frame. Only a write whose bound exceeds the frame is encoded to decide."""
    size = _FRAME_FIXED + 4 + _OWN_HEADERS
    if record.content_type is not None:
        size += 1 + 4 * len(record.content_type)
    if record.message_id is not None:
        size += 1 + 4 * len(record.message_id)
    if record.producer_id is not None:
        size += 4 * len(record.producer_id)
    for key, value in record.headers.items():
        size += 2 + 4 * len(key) + (5 + 4 * len(value) if isinstance(value, str) else 9)
    return size


@dataclass(frozen=True, slots=True)
class WriteRules:
    """The cluster's rules for a write (docs/protocol.md §5), alone, in a batch or sent as
    a ``write`` request."""

    max_write_bytes: int  # encoded record size limit
    content_types: tuple[str, ...] = ()  # allowed content types; empty: any
    schema: type[BaseModel] | None = None  # bodies must validate against it, when set
    frame_max: int = FRAME_MAX  # the broker's frame size: a committed header must fit one

    def check(self, record: Record) -> tuple[Record, bytes]:
        """``record`` and its encoded payload (the log entry), or :class:`BadWrite` when
        it breaks a rule (properties, headers, content type, size, frame, schema)."""
        if record.content_type is not None and not short_string_ok(record.content_type):
            raise BadWrite("invalid_property: content_type is not UTF-8 of at most 255 bytes")
        mid = record.message_id
        if mid is not None:
            if not short_string_ok(mid):
                raise BadWrite("invalid_property: message_id is not UTF-8 of at most 255 bytes")
            if record.producer_id is None and not session_key_ok(MID_PREFIX + mid):
                raise BadWrite(
                    "invalid_property: message_id too long for a session key "
                    "(at most 196 characters without a producer id)"
                )
        for key, value in record.headers.items():
            problem = header_problem(key, value)
            if problem is not None:
                raise BadWrite(problem)
        if self.content_types and record.content_type not in self.content_types:
            raise BadWrite(
                f"content_type: {record.content_type!r} is not one of {self.content_types}"
            )
        payload = record.encode()
        size = len(payload)
        if size > self.max_write_bytes:
            raise BadWrite(
                f"too_large: {size} bytes exceeds max_write_bytes={self.max_write_bytes}"
            )
        # Below the bound the header fits for sure, and the checks above leave nothing the
        # encoder could refuse; only a write near a frame is encoded to decide.
        if committed_header_bound(record) > self.frame_max:
            self._check_frame(record)
        if self.schema is not None:
            try:
                self.schema.model_validate_json(record.body)
            except ValidationError as exc:
                raise BadWrite(
                    f"schema: not a valid {self.schema.__name__}: {exc.error_count()} errors"
                ) from None
        return record, payload

    def _check_frame(self, record: Record) -> None:
        """Encode the committed message's content header with fan-out's own code: BadWrite
        when it cannot be encoded or does not fit one frame."""
        try:
            frame = committed_header_size(record)
        except (struct.error, OverflowError, UnicodeEncodeError) as exc:
            raise BadWrite(f"unencodable: committed message cannot be encoded: {exc}") from None
        if frame > self.frame_max:
            raise BadWrite(
                f"too_large: committed headers take {frame} bytes, "
                f"more than one frame (frame_max={self.frame_max})"
            )

    def from_delivery(self, message: Delivery) -> tuple[Record, bytes]:
        """The Record of one single-write delivery and its payload, or :class:`BadWrite`
        saying why not."""
        return self.from_properties(
            message.body, message.headers, message.content_type, message.message_id
        )

    def from_properties(
        self,
        body: bytes,
        headers: Mapping[str, Any] | None,
        content_type: str | None,
        message_id: str | None,
    ) -> tuple[Record, bytes]:
        """The Record of one single write, given its body and AMQP properties as decoded,
        and its payload, or :class:`BadWrite` saying why not."""
        raw = dict(headers or {})
        undecodable = raw.get(H_UNDECODABLE)
        if undecodable is not None:
            raise BadWrite(f"malformed_properties: {undecodable}")
        producer = _header_value(raw.pop(H_PRODUCER, None))
        seq = raw.pop(H_SEQ, None)
        return self._judge(body, content_type, raw, message_id, producer, seq)

    def from_batch(self, payload: bytes) -> tuple[Record, bytes]:
        """The Record of one encoded record of a batch (docs/protocol.md §3) and its payload
        as the leader stores it, or :class:`BadWrite` saying why not."""
        try:
            got = Record.decode(payload)
        except MalformedMessage as exc:
            raise BadWrite(f"malformed_record: {exc}") from None
        return self.from_record(got)

    def from_record(self, record: Record) -> tuple[Record, bytes]:
        """The Record as the log keeps it (a batch record, a ``write`` request) and its
        payload, or :class:`BadWrite` saying why not."""
        return self._judge(
            record.body,
            record.content_type,
            record.headers,
            record.message_id,
            record.producer_id,
            record.seq,
        )

    def admit(self, record: Record) -> Record:
        """``record`` as the log keeps it, or :class:`~raftmq.errors.WriteRejected` with
        the reason: the check a node runs on its ``write`` request."""
        try:
            return self.from_record(record)[0]
        except BadWrite as exc:
            raise WriteRejected(exc.reason) from None

    def _judge(
        self,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, Any],
        message_id: str | None,
        producer: object,
        seq: object,
    ) -> tuple[Record, bytes]:
        """The write's Record as the log keeps it (session fields validated, headers
        narrowed), checked by :meth:`check`."""
        producer_id, valid_seq = _session_fields(producer, seq)
        if not isinstance(body, bytes) or not isinstance(headers, Mapping):
            raise BadWrite("malformed_record: body or headers of the wrong type")
        return self.check(
            Record(
                body=body,
                content_type=content_type or None,  # an empty one travels as none
                headers=kept_headers(headers),
                message_id=message_id or None,
                producer_id=producer_id,
                seq=valid_seq,
            )
        )
