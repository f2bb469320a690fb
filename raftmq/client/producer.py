"""Producer: publish writes to a cluster's writes queue with exactly-once sessions.

Wire protocol: docs/protocol.md sections 3 and 4. Every write carries the producer id and
the next sequence number; every retry (nack, connection loss, receipt timeout) re-publishes
the SAME sequence number, oldest first, so the node appends it at most once.

Writes travel in batches: the writes gathered while the previous batch awaits its broker
confirm (at most ``linger`` seconds) go as ONE AMQP message of type ``raftmq.batch``
(docs/protocol.md §3), answered by ONE receipt listing each write's outcome. Per write,
the broker, the leader and this client then handle a few bytes instead of a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from raftmq._amqp import topology
from raftmq._amqp.channel import RawChannel, underlay, wait_unless_closed
from raftmq._amqp.connect import BrokersLike, Connector
from raftmq._amqp.wire import cached_publish_frame, framing, message_frames, publish_confirmed
from raftmq.errors import ClientNotOpen, ConfigError
from raftmq.protocol import names
from raftmq.protocol.receipts import Receipt, batch_outcomes
from raftmq.protocol.record import (
    BATCH_CONTENT_TYPE,
    BATCH_TYPE,
    MAX_BATCH_RECORDS,
    HeaderValue,
    Record,
    encode_batch,
)

logger = logging.getLogger("raftmq.client.producer")

_MAX_BATCHES = 10_000  # batches awaiting a receipt before settled ones are forgotten
DEFAULT_ATTEMPT_TIMEOUT = 10.0  # seconds without any receipt before re-publishing
_RETRY_PAUSE = 0.2  # seconds between publish attempts while the broker is unreachable


@dataclass(eq=False, slots=True)
class _Write:
    """One write in flight. Invariant: seq is unique within its Producer."""

    seq: int  # producer sequence number, reused by every retry
    payload: bytes  # the encoded Record (docs/protocol.md §8), the same for every attempt
    confirmed: asyncio.Future[None]  # resolved by the broker confirm of the first success
    receipt: asyncio.Future[Receipt] | None  # resolved by the node's receipt (wait_commit)
    # the caller gave up, or the receipt came: never publish it again
    abandoned: bool = field(default=False)
    # loop time its latest attempt was confirmed; None while an attempt is queued, with
    # the broker or paused for a retry (the receipt watchdog re-publishes only writes
    # that are confirmed and still await their receipt)
    confirmed_at: float | None = None


def _awaits_receipt(write: _Write | None) -> bool:
    """True while ``write`` (live, not abandoned) waits for the node's receipt."""
    return write is not None and write.receipt is not None and not write.receipt.done()


