"""Subscriber: an ordered, duplicate-free async iterator over a cluster's committed writes.

Wire protocol: docs/protocol.md sections 6 and 7. The subscriber's own queue is bound to
the committed fan-out exchange (at-least-once, in index order); duplicates are dropped by
index; a gap (``raftmq-prev-index`` above the last delivered index) is filled from the
replay queue (raftmq.client.replay) before newer messages are yielded. Messages are
parsed by raftmq.client.committed; acks and the stored position are raftmq.client.progress.

Nothing a delivery holds can stop the subscription: duplicates and malformed messages are
dropped, counted in :attr:`Subscriber.counters` and acked like processed ones; a gap
nobody can fill (its message claims an index no node has) is given up after
``gap_timeout`` seconds without a replayed message, and that message is dropped too.

A subscriber that catches up (from ``earliest`` or an index, or after a reconnect) cannot
see from replay alone whether the node that answered lagged behind what was fanned out
before its queue was bound; until its first live message (whose prev index shows any gap)
it asks replay again whenever none came for a while (``replay_timeout``, doubling up to
``CATCH_UP_MAX``), so an idle cluster's messages still arrive.

Deliveries (live and replayed) are consumed on the raw channel (raftmq._amqp): a message
is read straight from its AMQP properties and body, without an aio-pika ``IncomingMessage``
(which costs more CPU than everything else the subscriber does per message). aio-pika's
robust connection still redeclares the queues and bindings after a reconnect; the
subscriber then consumes again on the new channel.

A named subscription's queues are bounded (``max_length``, ``max_length_bytes``: the broker
drops the oldest messages, which come back as a gap filled from replay) and expire when
abandoned (``expires``): raftmq.client.subscription_queues.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import Counter, deque
from types import TracebackType
from typing import Literal

from aio_pika.abc import (
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)

from raftmq._amqp import topology
from raftmq._amqp.channel import (
    Consumer,
    RawChannel,
    consume,
    consuming,
    on_broker_cancel,
    underlay,
)
from raftmq._amqp.connect import BrokersLike, Connector
from raftmq._amqp.delivery import Delivered
from raftmq.client.committed import CommittedMessage, parse_delivered
from raftmq.client.progress import FLUSH_INTERVAL, Progress
from raftmq.client.replay import OnCompacted, ReplayClient
from raftmq.client.subscription_queues import (
    DEFAULT_EXPIRES,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MAX_LENGTH_BYTES,
    Bounds,
    declare_arguments,
)
from raftmq.errors import ConfigError, MalformedMessage
from raftmq.protocol import names
from raftmq.protocol.names import position_queue, subscription_queue

logger = logging.getLogger("raftmq.client.subscriber")

Start = Literal["latest", "earliest"] | int
"""Where a new subscription starts: new messages only, the first index, or index N."""

_RESUME_PAUSE = 1.0  # seconds between attempts to consume again after a broker cancel
CATCH_UP_MAX = 60.0  # seconds: the longest wait for a first live message before re-asking replay


class Subscriber:
    """Iterate over committed writes of ``cluster``: ``async for msg in subscriber``.

    ``start``: "latest" (messages committed from now on), "earliest" (index 1) or an
    index N. ``name`` makes a durable subscription that resumes where it stopped (``start``
    only applies the first time). A message counts as processed when the next one is
    requested (or the subscriber is closed without an exception); processed messages
    are acked and, for a named subscription, the position is stored durably first.

    A named subscription's queue holds at most ``max_length`` messages and
    ``max_length_bytes`` bytes of bodies (None: no bound); beyond them the broker drops the
    oldest, and the subscriber fills that gap from replay. Both its queues are deleted by
    the broker after ``expires`` seconds without a subscriber (None: never); the next
    Subscriber of that name then starts again per ``start``. The bounds apply when the
    queues are made: opening an existing subscription with other bounds raises
    ConfigError (delete it with ``raftmq subscriptions delete NAME``), except that the
    default bounds also open one made before raftmq bounded subscriptions, unbounded.
    ``max_length`` and ``max_length_bytes`` bound an anonymous subscription's queue too.

    Entries the cluster's retention compacted cannot be replayed (``start="earliest"``
    on a cluster that retains the newest entries only, or a subscription that lagged
    behind retention): with ``on_compacted="raise"`` (the default) iterating raises
    :class:`~raftmq.errors.Compacted` naming the first available index; with ``"skip"``
    the subscriber goes on from there and counts the skipped indexes in ``compacted``.

    ``counters`` counts what was dropped: ``duplicate`` (an index already yielded),
    ``malformed`` (raftmq headers missing or invalid), ``unreachable_gap`` (a gap no
    replay filled within ``gap_timeout``), ``replay_malformed``, ``replay_error`` and
    ``compacted`` (indexes skipped because retention deleted them).
    """

    def __init__(
        self,
        amqp_url: BrokersLike,
        cluster: str,
        *,
        start: Start = "latest",
        name: str | None = None,
        prefetch: int = 1000,
        replay_batch: int = 1000,
        replay_timeout: float = 5.0,
        gap_timeout: float = 60.0,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        max_length_bytes: int | None = DEFAULT_MAX_LENGTH_BYTES,
        expires: float | None = DEFAULT_EXPIRES,
        on_compacted: OnCompacted = "raise",
    ) -> None:
        if isinstance(start, int) and start < 1:
            raise ConfigError("start index must be >= 1")
        if on_compacted not in ("raise", "skip"):
            raise ConfigError(f"on_compacted must be 'raise' or 'skip', not {on_compacted!r}")
        if name is not None and not re.fullmatch(names.SUBSCRIPTION_NAME, name):
            # The name routes positions on a topic exchange: no wildcards, no empty words.
            raise ConfigError(f"subscription name {name!r} must match {names.SUBSCRIPTION_NAME}")
        bounds = Bounds(max_length, max_length_bytes, expires)
        bounds.check()
        # The broker URLs (several: a RabbitMQ cluster, failed over on each reconnect)
        # and TLS files, as Brokers.of takes them.
        self.connector = Connector(amqp_url, name=f"raftmq-subscriber:{cluster}")
        self.cluster = cluster  # cluster name
        self.start = start  # where a new subscription begins
        self.name = name  # durable subscription name, or None (anonymous, exclusive)
        self.prefetch = prefetch  # unacked live messages the broker may push
        self.replay_batch = replay_batch  # "max" of one replay request
        self.replay_timeout = replay_timeout  # seconds without a replay message: ask again
        self.gap_timeout = gap_timeout  # seconds without a replayed message: drop the gap
        self.bounds = bounds  # of the queues of a new named subscription (and anonymous)
        self.on_compacted = on_compacted  # entries retention deleted: raise, or skip them
        self.counters: Counter[str] = Counter()  # dropped deliveries and replay answers
        self._last: int | None = None  # last index yielded; None until the first (latest)
        self._progress: Progress | None = None  # acks and stored position (from open)
        # Admitted messages not yet yielded, in index order, each with its live delivery
        # (None: replayed). Live deliveries are only admitted while this is empty.
        self._ready: deque[tuple[CommittedMessage, Delivered | None]] = deque()
        self._yielded: tuple[CommittedMessage, Delivered | None] | None = None
        self._live: deque[Delivered] = deque()  # live deliveries not yet admitted
        self._waiter: asyncio.Future[None] | None = None  # set while waiting for a delivery
        self._flush_timer: asyncio.TimerHandle | None = None  # wakes the waiter to flush
        self._replay_from: int | None = None  # proactive replay still to do (earliest / N)
        # Catching up (from open, or a reconnect, until the first live delivery): seconds
        # to wait for one before asking replay again; None once a live one came.
        self._catch_up: float | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None  # the subscription's queue
        self._reply_queue: AbstractRobustQueue | None = None
        self._replay: ReplayClient | None = None  # asks for missed messages (from open)
        self._live_tag = f"raftmq-sub-{uuid.uuid4().hex}"  # consumer tag, on every channel
        self._reply_tag = f"raftmq-replay-{uuid.uuid4().hex}"
        self._watched: RawChannel | None = None  # channel with our cancel callback
        self._resuming: asyncio.Task[None] | None = None  # re-consume after a broker cancel
        self._keep_alive: asyncio.Task[None] | None = None  # the position queue's (expires)
        self._closed = False

    @property
    def last_index(self) -> int | None:
        """The last index yielded (None before the first message of a "latest" start)."""
        return self._last

    async def __aenter__(self) -> Subscriber:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(processed=exc_type is None)

    def __aiter__(self) -> Subscriber:
        return self

    async def open(self) -> None:
        """Connect, declare and bind the subscription queue, load the stored position.
        When that fails (e.g. ConfigError for other bounds), the connection is closed
        before the error is raised: nothing of a failed open keeps running."""
        try:
            await self._open()
        except BaseException:
            await self.close(processed=False)
            raise

    async def _open(self) -> None:
        self._connection = await self.connector.connect_robust()
        channel = await self._connection.channel(publisher_confirms=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await self._shared_exchanges(channel)
        if self.name is None:
            # Exclusive and auto-delete: it goes with the connection, no expiry needed.
            lengths = Bounds(self.bounds.max_length, self.bounds.max_length_bytes, None)
            queue = await channel.declare_queue(
                names.anonymous_subscription_queue(self.cluster, uuid.uuid4().hex),
                exclusive=True,
                auto_delete=True,
                arguments=lengths.queue_arguments(),
            )
            progress = Progress(channel, None)
        else:
            arguments, position_arguments = await declare_arguments(
                self._connection, self.cluster, self.name, self.bounds
            )
            queue = await channel.declare_queue(
                subscription_queue(self.cluster, self.name), durable=True, arguments=arguments
            )
            stored = await channel.declare_queue(
                position_queue(self.cluster, self.name),
                durable=True,
                arguments=position_arguments,
            )
            # Positions travel through the positions exchange, routed by name: a subscriber
            # account needs no write on the default exchange (docs/protocol.md section 10).
            positions = names.positions_exchange(self.cluster)
            await stored.bind(positions, routing_key=self.name)
            progress = Progress(channel, stored, positions, self.name)
            if "x-expires" in position_arguments and self.bounds.keep_alive is not None:
                self._keep_alive = asyncio.get_running_loop().create_task(
                    progress.keep_alive(self.bounds.keep_alive)
                )
        self._progress = progress
        resumed = await progress.load()
        await queue.bind(exchange)
        self._reply_queue = await channel.declare_queue(
            names.replay_reply_queue(self.cluster, uuid.uuid4().hex),
            exclusive=True,
            auto_delete=True,
        )
        self._replay = ReplayClient(
            channel,
            self._reply_queue.name,
            self.cluster,
            counters=self.counters,
            on_compacted=self.on_compacted,
        )
        if resumed is not None:
            self._last = resumed
        elif self.start == "earliest":
            self._last = progress.processed = 0
            self._replay_from = 1
        elif isinstance(self.start, int):
            self._last = progress.processed = self.start - 1
            self._replay_from = self.start
        if self._replay_from is not None:
            self._catch_up = self.replay_timeout
        self._queue = queue
        # After a reconnect aio-pika redeclares and binds the queues, then calls this.
        channel.reopen_callbacks.add(self._on_reopen)
        await self._consume()
        progress.flushed_at = asyncio.get_running_loop().time()

    async def _shared_exchanges(self, channel: AbstractRobustChannel) -> AbstractExchange:
        """The committed exchange, with the replay and positions exchanges beside it:
        declared when missing, else only looked up (a passive check needs no configure
        permission, so a restricted subscriber account can open a running cluster)."""
        connection = self._connection
        assert connection is not None
        committed = names.committed_exchange(self.cluster)
        if not await topology.exchange_exists(connection, committed):
            await topology.declare_committed(channel, self.cluster)
        if not await topology.exchange_exists(connection, names.replay_exchange(self.cluster)):
            await topology.declare_replay(channel, self.cluster)
        if not await topology.exchange_exists(connection, names.positions_exchange(self.cluster)):
            await topology.declare_positions(channel, self.cluster)
        return await channel.get_exchange(committed, ensure=False)

    async def close(self, *, processed: bool = True) -> None:
        """Store the position and ack what was processed; close the connection.

        ``processed``: whether the last yielded message counts as processed.
        """
        if self._closed:
            return
        self._closed = True
        self._wake()  # an __anext__ waiting in another task stops
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        for task in (self._resuming, self._keep_alive):
            if task is not None:
                task.cancel()
        try:
            if processed:
                self._mark_processed()
            await self._flush()
        except Exception as exc:  # the broker may be gone: redelivery + position cover it
            logger.warning("could not store the subscription position on close: %s", exc)
        if self._connection is not None:
            await self._connection.close()

    @staticmethod
    async def delete_subscription(amqp_url: BrokersLike, cluster: str, name: str) -> None:
        """Delete the queues of named subscription ``name`` (its position is forgotten)."""
        connection = await Connector(amqp_url).connect()
        try:
            channel = await connection.channel()
            await channel.queue_delete(subscription_queue(cluster, name))
            await channel.queue_delete(position_queue(cluster, name))
        finally:
            await connection.close()

    async def __anext__(self) -> CommittedMessage:
        if self._closed or self._channel is None:
            raise StopAsyncIteration
        self._mark_processed()
        ready, live = self._ready, self._live
        progress = self._progress
        assert progress is not None
        while True:
            if self._replay_from is not None:
                first, self._replay_from = self._replay_from, None
                await self._fill(first, None)
            if ready:
                item = ready.popleft()
                self._last = item[0].index
                self._yielded = item
                return item[0]
            if progress.due(asyncio.get_running_loop().time()):
                await self._flush()
            if not live:
                await self._idle()
                if self._closed:  # close() from another task ends the iteration
                    raise StopAsyncIteration
                continue
            delivered = live.popleft()
            self._catch_up = None  # from here on, a gap shows in the next message's prev
            try:
                message, prev = parse_delivered(delivered)
            except MalformedMessage as exc:
                if not self.counters["malformed"]:
                    logger.warning("dropping a message without valid raftmq headers: %s", exc)
                self.counters["malformed"] += 1
                progress.dropped(delivered)
                continue
            last = self._last
            if last is not None:
                if message.index <= last:  # duplicate (at-least-once fan-out): drop it
                    self.counters["duplicate"] += 1
                    progress.dropped(delivered)
                    continue
                if prev > last:
                    logger.info(
                        "gap before index %s: replaying %s..%s", message.index, last + 1, prev
                    )
                    if await self._fill(last + 1, prev):
                        ready.append((message, delivered))
                    else:  # nothing came: the next message's gap fill covers this one
                        logger.warning("dropping index %s: its gap stays empty", message.index)
                        self.counters["unreachable_gap"] += 1
                        progress.dropped(delivered)
                    continue
            self._last = message.index  # in order, nothing ready: yield it at once
            self._yielded = (message, delivered)
            return message

    def _mark_processed(self) -> None:
        if self._yielded is None or self._progress is None:
            return
        message, delivered = self._yielded
        self._yielded = None
        self._progress.processed_index(message.index, delivered)

    async def _idle(self) -> None:
        """Wait for a live delivery. While catching up, ask replay again when none comes:
        the node that answered the last replay may have lagged behind what fan-out had
        published before this subscriber's queue was bound, and only a live message (its
        prev index) would show that gap; in an idle cluster none may come for hours. The
        wait doubles each time, up to CATCH_UP_MAX seconds."""
        wait = self._catch_up
        loop = asyncio.get_running_loop()
        since = loop.time()
        await self._wait_live(wait)
        if wait is None or self._live or self._closed or loop.time() - since < wait:
            return
        self._catch_up = min(wait * 2, CATCH_UP_MAX)
        self._replay_from = (self._last or 0) + 1

    async def _wait_live(self, timeout: float | None = None) -> None:
        """Wait for a live delivery, until unflushed progress is due to be written, or
        for ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        progress = self._progress
        if progress is not None and progress.pending and self._flush_timer is None:
            due = progress.flushed_at + FLUSH_INTERVAL
            self._flush_timer = loop.call_at(due, self._on_flush_due)
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, self._wake)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_flush_due(self) -> None:
        self._flush_timer = None
        self._wake()

    async def _on_delivery(self, delivered: Delivered) -> None:
        self._live.append(delivered)
        self._wake()

    async def _consume(self) -> None:
        """Consume the subscription and reply queues on the channel in use (idempotent:
        a consumer the channel already has is left alone)."""
        assert self._channel is not None and self._replay is not None
        assert self._queue is not None and self._reply_queue is not None
        channel = await underlay(self._channel)
        if channel is not self._watched:
            on_broker_cancel(channel, self._on_cancel)
            self._watched = channel
        consumers: tuple[tuple[AbstractQueue, str, Consumer, bool], ...] = (
            (self._reply_queue, self._reply_tag, self._replay.on_reply, True),
            (self._queue, self._live_tag, self._on_delivery, False),
        )
        for queue, tag, callback, no_ack in consumers:
            if not consuming(channel, tag):  # registered before basic_consume awaits
                await consume(channel, queue.name, callback, no_ack=no_ack, consumer_tag=tag)

    async def _on_reopen(self, _channel: object) -> None:
        # An anonymous queue lost what was published while the connection was down: catch
        # up as after open (a named queue kept it; asking costs one empty answer).
        if self._last is not None and self._catch_up is None:
            self._catch_up = self.replay_timeout
        try:
            await self._consume()
        except Exception as exc:  # raised here, aio-pika would only drop it: retry
            logger.warning("could not consume after a reconnect: %s", exc)
            self._resume()

    def _on_cancel(self, consumer_tag: str) -> None:
        """The broker cancelled a consumer (its queue was deleted): like aio-pika does for
        its robust queues, redeclare the queue and consume again."""
        if consumer_tag in (self._live_tag, self._reply_tag):
            self._resume()

    def _resume(self) -> None:
        if not self._closed and (self._resuming is None or self._resuming.done()):
            self._resuming = asyncio.get_running_loop().create_task(self._resume_consuming())

    async def _resume_consuming(self) -> None:
        """Declare and bind again each queue whose consumer is gone, then consume it;
        retried until it works or the subscriber closes."""
        assert self._channel is not None
        assert self._queue is not None and self._reply_queue is not None
        while not self._closed:
            try:
                await self._channel.ready()
                channel = await underlay(self._channel)
                for queue, tag in (
                    (self._reply_queue, self._reply_tag),
                    (self._queue, self._live_tag),
                ):
                    if not consuming(channel, tag):
                        await queue.restore()  # declare and bind again
                await self._consume()
                return
            except Exception as exc:
                logger.warning("could not consume again, retrying: %s", exc)
                await asyncio.sleep(_RESUME_PAUSE)

    async def _fill(self, first: int, wanted: int | None) -> bool:
        """Replay [first, wanted] into the ready queue (see ReplayClient.fill); False when
        ``wanted`` was not reached and nothing came for ``gap_timeout`` seconds."""
        assert self._replay is not None
        return await self._replay.fill(
            first,
            wanted,
            self._ready,
            self._last,
            batch=self.replay_batch,
            timeout=self.replay_timeout,
            give_up=self.gap_timeout,
        )

    async def _flush(self) -> None:
        """Store the position (named subscriptions), then ack the settled deliveries."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._progress is not None:
            await self._progress.flush(asyncio.get_running_loop().time())
