"""The aiormq channel under an aio-pika channel: getting it, consuming on it, waiting on it.

raftmq publishes and consumes on the raw channel where aio-pika's per-message objects cost
more than the work itself; everything it does there goes through :mod:`raftmq._amqp`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeAlias, cast

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelInvalidStateError as ChannelInvalidStateError
from pamqp.commands import Basic

from raftmq._amqp.delivery import Delivered

RawChannel: TypeAlias = aiormq.Channel
"""The aiormq channel below an aio-pika channel. Outside :mod:`raftmq._amqp` it is handed
to the functions here and in :mod:`raftmq._amqp.wire`, and asked ``is_closed``."""

Consumer: TypeAlias = Callable[[Delivered], Coroutine[Any, Any, None]]
"""A raw consumer callback; aiormq runs each call in a task of its own."""


async def underlay(channel: AbstractChannel) -> RawChannel:
    """The raw channel under an aio-pika channel (a new one after a robust reconnect)."""
    return cast(RawChannel, await channel.get_underlay_channel())


async def consume(
    channel: RawChannel,
    queue: str,
    callback: Consumer,
    *,
    no_ack: bool,
    consumer_tag: str | None = None,
) -> str:
    """Start consuming ``queue`` with ``callback``; return the consumer tag."""
    ok = await channel.basic_consume(queue, callback, no_ack=no_ack, consumer_tag=consumer_tag)
    return str(ok.consumer_tag)


async def consume_exclusive(
    channel: RawChannel, queue: str, callback: Consumer, *, no_ack: bool
) -> str | None:
    """Start the only consumer of ``queue`` (a classic queue: quorum queues do not enforce
    exclusive consumers); return its tag, or None when another consumer holds the queue
    (the broker answers ACCESS_REFUSED "in exclusive use" and closes ``channel``). The
    broker drops an exclusive consumer with its holder's channel or connection."""
    try:
        ok = await channel.basic_consume(queue, callback, no_ack=no_ack, exclusive=True)
    except aiormq.exceptions.ChannelAccessRefused:
        return None
    return str(ok.consumer_tag)


async def cancel(channel: RawChannel, consumer_tag: str) -> None:
    """Stop the consumer ``consumer_tag`` (waits for the broker's cancel-ok)."""
    await channel.basic_cancel(consumer_tag)


def consuming(channel: RawChannel, consumer_tag: str) -> bool:
    """Whether ``channel`` has the consumer ``consumer_tag``: aiormq registers a tag before
    it sends basic.consume, and forgets it on basic.cancel from either side."""
    return consumer_tag in channel.consumers


def on_broker_cancel(channel: RawChannel, callback: Callable[[str], None]) -> None:
    """Call ``callback(consumer_tag)`` whenever the broker cancels a consumer of
    ``channel`` (e.g. its queue was deleted); the tag is already forgotten then."""

    def on_cancel(frame: Basic.Cancel) -> None:
        callback(frame.consumer_tag or "")

    channel.on_consumer_cancel_callbacks.add(on_cancel)


@contextlib.contextmanager
def closing_observer(channel: RawChannel) -> Iterator[asyncio.Future[Any]]:
    """A future that completes when ``channel`` closes (failed with the close reason),
    for the duration of the ``with`` block.

    aiormq makes each read of ``channel.closing`` a new observer future that stays
    registered on the channel until it completes, so it is cancelled on leaving the
    block: a long-lived channel would otherwise collect one per wait. Cancelling it does
    not close the channel."""
    closing = channel.closing
    try:
        yield closing
    finally:
        closing.cancel()


async def wait_unless_closed(channel: RawChannel, future: asyncio.Future[Any]) -> bool:
    """Wait until ``future`` is done or ``channel`` closes; True when ``future`` is done.

    For futures only the broker's answer resolves (a socket drain, a publisher confirm
    made by :mod:`raftmq._amqp.wire`): aiormq fails only the futures it created itself
    when a channel closes, so these would wait forever."""
    with closing_observer(channel) as closing:
        await asyncio.wait((future, closing), return_when=asyncio.FIRST_COMPLETED)
    return future.done()