class Producer:
    """Publish writes to cluster ``cluster`` through RabbitMQ, with confirms and receipts.

    Use as ``async with Producer(url, "orders") as producer: await producer.publish(b"..")``.
    A write goes out at once when no batch awaits its broker confirm; otherwise writes
    gather until the confirms are in, ``linger`` seconds pass or ``max_batch`` writes
    (``max_batch_bytes`` bytes) are waiting, and then go as ONE batch message. So an idle
    producer adds no delay and a busy one sends big batches: on a busy machine bigger
    batches cost the broker and the cluster less CPU per write, which shortens the queues
    more than the wait adds. Batches are pipelined: up to ``max_in_flight`` writes await
    their confirms at once and a write waits only for its own batch's confirms.
    """

    def __init__(
        self,
        amqp_url: BrokersLike,
        cluster: str,
        *,
        producer_id: str | None = None,
        linger: float = 0.005,
        max_batch: int = 500,
        max_batch_bytes: int = 1 << 20,
        max_in_flight: int = 5000,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or max_batch_bytes < 1:
            raise ConfigError("max_batch, max_batch_bytes and max_in_flight must be >= 1")
        if max_batch > MAX_BATCH_RECORDS:
            raise ConfigError(f"max_batch must be <= {MAX_BATCH_RECORDS} (the nodes' limit)")
        # The broker URLs (several: a RabbitMQ cluster, failed over on each reconnect)
        # and TLS files, as Brokers.of takes them.
        self.connector = Connector(amqp_url, name=f"raftmq-producer:{cluster}")
        self.cluster = cluster  # cluster name (names the queues)
        self.producer_id = producer_id or uuid.uuid4().hex  # the session id on every write
        self.linger = linger  # seconds a batch waits for more publishes (0: none)
        self.max_batch = max_batch  # most writes per batch
        self.max_batch_bytes = max_batch_bytes  # most payload bytes per batch (one write more)
        self.max_in_flight = max_in_flight  # writes published and not yet confirmed, at most
        self.attempt_timeout = attempt_timeout  # receipt silence before a re-publish
        self._next_seq = 1  # invariant: greater than every seq handed out
        self._outbox: deque[_Write] = deque()  # waiting to be published, in seq order
        self._wakeup = asyncio.Event()  # set when the outbox gets work
        self._live: dict[int, _Write] = {}  # seq -> write whose publish() has not returned
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._sender: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None  # re-publishes after receipt silence
        self._in_flight = 0  # writes handed to the broker whose confirm is still awaited
        self._capacity = asyncio.Event()  # set when a confirm freed room below max_in_flight
        self._flush_now = asyncio.Event()  # ends the linger: confirms in, or a full batch
        self._batches: dict[str, list[int]] = {}  # batch correlation_id -> its writes' seqs
        self._batch_ids = 0  # numbers batch correlation ids
        self._confirm_waiters: set[asyncio.Future[None]] = set()  # one per published batch
        self._last_receipt_at = 0.0  # loop time of the last receipt (progress of the backlog)
        self._closed = False

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, declare the writes queue and start the reply consumer and the sender.
        When that fails, the connection is closed before the error is raised."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        self._connection = await self.connector.connect_robust()
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        if not await topology.exchange_exists(
            self._connection, names.writes_exchange(self.cluster)
        ):
            # A fresh cluster: declare its writes path (a restricted producer account
            # may not; it then needs a node or `raftmq permissions apply` to go first).
            await topology.declare_writes(channel, self.cluster)
        # One long-lived reply queue per producer (aio-pika RPC pattern), named so that a
        # robust reconnect re-declares the same name.
        self._reply_queue = await channel.declare_queue(
            names.producer_reply_queue(self.cluster, self.producer_id, uuid.uuid4().hex[:8]),
            exclusive=True,
            auto_delete=True,
        )
        await self._reply_queue.consume(self._on_receipt, no_ack=True)
        self._sender = asyncio.create_task(self._send_loop(), name=f"producer-{self.producer_id}")
        self._watchdog = asyncio.create_task(
            self._watch_receipts(), name=f"producer-{self.producer_id}-receipts"
        )

    async def close(self) -> None:
        """Stop sending; fail every write still waiting; close the connection."""
        if self._closed:
            return
        self._closed = True
        for task in (self._sender, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for waiter in list(self._confirm_waiters):
            waiter.cancel()
        error = ClientNotOpen("producer closed")
        for write in list(self._live.values()):
            for future in (write.confirmed, write.receipt):
                if future is not None and not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: nobody may be awaiting any more
        self._outbox.clear()
        if self._connection is not None:
            await self._connection.close()

    async def publish(
        self,
        body: bytes,
        *,
        content_type: str | None = None,
        headers: Mapping[str, HeaderValue] | None = None,
        message_id: str | None = None,
        wait_commit: bool = True,
        timeout: float = 30.0,
    ) -> Receipt:
        """Publish one write; return its receipt.

        With ``wait_commit`` (default) this returns once the write is committed (index and
        term set; ``duplicate`` when a retry found it already in the log). Without, it
        returns after the broker confirm (index None). Raises :class:`WriteRejected` when
        the cluster dead-lettered the write, ``TimeoutError`` after ``timeout`` seconds,
        :class:`ConfigError` for headers a write cannot carry and :class:`ClientNotOpen`
        before :meth:`start` or once the producer is closed.
        """
        if self._closed:
            raise ClientNotOpen("producer is closed")
        if self._sender is None or self._reply_queue is None:
            raise ClientNotOpen("producer is not started (use `async with Producer(...)`)")
        loop = asyncio.get_running_loop()
        seq = self._next_seq
        try:
            payload = Record(
                body=bytes(body),
                content_type=content_type,
                headers=dict(headers or {}),
                message_id=message_id,
                producer_id=self.producer_id,
                seq=seq,
            ).encode()
        except (TypeError, ValueError) as exc:  # a header value JSON cannot carry
            raise ConfigError(f"headers must map str to str/int/float/bool: {exc}") from None
        self._next_seq += 1
        write = _Write(
            seq=seq,
            payload=payload,
            confirmed=loop.create_future(),
            receipt=loop.create_future() if wait_commit else None,
        )
        self._live[seq] = write
        self._enqueue(write)
        try:
            # No shield: a cancelled future only belongs to a write abandoned just below.
            # Per write: one timeout, two futures; re-publishing after a silence is the
            # receipt watchdog's (one task per producer, not a timer per write).
            async with asyncio.timeout(timeout):
                if write.receipt is None:
                    await write.confirmed
                    return Receipt(index=None, term=None, duplicate=False, seq=seq)
                return await write.receipt
        except BaseException:
            write.abandoned = True
            with contextlib.suppress(ValueError):
                self._outbox.remove(write)
            raise
        finally:
            del self._live[seq]

    async def _watch_receipts(self) -> None:
        """Re-publish every confirmed write whose receipt has not come after
        ``attempt_timeout`` seconds of silence (checked every quarter of it).

        Receipts of this producer come in queue order: while any arrives, the cluster is
        working through our backlog, so only a silence counts, measured from the later of
        the write's confirm and the last receipt. Then the leader may have died with the
        write unacked (it returns to the queue), or the receipt was lost: re-publishing
        the same seq is safe (protocol §4)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.attempt_timeout / 4)
            now = loop.time()
            if now - self._last_receipt_at < self.attempt_timeout:
                continue  # receipts are flowing
            due = [
                write
                for write in self._live.values()
                if _awaits_receipt(write)
                and write.confirmed_at is not None
                and now - max(write.confirmed_at, self._last_receipt_at) >= self.attempt_timeout
            ]
            if not due:
                continue
            logger.info(
                "no receipt for %s writes (seq %s..) after %.1f s of silence; re-publishing",
                len(due),
                min(write.seq for write in due),
                self.attempt_timeout,
            )
            for write in due:
                write.confirmed_at = None
                write.confirmed = loop.create_future()
            self._enqueue(*due)

    def _enqueue(self, *writes: _Write) -> None:
        # Keep the outbox in seq order: a retry goes before every newer seq (protocol §4).
        if len(writes) == 1 and (not self._outbox or self._outbox[-1].seq < writes[0].seq):
            self._outbox.append(writes[0])
        else:
            items = sorted([*self._outbox, *writes], key=lambda w: w.seq)
            self._outbox.clear()
            self._outbox.extend(items)
        self._wakeup.set()
        if len(self._outbox) >= self.max_batch:
            self._flush_now.set()

    async def _on_receipt(self, message: AbstractIncomingMessage) -> None:
        """A batch receipt: ``{"results": [...]}`` with one outcome per write of the batch,
        in batch order (or ``{"reason": ...}`` with status error when the batch as a whole
        was refused). A second receipt (a redelivered batch) finds its writes resolved."""
        seqs = self._batches.pop(message.correlation_id or "", None)
        if seqs is None:
            return  # a second receipt, or one for a batch of abandoned writes
        self._last_receipt_at = asyncio.get_running_loop().time()
        status = (message.headers or {}).get(names.H_STATUS)
        try:
            outcomes = batch_outcomes(message.body, status, seqs)
        except ValueError as exc:
            logger.warning("receipt %s is not usable: %s", message.correlation_id, exc)
            return
        for seq, outcome in zip(seqs, outcomes, strict=True):
            write = self._live.get(seq)
            if write is None or write.receipt is None or not _awaits_receipt(write):
                continue
            write.abandoned = True  # answered: a pending retry of it must not go out
            if isinstance(outcome, Receipt):
                write.receipt.set_result(outcome)
            else:
                write.receipt.set_exception(outcome)

    async def _send_loop(self) -> None:
        assert self._channel is not None
        while True:
            await self._wakeup.wait()
            if self.linger > 0 and self._in_flight > 0 and len(self._outbox) < self.max_batch:
                # Nagle-like: gather while the previous batch awaits its confirms.
                self._flush_now.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.linger):
                        await self._flush_now.wait()
            while self._in_flight >= self.max_in_flight:  # the broker is behind: wait
                self._capacity.clear()
                await self._capacity.wait()
            batch: list[_Write] = []
            size = 0
            while self._outbox and len(batch) < self.max_batch:
                write = self._outbox[0]
                if batch and size + len(write.payload) > self.max_batch_bytes:
                    break
                self._outbox.popleft()
                if not write.abandoned and not write.confirmed.done():
                    batch.append(write)
                    size += len(write.payload)
            if not self._outbox:
                self._wakeup.clear()
            if batch:
                await self._publish_batch(batch)

    async def _publish_batch(self, batch: list[_Write]) -> None:
        """Publish ``batch`` as ONE batch message (docs/protocol.md §3) and return without
        waiting for its confirm: the next batch goes out while this one is being confirmed
        (pipelined)."""
        assert self._channel is not None and self._reply_queue is not None
        wants_receipt = any(write.receipt is not None for write in batch)
        correlation_id = None
        if wants_receipt:
            self._batch_ids += 1
            correlation_id = f"b{self._batch_ids}"
            if len(self._batches) >= _MAX_BATCHES:
                self._forget_settled_batches()
            self._batches[correlation_id] = [write.seq for write in batch]
        try:
            channel = await underlay(self._channel)
            number, max_body = framing(channel)
            frames = message_frames(
                number,
                cached_publish_frame(number, names.writes_exchange(self.cluster), ""),
                max_body,
                encode_batch([write.payload for write in batch]),
                content_type=BATCH_CONTENT_TYPE,
                message_type=BATCH_TYPE,
                reply_to=self._reply_queue.name if wants_receipt else None,
                correlation_id=correlation_id,
            )
            confirmed = await publish_confirmed(channel, [frames])
        except Exception as exc:  # the channel is gone: retried after the reconnect
            logger.debug("publish of %s writes failed: %r", len(batch), exc)
            if correlation_id is not None:
                self._batches.pop(correlation_id, None)
            self._retry_later(batch)
            return
        self._in_flight += len(batch)
        waiter = asyncio.ensure_future(self._confirm_batch(batch, channel, confirmed))
        self._confirm_waiters.add(waiter)
        waiter.add_done_callback(self._confirm_waiters.discard)

    def _forget_settled_batches(self) -> None:
        """Drop the batches none of whose writes still waits for a receipt (their receipt
        was lost, or every write was resolved by a later attempt's batch)."""
        self._batches = {
            cid: seqs
            for cid, seqs in self._batches.items()
            if any(_awaits_receipt(self._live.get(seq)) for seq in seqs)
        }

    async def _confirm_batch(
        self, batch: list[_Write], channel: RawChannel, confirmed: asyncio.Future[None]
    ) -> None:
        try:
            await wait_unless_closed(channel, confirmed)
        finally:
            self._in_flight -= len(batch)
            self._capacity.set()
            if self._in_flight == 0:
                self._flush_now.set()
        if confirmed.done() and confirmed.exception() is None:
            now = asyncio.get_running_loop().time()
            for write in batch:
                if not write.confirmed.done():
                    write.confirmed.set_result(None)
                    write.confirmed_at = now
            return
        # A nack or a closed channel: re-publish the whole batch (same seqs, so the
        # cluster appends each write at most once).
        logger.debug("%s writes not confirmed; re-publishing", len(batch))
        self._retry_later(batch)

    def _retry_later(self, batch: list[_Write]) -> None:
        def requeue() -> None:
            retries = [w for w in batch if not w.abandoned and not w.confirmed.done()]
            if retries:
                self._enqueue(*retries)  # merged in seq order: oldest first (protocol §4)

        # A pause for the robust connection to reconnect.
        asyncio.get_running_loop().call_later(_RETRY_PAUSE, requeue)
