"""Publishing below aio-pika: hand-written AMQP frames and the fast publish paths.

The hot paths (Raft traffic, producer batches, receipts, the fan-out) are tuned for CPU
per message: few properties, frames marshalled by hand, many publishes per socket write.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import frame as amqp_frame
from pamqp.commands import Basic

from raftmq._amqp.channel import RawChannel, wait_unless_closed
from raftmq.protocol.codec import Envelope
from raftmq.protocol.names import H_STATUS

OutboundItem = tuple[str, Envelope, "int | None"]
"""(routing key, envelope, per-message TTL in ms or None) waiting to be published."""


_FRAME_END = b"\xce"
_METHOD_FRAME, _HEADER_FRAME, _BODY_FRAME = 1, 2, 3
_BASIC_CLASS = 60
# AMQP 0-9-1 basic property flag bits, in the order the properties are serialised.
_CONTENT_TYPE = 1 << 15
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_CORRELATION_ID = 1 << 10
_REPLY_TO = 1 << 9
_EXPIRATION = 1 << 8
_MESSAGE_ID = 1 << 7
_TYPE = 1 << 5
_APP_ID = 1 << 3

FieldValue = str | int | float | bool
"""Header values the hand-written encoder supports (what a Record carries)."""


def short_str(text: str) -> bytes:
    """An AMQP short string (at most 255 bytes: longer text is cut)."""
    raw = text.encode()[:255]
    return bytes((len(raw),)) + raw


def field_table(headers: Mapping[str, FieldValue]) -> bytes:
    """An AMQP field table of str/int/float/bool values."""
    parts = []
    for key, value in headers.items():
        parts.append(short_str(key))
        if isinstance(value, bool):
            parts.append(b"t\x01" if value else b"t\x00")
        elif isinstance(value, int):
            parts.append(b"l" + struct.pack(">q", value))
        elif isinstance(value, float):
            parts.append(b"d" + struct.pack(">d", value))
        else:
            raw = value.encode()
            parts.append(b"S" + struct.pack(">I", len(raw)) + raw)
    body = b"".join(parts)
    return struct.pack(">I", len(body)) + body


def publish_frame(channel_number: int, exchange: str, routing_key: str) -> bytes:
    """The marshalled basic.publish method frame (build once, reuse for every message)."""
    return amqp_frame.marshal(
        Basic.Publish(exchange=exchange, routing_key=routing_key), channel_number
    )


def message_frames(
    channel_number: int,
    publish: bytes,
    max_body: int,
    body: bytes,
    *,
    headers: bytes | None = None,
    content_type: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    message_id: str | None = None,
    message_type: str | None = None,
    expiration: str | None = None,
    app_id: str | None = None,
    persistent: bool = True,
) -> bytes:
    """The wire frames of one basic.publish: the pre-marshalled method frame ``publish``,
    the content header and the body frames (at most ``max_body`` bytes each).
    ``headers`` is an encoded :func:`field_table`. Hand-written because pamqp's generic
    property marshalling costs more CPU than the rest of a publish; only the properties
    raftmq uses are supported. Short strings longer than 255 bytes are cut."""
    flags = _DELIVERY_MODE
    props = []
    if content_type is not None:
        flags |= _CONTENT_TYPE
        props.append(short_str(content_type))
    if headers is not None:
        flags |= _HEADERS
        props.append(headers)
    props.append(b"\x02" if persistent else b"\x01")
    for flag, text in (
        (_CORRELATION_ID, correlation_id),
        (_REPLY_TO, reply_to),
        (_EXPIRATION, expiration),
        (_MESSAGE_ID, message_id),
        (_TYPE, message_type),
        (_APP_ID, app_id),
    ):  # the short-string properties after delivery_mode, in flag order
        if text is not None:
            flags |= flag
            props.append(short_str(text))
    payload = struct.pack(">HHQH", _BASIC_CLASS, 0, len(body), flags) + b"".join(props)
    out = [
        publish,
        struct.pack(">BHI", _HEADER_FRAME, channel_number, len(payload)),
        payload,
        _FRAME_END,
    ]
    for k in range(0, len(body), max_body):
        chunk = body[k : k + max_body]
        out += (struct.pack(">BHI", _BODY_FRAME, channel_number, len(chunk)), chunk, _FRAME_END)
    return b"".join(out)


class Framing(NamedTuple):
    """What :func:`message_frames` needs of the raw channel the frames go out on."""

    number: int  # the channel number every frame carries
    max_body: int  # bytes per body frame (the connection's frame_max less the overhead)


def framing(channel: RawChannel) -> Framing:
    """The :class:`Framing` of ``channel`` (read it once per channel, not per message)."""
    return Framing(channel.number, channel.max_content_size)


def _properties_for(envelope: Envelope, *, ttl_ms: int | None) -> Basic.Properties:
    """AMQP properties for an outbound envelope (non-persistent, optionally expiring).

    Only what the protocol needs: every extra property (content type, a header table)
    is CPU spent in pamqp on both ends of every message; ``message_id`` carries the MAC.
    """
    return Basic.Properties(
        delivery_mode=1,
        expiration=None if ttl_ms is None else str(ttl_ms),
        message_type=envelope.type,
        app_id=envelope.cluster,
        headers=None if envelope.status is None else {H_STATUS: envelope.status},
        reply_to=envelope.reply_to,
        correlation_id=envelope.correlation_id,
        message_id=envelope.mac,
    )


async def publish_envelope(
    channel: RawChannel, routing_key: str, envelope: Envelope, *, ttl_ms: int
) -> None:
    """Publish one envelope to the default exchange (non-persistent, expiring after
    ``ttl_ms``) with aiormq's own ``basic_publish``: for the occasional client request,
    where one socket write per message does not matter."""
    await channel.basic_publish(
        envelope.body,
        routing_key=routing_key,
        properties=_properties_for(envelope, ttl_ms=ttl_ms),
    )


_STATUS_TABLES: dict[str, bytes] = {}  # status -> its encoded header table


def status_table(status: str) -> bytes:
    """The encoded ``raftmq-status`` header table of ``status`` (made once per value)."""
    table = _STATUS_TABLES.get(status)
    if table is None:
        table = _STATUS_TABLES[status] = field_table({H_STATUS: status})
    return table


_PUBLISH_FRAMES: dict[tuple[int, str, str], bytes] = {}  # (channel, exchange, key) -> frame
_PUBLISH_FRAME_CACHE = 4096  # entries kept before the cache starts afresh


def cached_publish_frame(channel_number: int, exchange: str, routing_key: str) -> bytes:
    """The basic.publish frame to ``exchange`` with ``routing_key``, cached (one per
    destination: a peer's inbox, a producer's reply queue, the writes exchange)."""
    key = (channel_number, exchange, routing_key)
    frame = _PUBLISH_FRAMES.get(key)
    if frame is None:
        if len(_PUBLISH_FRAMES) >= _PUBLISH_FRAME_CACHE:
            _PUBLISH_FRAMES.clear()
        frame = _PUBLISH_FRAMES[key] = publish_frame(channel_number, exchange, routing_key)
    return frame


def default_publish_frame(channel_number: int, routing_key: str) -> bytes:
    """The basic.publish frame to the default exchange, straight to queue ``routing_key``."""
    return cached_publish_frame(channel_number, "", routing_key)


async def publish_batch(channel: RawChannel, batch: list[OutboundItem]) -> None:
    """Write a batch of basic.publish frames to the socket in ONE write.

    aiormq's ``basic_publish`` costs one socket write (a syscall) per message; without
    publisher confirms the frames of many publishes can go out together. This puts
    one marshalled frame sequence on aiormq's frame queue (what ``basic_publish``
    does without confirms) and waits for the socket to drain once per batch, which
    is the back-pressure. Raises ChannelInvalidStateError if the channel closes.
    """
    number, step = channel.number, channel.max_content_size
    out: list[bytes] = []
    for routing_key, envelope, ttl in batch:
        out.append(
            message_frames(
                number,
                default_publish_frame(number, routing_key),
                step,
                envelope.body,
                headers=None if envelope.status is None else status_table(envelope.status),
                correlation_id=envelope.correlation_id,
                reply_to=envelope.reply_to,
                expiration=None if ttl is None else str(ttl),
                message_id=envelope.mac,
                message_type=envelope.type,
                app_id=envelope.cluster,
                persistent=False,
            )
        )
    drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await channel.write_queue.put(
        ChannelFrame(payload=b"".join(out), should_close=False, drain_future=drained)
    )
    await _drained(channel, drained)


async def write_frames(channel: RawChannel, payload: bytes) -> None:
    """Queue ready-made frames (e.g. :func:`message_frames` of several messages) for the
    socket without waiting for the write, only while the connection's frame queue is
    full: for best-effort messages on a channel without confirms. Nothing is queued for
    a closed channel."""
    if not channel.is_closed:
        await channel.write_queue.put(
            ChannelFrame(payload=payload, should_close=False, drain_future=None)
        )


async def _drained(channel: RawChannel, drained: asyncio.Future[None]) -> None:
    """Wait until the socket took a frame write; ChannelInvalidStateError if the channel
    closes first."""
    if not await wait_unless_closed(channel, drained):
        drained.cancel()
        raise aiormq.exceptions.ChannelInvalidStateError("channel closed while publishing")


class BatchConfirms:
    """Stands in for aiormq's per-publish confirmation future under every delivery tag of
    one batch: counts the broker's acks and resolves ``future`` when all arrived, fails
    it on a nack (one future per batch instead of one per message, which costs more than
    the publish)."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], count: int) -> None:
        self.future = future  # resolved when every message is acked, failed on a nack
        self.remaining = count  # acks still expected; > 0 while the future is pending

    def done(self) -> bool:
        """Never done for aiormq, which would log every later tag of a failed batch as
        "ignored"."""
        return False

    def cancelled(self) -> bool:
        """Never cancelled (asked by aiormq before it logs an ignored confirm)."""
        return False

    def set_result(self, _frame: object) -> None:
        """One message of the batch was acked (aiormq calls it once per tag)."""
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)

    def set_exception(self, exc: BaseException) -> None:
        """One message of the batch was nacked: the whole batch failed."""
        if not self.future.done():
            self.future.set_exception(exc)


