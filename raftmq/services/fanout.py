"""Fan-out: the leader publishes every committed write to ``raftmq.C.committed``, in index
order, with publisher confirms.

What is published: NORMAL entries that are Records and not duplicates (raftmq.node.sessions);
NOOPs, watermark entries and duplicates are skipped, which is why each message carries
``raftmq-prev-index`` (the index of the previous message published) besides
``raftmq-index`` and ``raftmq-term``.

The watermark (highest index whose message, if any, the broker confirmed) is kept in memory,
saved locally and *replicated* at most every ``watermark_interval`` seconds, and only when a
message was published since the last time: the leader proposes a watermark entry
(raftmq.protocol.watermark.encode_watermark) and every node that applies it persists the watermark
with its applied index. A new leader resumes at its replicated watermark + 1: messages
after it may be published twice (at-least-once), none is skipped (no gap); subscribers
drop repeats by index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import aio_pika

from raftmq._amqp.channel import ChannelInvalidStateError, RawChannel, closing_observer, underlay
from raftmq._amqp.connect import BrokersLike, Connector
from raftmq._amqp.topology import declare_committed
from raftmq._amqp.wire import (
    field_table,
    framing,
    message_frames,
    publish_confirmed,
    publish_frame,
)
from raftmq.core.types import Entry, EntryKind
from raftmq.errors import MalformedMessage, RaftMQError
from raftmq.node.types import ServiceHost
from raftmq.protocol.names import (
    H_INDEX,
    H_PREV_INDEX,
    H_PRODUCER,
    H_SEQ,
    H_TERM,
    committed_exchange,
    connection_name,
)
from raftmq.protocol.record import HeaderValue, Record
from raftmq.protocol.watermark import decode_watermark
from raftmq.services.leading import LeaderService

logger = logging.getLogger("raftmq.services.fanout")

DEFAULT_BATCH = 500  # messages published in one socket write (one confirm wait)
DEFAULT_MAX_IN_FLIGHT = 4000  # messages published and not yet confirmed, at most
DEFAULT_WATERMARK_INTERVAL = 0.2  # seconds between watermark saves/proposals
_READ_BYTES = 4 << 20  # bytes of entries read from storage at once
_FEED_MAX = 50_000  # applied entries buffered for the fan-out
_SCAN_BACK = 256  # entries read per step when looking for the previous published index


def publishable(node: ServiceHost, entry: Entry) -> Record | None:
    """The Record an applied entry publishes, or None (NOOP, watermark, duplicate, junk)."""
    if entry.kind is not EntryKind.NORMAL or node.is_duplicate(entry.index):
        return None
    if decode_watermark(entry.data) is not None:
        return None
    try:
        return Record.decode(entry.data)
    except MalformedMessage:
        return None


def committed_headers(entry: Entry, record: Record, prev_index: int) -> dict[str, HeaderValue]:
    """The headers of an entry's committed message: the producer's plus raftmq's."""
    headers: dict[str, HeaderValue] = dict(record.headers)
    headers[H_INDEX] = entry.index
    headers[H_TERM] = entry.term
    headers[H_PREV_INDEX] = prev_index
    if record.producer_id is not None and record.seq is not None:
        headers[H_PRODUCER] = record.producer_id
        headers[H_SEQ] = record.seq
    return headers


