"""A message delivered on a raw channel, read without aio-pika's ``IncomingMessage``
(which costs more CPU per message than everything raftmq does with it), and its ack.

Outside :mod:`raftmq._amqp` a :data:`Delivered` is read through ``.body`` and
:func:`properties` only, and settled through :func:`ack` and :func:`nack`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import aiormq.abc
from pamqp.commands import Basic

from raftmq.protocol.codec import Envelope
from raftmq.protocol.names import H_STATUS

Delivered: TypeAlias = aiormq.abc.DeliveredMessage
"""One message as the raw channel hands it to a consumer callback."""

Properties: TypeAlias = Basic.Properties
"""The AMQP basic properties of a message (``content_type``, ``headers``, ``reply_to`` ...)."""

DeliveryChannel: TypeAlias = aiormq.abc.AbstractChannel
"""The raw channel a message was delivered on: its acks must go there."""


def properties(delivered: Delivered) -> Properties:
    """The AMQP properties of ``delivered`` (pamqp's decoded content header)."""
    return delivered.header.properties


def delivery_tag(delivered: Delivered) -> int:
    """The delivery tag to settle ``delivered`` with (0 for a message without one)."""
    return int(getattr(delivered.delivery, "delivery_tag", 0) or 0)


def delivery_channel(delivered: Delivered) -> DeliveryChannel:
    """The channel ``delivered`` came on."""
    return delivered.channel


async def ack(channel: DeliveryChannel, tag: int, *, multiple: bool = False) -> None:
    """Ack delivery ``tag`` (and every earlier one of ``channel`` with ``multiple``)."""
    await channel.basic_ack(tag, multiple=multiple)


async def nack(channel: DeliveryChannel, tag: int, *, requeue: bool = True) -> None:
    """Nack delivery ``tag``: back to its queue with ``requeue``, else dropped or
    dead-lettered by the broker."""
    await channel.basic_nack(tag, requeue=requeue)


def header_text(headers: dict[str, Any] | None, name: str) -> str | None:
    """A text header as str (pamqp may hand back bytes), or None when absent."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def envelope_from_delivery(delivered: Delivered) -> Envelope:
    """The broker-independent view of one delivered AMQP message."""
    props = delivered.header.properties
    return Envelope(
        body=delivered.body,
        type=props.message_type,
        cluster=props.app_id,
        reply_to=props.reply_to,
        correlation_id=props.correlation_id,
        status=header_text(props.headers, H_STATUS) if props.headers else None,
        mac=props.message_id if isinstance(props.message_id, str) else None,
    )
