"""The aiormq channel under an aio-pika channel: how raftmq waits on it.

raftmq publishes and consumes on the raw channel where aio-pika's per-message objects cost
more than the work itself; everything it does there goes through :mod:`raftmq._amqp`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, TypeAlias

import aiormq

RawChannel: TypeAlias = aiormq.Channel
"""The aiormq channel below an aio-pika channel."""


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