def committed_message(entry: Entry, record: Record, prev_index: int) -> aio_pika.Message:
    """The committed-exchange message of one entry (also the replay answer format)."""
    return aio_pika.Message(
        record.body,
        content_type=record.content_type,
        message_id=record.message_id,
        headers=dict(committed_headers(entry, record, prev_index)),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def committed_frames(
    channel_number: int, publish_frame: bytes, max_body: int, record: Record, headers: bytes
) -> bytes:
    """The wire frames of one committed message: persistent, the record's content type
    and message id, ``headers`` (an encoded field table) and the record's body."""
    return message_frames(
        channel_number,
        publish_frame,
        max_body,
        record.body,
        headers=headers,
        content_type=record.content_type,
        message_id=record.message_id,
    )


async def previous_published(node: ServiceHost, index: int) -> int:
    """The highest index <= ``index`` that publishes a message, or 0 when none does."""
    first = await node.first_index()
    hi = min(index, node.applied_index)  # nothing above it is read: no scan of empty space
    while hi >= max(first, 1):
        lo = max(first, hi - _SCAN_BACK + 1, 1)
        for entry in reversed(await node.committed_entries(lo, hi)):
            if publishable(node, entry) is not None:
                return entry.index
        hi = lo - 1
    return 0


class Fanout(LeaderService):
    """Publishes committed writes while the node leads."""

    name = "fanout"

    def __init__(
        self,
        node: ServiceHost,
        amqp_url: BrokersLike,
        *,
        batch: int = DEFAULT_BATCH,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        watermark_interval: float = DEFAULT_WATERMARK_INTERVAL,
    ) -> None:
        super().__init__(node)
        # The broker URLs (own connection); each retry starts with the next one.
        self.connector = Connector(
            amqp_url, name=connection_name(node.cluster, node.node_id, "fanout")
        )
        self.batch = batch  # entries per publish batch (one socket write)
        self.max_in_flight = max_in_flight  # published messages awaiting confirms, at most
        self.watermark_interval = watermark_interval  # seconds between watermark rounds
        node.count("fanout_published", 0)  # messages confirmed by the broker
        self._wake = asyncio.Event()  # set when the node applied something or a batch confirmed
        self._replicated = 0  # last watermark proposed or found replicated
        # Applied entries handed over by the node (saves reading them back from storage);
        # contiguous, ascending; bounded: when it overflows, storage is read instead.
        self._feed: deque[Entry] = deque()
        node.on_applied(self._on_applied)

    def _on_applied(self, entries: tuple[Entry, ...]) -> None:
        if self.active:
            if self._feed and self._feed[-1].index + 1 != entries[0].index:
                self._feed.clear()
            if len(self._feed) < _FEED_MAX:
                self._feed.extend(entries)
        self._wake.set()

    def _on_confirmed(self, confirms: asyncio.Future[Any]) -> None:
        if not confirms.cancelled():
            confirms.exception()  # retrieved here; the publish loop re-raises it in order
        self._wake.set()

    async def _next_entries(self, next_index: int, applied: int) -> list[Entry]:
        """Up to ``batch`` applied entries from ``next_index``: from the feed when it holds
        them, else from storage."""
        feed = self._feed
        while feed and feed[0].index < next_index:
            feed.popleft()
        if feed and feed[0].index == next_index:
            return [feed.popleft() for _ in range(min(self.batch, len(feed)))]
        feed.clear()
        return (await self.node.committed_entries(next_index, applied, _READ_BYTES))[: self.batch]

    async def lead(self) -> None:
        """Publish from the replicated watermark on, until cancelled."""
        node = self.node
        connection = await self.connector.connect()
        try:
            channel = await connection.channel(publisher_confirms=True)
            await declare_committed(channel, node.cluster)
            raw = await underlay(channel)
            frame = publish_frame(framing(raw).number, committed_exchange(node.cluster), "")
            await self._publish_loop(raw, frame)
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _publish_loop(self, channel: RawChannel, publish_frame: bytes) -> None:
        """Publish batches in index order with many batches awaiting their confirms; the
        watermark advances only over the contiguous prefix of confirmed batches."""
        node = self.node
        next_index = node.fanout_watermark + 1
        prev = await previous_published(node, next_index - 1)
        self._replicated = node.fanout_watermark
        logger.info("%s: fan-out resumes at index %s", node.node_id, next_index)
        with closing_observer(channel) as closing:  # confirms never come on a closed channel
            closing.add_done_callback(lambda _: self._wake.set())
            await self._publish(channel, publish_frame, next_index, prev)

    async def _publish(
        self, channel: RawChannel, publish_frame: bytes, next_index: int, prev: int
    ) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        # Published batches, oldest first: (last entry index covered, messages, confirms).
        in_flight: deque[tuple[int, int, asyncio.Future[Any]]] = deque()
        unconfirmed = 0  # messages in in_flight
        last_round = loop.time()
        dirty = False  # messages confirmed since the last watermark round
        number, step = framing(channel)
        while True:
            self._wake.clear()
            if channel.is_closed:
                raise ChannelInvalidStateError("fan-out channel closed")
            while in_flight and in_flight[0][2].done():
                last, count, confirms = in_flight.popleft()
                confirms.result()  # a nack or a closed channel: resume at the watermark
                unconfirmed -= count
                node.count("fanout_published", count)
                dirty = dirty or count > 0
                node.advance_fanout_watermark(last)
            progressed = False
            if next_index <= node.applied_index and unconfirmed < self.max_in_flight:
                entries = await self._next_entries(next_index, node.applied_index)
                if entries:
                    batch = []
                    for entry in entries:
                        record = publishable(node, entry)
                        if record is not None:
                            headers = field_table(committed_headers(entry, record, prev))
                            batch.append(
                                committed_frames(number, publish_frame, step, record, headers)
                            )
                            prev = entry.index
                    if batch:
                        confirms = await publish_confirmed(channel, batch)
                    else:  # nothing to publish: the range is confirmed at once
                        confirms = loop.create_future()
                        confirms.set_result(None)
                    confirms.add_done_callback(self._on_confirmed)
                    in_flight.append((entries[-1].index, len(batch), confirms))
                    unconfirmed += len(batch)
                    next_index = entries[-1].index + 1
                    progressed = True
            if dirty and loop.time() - last_round >= self.watermark_interval:
                last_round = loop.time()
                dirty = False
                await self._watermark_round(node.fanout_watermark)
            if not progressed and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.watermark_interval):
                        await self._wake.wait()

    async def _watermark_round(self, watermark: int) -> None:
        """Save the watermark locally and replicate it (a watermark entry)."""
        node = self.node
        node.save_fanout_watermark(watermark)
        if watermark > self._replicated:
            self._replicated = watermark
            task = asyncio.create_task(self._propose(watermark))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _propose(self, watermark: int) -> None:
        try:
            await self.node.propose_watermark(watermark)
        except (RaftMQError, TimeoutError) as exc:
            logger.debug("%s: watermark %s not replicated: %r", self.node.node_id, watermark, exc)
