"""How an :class:`~raftmq.transport.codec.Envelope` maps onto AMQP (pamqp/aiormq level).

Kept apart from the transport's lifecycle code: this is the hot path, tuned for
CPU per message (few properties, many publishes per socket write).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import aiormq.abc
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from raftmq.transport.codec import STATUS_HEADER, Envelope

OutboundItem = tuple[str, Envelope, "int | None"]
"""(routing key, envelope, per-message TTL in ms or None) waiting to be published."""


def header_text(headers: dict[str, Any] | None, name: str) -> str | None:
    """A text header as str (pamqp may hand back bytes), or None when absent."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def envelope_from_delivery(delivered: aiormq.abc.DeliveredMessage) -> Envelope:
    """The broker-independent view of one delivered AMQP message."""
    props = delivered.header.properties
    return Envelope(
        body=delivered.body,
        type=props.message_type,
        cluster=props.app_id,
        reply_to=props.reply_to,
        correlation_id=props.correlation_id,
        status=header_text(props.headers, STATUS_HEADER) if props.headers else None,
    )


def properties_for(envelope: Envelope, *, ttl_ms: int | None) -> Basic.Properties:
    """AMQP properties for an outbound envelope (non-persistent, optionally expiring).

    Only what the protocol needs: every extra property (content type, message id,
    a header table) is CPU spent in pamqp on both ends of every message.
    """
    return Basic.Properties(
        delivery_mode=1,
        expiration=None if ttl_ms is None else str(ttl_ms),
        message_type=envelope.type,
        app_id=envelope.cluster,
        headers=None if envelope.status is None else {STATUS_HEADER: envelope.status},
        reply_to=envelope.reply_to,
        correlation_id=envelope.correlation_id,
    )


async def publish_batch(channel: aiormq.Channel, batch: list[OutboundItem]) -> None:
    """Write a batch of basic.publish frames to the socket in ONE write.

    aiormq's ``basic_publish`` costs one socket write (a syscall) per message; without
    publisher confirms the frames of many publishes can go out together. This puts
    one marshalled frame sequence on aiormq's frame queue (what ``basic_publish``
    does without confirms) and waits for the socket to drain once per batch, which
    is the back-pressure. Raises ChannelInvalidStateError if the channel closes.
    """
    frames: list[Any] = []
    step = channel.max_content_size
    for routing_key, envelope, ttl in batch:
        body = envelope.body
        frames.append(Basic.Publish(exchange="", routing_key=routing_key))
        frames.append(
            ContentHeader(properties=properties_for(envelope, ttl_ms=ttl), body_size=len(body))
        )
        frames.extend(ContentBody(body[i : i + step]) for i in range(0, len(body), step))
    drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await channel.write_queue.put(
        ChannelFrame.marshall(channel_number=channel.number, frames=frames, drain_future=drained)
    )
    closing = channel.closing  # an observer future: cancel it after use, or it leaks
    try:
        await asyncio.wait((drained, closing), return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
    if not drained.done():
        drained.cancel()
        raise aiormq.exceptions.ChannelInvalidStateError("channel closed while publishing")
