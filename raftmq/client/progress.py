"""A subscription's progress: which live deliveries may be acked, and (named subscriptions)
the stored position, the last index the application finished with (docs/protocol.md §1, §6).

Deliveries are acked with ``multiple`` up to the newest one that is settled: processed by
the application, or dropped by the subscriber (a duplicate, a malformed message). Dropped
deliveries count towards a flush exactly like processed ones: otherwise a run of drops
longer than the prefetch would leave every delivery unacked and the broker would stop
delivering for good.

A position queue with an expiry (``x-expires``) has no consumer to keep it in use: while
the subscription runs, :meth:`Progress.keep_alive` redeclares it, which renews its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from raftmq._amqp.delivery import Delivered, ack, delivery_channel, delivery_tag

__all__ = ["FLUSH_EVERY", "FLUSH_INTERVAL", "Progress"]

logger = logging.getLogger("raftmq.client.progress")

FLUSH_EVERY = 100  # settled deliveries between position writes / acks
FLUSH_INTERVAL = 0.5  # seconds: settled deliveries older than this are flushed while idle


class Progress:
    """Acks and the stored position of one subscription, on ``channel``.

    ``position_queue``: the one-message queue of a named subscription (None: anonymous,
    nothing is stored). Invariant: the position is stored before any delivery it covers is
    acked, so a crash in between only redelivers messages the position then drops.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        position_queue: AbstractQueue | None,
        position_exchange: str = "",
        position_key: str = "",
    ) -> None:
        self.channel = channel  # where positions are published (robust: survives reconnects)
        self.position_queue = position_queue  # None: anonymous subscription
        self.position_exchange = position_exchange  # routes positions to position_queue
        self.position_key = position_key  # the routing key: the subscription name
        self.processed: int | None = None  # last index the application finished with
        self.pending = 0  # deliveries settled (processed or dropped) since the last flush
        self.flushed_at = 0.0  # loop time of the last flush
        self._stored: int | None = None  # last position written (or loaded)
        self._unacked: Delivered | None = None  # newest settled live delivery, not acked

    def processed_index(self, index: int, delivered: Delivered | None) -> None:
        """The application finished with ``index`` (``delivered``: its live delivery, or
        None for a replayed message)."""
        self.processed = index
        self.pending += 1
        if delivered is not None:
            self._unacked = delivered

    def dropped(self, delivered: Delivered) -> None:
        """The subscriber dropped ``delivered`` without yielding it: ack it with the rest."""
        self.pending += 1
        self._unacked = delivered

    def due(self, now: float) -> bool:
        """Whether settled deliveries should be flushed now."""
        return self.pending >= FLUSH_EVERY or (
            self.pending > 0 and now - self.flushed_at >= FLUSH_INTERVAL
        )

    async def flush(self, now: float) -> None:
        """Store the processed position (when it moved), then ack the settled deliveries."""
        self.flushed_at = now
        pending, self.pending = self.pending, 0
        position = self.processed
        if self.position_queue is not None and position is not None and position != self._stored:
            try:
                exchange = await self.channel.get_exchange(self.position_exchange, ensure=False)
                await exchange.publish(
                    aio_pika.Message(
                        str(position).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                    ),
                    routing_key=self.position_key,
                )
            except Exception as exc:  # the broker is away: keep both for the next flush
                logger.debug("position %s not stored yet: %r", position, exc)
                self.pending = max(pending, 1)
                return
            self._stored = position
        unacked, self._unacked = self._unacked, None
        if unacked is not None and delivery_tag(unacked):
            with contextlib.suppress(Exception):  # a reconnect invalidated the tag: redelivered
                await ack(delivery_channel(unacked), delivery_tag(unacked), multiple=True)

    async def keep_alive(self, interval: float) -> None:
        """Redeclare the position queue every ``interval`` seconds until cancelled: the
        broker deletes a queue nobody consumed, declared or read for its ``x-expires``,
        and nothing consumes a position queue (a failed redeclare is retried next time)."""
        queue = self.position_queue
        if queue is None:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                await queue.declare()
            except Exception as exc:  # the broker is away: the robust channel redeclares it
                logger.debug("position queue %s not redeclared: %r", queue.name, exc)

    async def load(self) -> int | None:
        """The stored position of a named subscription (None: none, or not an index)."""
        if self.position_queue is None:
            return None
        stored = await self.position_queue.get(no_ack=False, fail=False)
        if stored is None:
            return None
        await stored.reject(requeue=True)  # keep it until a newer position replaces it
        try:
            position = int(stored.body.decode())
        except ValueError:
            position = -1
        if not 0 <= position < 1 << 63:
            logger.warning("ignoring an invalid stored position %r", stored.body[:50])
            return None
        self._stored = self.processed = position
        return position