async def publish_confirmed(channel: RawChannel, messages: list[bytes]) -> asyncio.Future[None]:
    """Publish ``messages`` (each the complete wire frames of one basic.publish) on a
    confirm-mode ``channel`` in ONE socket write; return a future that resolves when the
    broker confirmed every one of them (fails on a nack; a closed channel leaves it
    pending: wait with :func:`~raftmq._amqp.channel.wait_unless_closed`). Awaits only
    the socket drain, not the confirms: callers keep many batches in flight (pipelined
    confirms). Raises ChannelInvalidStateError on a closed channel.

    aio-pika's ``publish`` costs a task, a lock round, futures and a socket write per
    message; this does what aiormq's ``basic_publish`` does, for a whole batch at once.
    It relies on aiormq 7.2 internals (write_queue, delivery_tag, confirmations, lock),
    which tests/amqp/test_internals.py checks.
    """
    loop = asyncio.get_running_loop()
    drained: asyncio.Future[None] = loop.create_future()
    confirmed: asyncio.Future[None] = loop.create_future()
    confirms = cast(asyncio.Future[Any], BatchConfirms(confirmed, len(messages)))
    async with channel.lock:
        await channel.write_queue.put(
            ChannelFrame(payload=b"".join(messages), should_close=False, drain_future=drained)
        )
        # No await since the put: the frames cannot have been written, so no confirm for
        # them can have arrived yet. Delivery tags count publishes on the channel, from 1.
        for _ in messages:
            channel.delivery_tag += 1
            channel.confirmations[channel.delivery_tag] = confirms
    await _drained(channel, drained)
    return confirmed
