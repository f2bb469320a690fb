"""Producer: publish writes to a cluster's writes queue with exactly-once sessions.

Wire protocol: docs/protocol.md sections 3 and 4. Every write carries the producer id and
the next sequence number; every retry (nack, connection loss, receipt timeout) re-publishes
the SAME sequence number, oldest first, so the node appends it at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pamqp import commands
from pamqp import frame as amqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from raftmq import topology
from raftmq.errors import RaftMQError, WriteRejected
from raftmq.record import HeaderValue
from raftmq.transport.amqp_wire import publish_confirmed

logger = logging.getLogger("raftmq.client.producer")

DEFAULT_ATTEMPT_TIMEOUT = 10.0  # seconds without any receipt before re-publishing
_RETRY_PAUSE = 0.2  # seconds between publish attempts while the broker is unreachable


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of one publish. Invariant: index and term are both set or both None."""

    index: int | None  # log index (None: wait_commit=False, or a duplicate of an unknown place)
    term: int | None  # term of that entry (None when index is None)
    duplicate: bool  # True when the write was already in the log (index names the original)
    seq: int  # the producer sequence number the write carried


@dataclass(eq=False, slots=True)
class _Write:
    """One write in flight. Invariant: seq is unique within its Producer."""

    seq: int  # producer sequence number, reused by every retry
    message: aio_pika.Message  # what goes on the wire (same for every attempt)
    confirmed: asyncio.Future[None]  # resolved by the broker confirm of the first success
    receipt: asyncio.Future[Receipt] | None  # resolved by the node's receipt (wait_commit)
    attempts: int = 0  # how many times it was handed to the broker
    abandoned: bool = field(default=False)  # the caller gave up: never publish it again


