"""What the leader accepts from the writes queue: the rules for a write (docs/protocol.md §5).

:class:`WriteRules` judges one write, alone (a :class:`Delivery` of ``raftmq.C.writes``) or
as one record of a batch (docs/protocol.md §3), and turns it into the :class:`Record` and
payload the leader proposes, or raises :class:`BadWrite` saying why it can never be
committed. The rules do no I/O; :class:`Delivery` is the writes-queue delivery they read,
whose ack and nack the ingest service (:mod:`raftmq.services.ingest`) calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
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
from raftmq.errors import MalformedMessage
from raftmq.node.sessions import MAX_PRODUCER_ID, RESERVED_PREFIX
from raftmq.protocol.names import H_PRODUCER, H_SEQ
from raftmq.protocol.record import HeaderValue, Record


class BadWrite(Exception):
    """A write that can never be committed; ``reason`` goes into ``raftmq-reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # short machine-readable reason plus detail


def _header_value(value: Any) -> HeaderValue | None:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            return value.decode()
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
    if isinstance(seq_value, bytes | str):
        with contextlib.suppress(ValueError):
            seq_value = int(seq_value)
    if not isinstance(seq_value, int) or isinstance(seq_value, bool) or seq_value < 1:
        raise BadWrite(f"invalid_seq: {H_SEQ} must be an integer >= 1 with {H_PRODUCER}")
    return producer, seq_value


def kept_headers(raw: Mapping[str, Any]) -> dict[str, HeaderValue]:
    """The headers of ``raw`` that a record carries: plain values, no ``raftmq-`` ones."""
    headers: dict[str, HeaderValue] = {}
    for key, value in raw.items():
        kept = _header_value(value)
        if kept is not None and not key.startswith("raftmq-"):
            headers[key] = kept
    return headers


@dataclass(frozen=True, slots=True)
class WriteRules:
    """The node's rules for a write (docs/protocol.md §5), alone or in a batch."""

    max_write_bytes: int  # encoded record size limit
    content_types: tuple[str, ...] = ()  # allowed content types; empty: any
    schema: type[BaseModel] | None = None  # bodies must validate against it, when set

    def check(self, record: Record) -> tuple[Record, bytes]:
        """``record`` and its encoded payload (the log entry), or :class:`BadWrite` when
        it breaks a rule (content type, size, schema)."""
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
        if self.schema is not None:
            try:
                self.schema.model_validate_json(record.body)
            except ValidationError as exc:
                raise BadWrite(
                    f"schema: not a valid {self.schema.__name__}: {exc.error_count()} errors"
                ) from None
        return record, payload

    def from_delivery(self, message: Delivery) -> tuple[Record, bytes]:
        """The Record of one single-write delivery and its payload, or :class:`BadWrite`
        saying why not."""
        raw = dict(message.headers or {})
        producer = _header_value(raw.pop(H_PRODUCER, None))
        seq = raw.pop(H_SEQ, None)
        return self._judge(
            message.body, message.content_type, raw, message.message_id, producer, seq
        )

    def from_batch(self, payload: bytes) -> tuple[Record, bytes]:
        """The Record of one encoded record of a batch (docs/protocol.md §3) and its payload
        as the leader stores it, or :class:`BadWrite` saying why not."""
        try:
            got = Record.decode(payload)
        except MalformedMessage as exc:
            raise BadWrite(f"malformed_record: {exc}") from None
        return self._judge(
            got.body, got.content_type, got.headers, got.message_id, got.producer_id, got.seq
        )

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
        return self.check(
            Record(
                body=body,
                content_type=content_type,
                headers=kept_headers(headers),
                message_id=message_id or None,
                producer_id=producer_id,
                seq=valid_seq,
            )
        )