class Producer:
    """Publish writes to cluster ``cluster`` through RabbitMQ, with confirms and receipts.

    Use as ``async with Producer(url, "orders") as producer: await producer.publish(b"..")``.
    Publishes issued within ``linger`` seconds of each other (up to ``max_batch``) go to the
    broker together: on a busy machine bigger batches cost the broker and the cluster less
    CPU per write, which shortens the queues more than the linger adds. Batches are
    pipelined: up to ``max_in_flight`` writes await their confirms at once and a write
    waits only for its own batch's confirms, never for an earlier batch's.
    """

    def __init__(
        self,
        amqp_url: str,
        cluster: str,
        *,
        producer_id: str | None = None,
        linger: float = 0.005,
        max_batch: int = 500,
        max_in_flight: int = 5000,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        self.amqp_url = amqp_url  # broker URL
        self.cluster = cluster  # cluster name (names the queues)
        self.producer_id = producer_id or uuid.uuid4().hex  # the session id on every write
        self.linger = linger  # seconds a batch waits for more publishes (0: none)
        self.max_batch = max_batch  # most writes per batch
        self.max_in_flight = max_in_flight  # writes published and not yet confirmed, at most
        self.attempt_timeout = attempt_timeout  # receipt wait before a re-publish
        self._next_seq = 1  # invariant: greater than every seq handed out
        self._outbox: deque[_Write] = deque()  # waiting to be published, in seq order
        self._wakeup = asyncio.Event()  # set when the outbox gets work
        self._receipts: dict[str, _Write] = {}  # correlation_id -> write awaiting a receipt
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._sender: asyncio.Task[None] | None = None
        self._in_flight = 0  # writes handed to the broker whose confirm is still awaited
        self._capacity = asyncio.Event()  # set when a confirm freed room below max_in_flight
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
        """Connect, declare the writes queue and start the reply consumer and the sender."""
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        await topology.declare_writes(channel, self.cluster)
        # One long-lived reply queue per producer (aio-pika RPC pattern), named so that a
        # robust reconnect re-declares the same name.
        self._reply_queue = await channel.declare_queue(
            f"raftmq.{self.cluster}.reply.{self.producer_id}.{uuid.uuid4().hex[:8]}",
            exclusive=True,
            auto_delete=True,
        )
        await self._reply_queue.consume(self._on_receipt, no_ack=True)
        self._sender = asyncio.create_task(self._send_loop(), name=f"producer-{self.producer_id}")

    async def close(self) -> None:
        """Stop sending; fail every write still waiting; close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for waiter in list(self._confirm_waiters):
            waiter.cancel()
        error = RaftMQError("producer closed")
        for write in list(self._outbox) + list(self._receipts.values()):
            for future in (write.confirmed, write.receipt):
                if future is not None and not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: nobody may be awaiting any more
        self._outbox.clear()
        self._receipts.clear()
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
        the cluster dead-lettered the write, ``TimeoutError`` after ``timeout`` seconds.
        """
        if self._closed or self._sender is None or self._reply_queue is None:
            raise RaftMQError("producer is not started (use `async with Producer(...)`)")
        seq = self._next_seq
        self._next_seq += 1
        loop = asyncio.get_running_loop()
        all_headers: dict[str, HeaderValue] = dict(headers or {})
        all_headers[topology.H_PRODUCER] = self.producer_id
        all_headers[topology.H_SEQ] = seq
        correlation_id = str(seq)
        message = aio_pika.Message(
            body,
            content_type=content_type,
            message_id=message_id,
            headers=dict(all_headers),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            reply_to=self._reply_queue.name if wait_commit else None,
            correlation_id=correlation_id if wait_commit else None,
        )
        write = _Write(
            seq=seq,
            message=message,
            confirmed=loop.create_future(),
            receipt=loop.create_future() if wait_commit else None,
        )
        if write.receipt is not None:
            self._receipts[correlation_id] = write
        self._enqueue(write)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(write.confirmed)
                if write.receipt is None:
                    return Receipt(index=None, term=None, duplicate=False, seq=seq)
                return await self._await_receipt(write)
        except BaseException:
            write.abandoned = True
            self._receipts.pop(correlation_id, None)
            with contextlib.suppress(ValueError):
                self._outbox.remove(write)
            raise

    async def _await_receipt(self, write: _Write) -> Receipt:
        assert write.receipt is not None
        loop = asyncio.get_running_loop()
        waiting_since = loop.time()
        while True:
            # Receipts of this producer come in queue order: while any arrives, the cluster
            # is working through our backlog, so only a silence of attempt_timeout counts.
            quiet_since = max(waiting_since, self._last_receipt_at)
            remaining = quiet_since + self.attempt_timeout - loop.time()
            if remaining > 0:
                done, _ = await asyncio.wait({write.receipt}, timeout=remaining)
                if done:
                    return write.receipt.result()
                continue
            # Silence: the leader may have died with the write unacked (it returns to the
            # queue) or the receipt was lost. Re-publishing the same seq is safe.
            logger.info(
                "no receipt for seq %s after %.1f s of silence; re-publishing",
                write.seq,
                self.attempt_timeout,
            )
            write.confirmed = loop.create_future()
            self._enqueue(write)
            await asyncio.shield(write.confirmed)
            waiting_since = loop.time()

    def _enqueue(self, write: _Write) -> None:
        # Keep the outbox in seq order: a retry goes before every newer seq (protocol §4).
        if self._outbox and self._outbox[-1].seq > write.seq:
            items = sorted([*self._outbox, write], key=lambda w: w.seq)
            self._outbox.clear()
            self._outbox.extend(items)
        else:
            self._outbox.append(write)
        self._wakeup.set()

    async def _on_receipt(self, message: AbstractIncomingMessage) -> None:
        write = self._receipts.get(message.correlation_id or "")
        if write is None or write.receipt is None or write.receipt.done():
            return  # a second receipt (redelivered write) or one for an abandoned write
        status = (message.headers or {}).get(topology.H_STATUS)
        try:
            answer = json.loads(message.body)
        except ValueError:
            logger.warning("receipt for seq %s is not JSON: %r", write.seq, message.body[:200])
            return
        del self._receipts[message.correlation_id or ""]
        self._last_receipt_at = asyncio.get_running_loop().time()
        if status == "ok":
            # A duplicate whose original's place the cluster no longer knows has index and
            # term null (protocol §3): it is committed, just not locatable.
            index, term = answer.get("index"), answer.get("term")
            known = index is not None and term is not None
            write.receipt.set_result(
                Receipt(
                    index=int(index) if known else None,
                    term=int(term) if known else None,
                    duplicate=bool(answer.get("duplicate", False)),
                    seq=write.seq,
                )
            )
        else:
            write.receipt.set_exception(
                WriteRejected(f"write seq {write.seq} rejected: {answer.get('reason')}")
            )

    async def _send_loop(self) -> None:
        assert self._channel is not None
        while True:
            await self._wakeup.wait()
            if self.linger > 0 and len(self._outbox) < self.max_batch:
                await asyncio.sleep(self.linger)
            while self._in_flight >= self.max_in_flight:  # the broker is behind: wait
                self._capacity.clear()
                await self._capacity.wait()
            batch: list[_Write] = []
            while self._outbox and len(batch) < self.max_batch:
                write = self._outbox.popleft()
                if not write.abandoned and not write.confirmed.done():
                    batch.append(write)
            if not self._outbox:
                self._wakeup.clear()
            if batch:
                await self._publish_batch(batch)

    async def _publish_batch(self, batch: list[_Write]) -> None:
        """Write ``batch`` to the broker in ONE socket write, in seq order, and return
        without waiting for its confirms: the next batch goes out while this one is being
        confirmed (pipelined). aio-pika's ``publish`` costs a task, a lock round, futures
        and a socket write per message; here one counter stands for the batch's confirms."""
        assert self._channel is not None
        for write in batch:
            write.attempts += 1
        try:
            channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
            number, step = channel.number, channel.max_content_size
            publish = amqp_frame.marshal(
                commands.Basic.Publish(
                    exchange="", routing_key=topology.writes_queue(self.cluster)
                ),
                number,
            )
            confirmed = await publish_confirmed(
                channel, [_frames(number, step, publish, write.message) for write in batch]
            )
        except Exception as exc:  # the channel is gone: retried after the reconnect
            logger.debug("publish of %s writes failed: %r", len(batch), exc)
            self._retry_later(batch)
            return
        self._in_flight += len(batch)
        waiter = asyncio.ensure_future(self._confirm_batch(batch, channel, confirmed))
        self._confirm_waiters.add(waiter)
        waiter.add_done_callback(self._confirm_waiters.discard)

    async def _confirm_batch(
        self, batch: list[_Write], channel: aiormq.Channel, confirmed: asyncio.Future[None]
    ) -> None:
        closing = channel.closing  # pending confirms never resolve on a closed channel
        try:
            await asyncio.wait((confirmed, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()  # an observer future: cancel it after use, or it leaks
            self._in_flight -= len(batch)
            self._capacity.set()
        if confirmed.done() and confirmed.exception() is None:
            for write in batch:
                if not write.confirmed.done():
                    write.confirmed.set_result(None)
            return
        # A nack or a closed channel: re-publish the whole batch (same seqs, so the
        # cluster appends each write at most once).
        logger.debug("%s writes not confirmed; re-publishing", len(batch))
        self._retry_later(batch)

    def _retry_later(self, batch: list[_Write]) -> None:
        def requeue() -> None:
            for write in reversed(batch):
                if not write.abandoned and not write.confirmed.done():
                    self._outbox.appendleft(write)
            self._wakeup.set()

        # A pause for the robust connection to reconnect; failures go first (oldest seqs).
        asyncio.get_running_loop().call_later(_RETRY_PAUSE, requeue)


def _frames(number: int, step: int, publish: bytes, message: aio_pika.Message) -> bytes:
    """The wire frames of one write on channel ``number``: the pre-marshalled
    basic.publish, the content header (the message's properties) and the body frames."""
    body = message.body
    out = [publish, amqp_frame.marshal(ContentHeader(0, len(body), message.properties), number)]
    for k in range(0, len(body), step):
        out.append(amqp_frame.marshal(ContentBody(body[k : k + step]), number))
    return b"".join(out)
