"""Ingest: the leader consumes ``raftmq.C.writes`` and turns queued writes into proposals.

Only while the node leads (see :class:`raftmq.services.leading.LeaderService`). Each delivery is
converted to a :class:`Record` by the rules of :mod:`raftmq.services.write_rules`, whose encoded
payload goes to ``ServiceHost.submit_payload`` without an await in between, so all deliveries of
one loop turn become one proposal batch, in queue order.
A delivery is acked only after its entry committed (or it was a duplicate of a committed
write), with one multiple-ack per loop turn over the contiguous settled prefix; the receipt
goes to ``reply_to`` (receipts of one loop turn in one socket write, best effort). Bad
writes are published to ``raftmq.C.dead`` with a ``raftmq-reason`` header (confirmed),
then acked. On losing leadership the consumer is cancelled and the channel closed: unacked
writes go back to the queue for the next leader (client sessions make that safe for
writes with a producer id).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from pydantic import BaseModel

from raftmq._amqp.channel import RawChannel, cancel, consume, underlay
from raftmq._amqp.delivery import Delivered
from raftmq._amqp.topology import declare_dead, declare_writes
from raftmq._amqp.wire import (
    default_publish_frame,
    framing,
    message_frames,
    status_table,
    write_frames,
)
from raftmq.errors import MalformedMessage, NodeStopped, NotLeader, WriteRejected
from raftmq.node.sessions import session_key
from raftmq.node.types import ServiceHost
from raftmq.protocol.names import H_PRODUCER, H_REASON, H_SEQ
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import BATCH_TYPE, Record, decode_batch
from raftmq.services.leading import LeaderService
from raftmq.services.write_rules import BadWrite, Delivery, WriteRules, kept_headers

logger = logging.getLogger("raftmq.services.ingest")

DEFAULT_PREFETCH = 2000  # unacked writes in flight on the leader


def _receipt_body(commit: Commit, seq: int | None = None) -> dict[str, Any]:
    """The receipt fields of a committed write; index 0 (a duplicate whose original's
    place is no longer known) becomes null."""
    body: dict[str, Any] = {} if seq is None else {"seq": seq}
    body["index"] = commit.index or None
    body["term"] = commit.term or None
    body["duplicate"] = commit.duplicate
    return body


class _Acks:
    """Acks the deliveries of one channel with one ``basic.ack(multiple)`` per loop turn
    instead of one frame per message. Only the prefix of delivery tags that are all settled
    (acked after commit, or already nacked) is covered, so a multiple ack never acks a
    delivery whose write is still waiting for its commit."""

    def __init__(self) -> None:
        self._open: list[int] = []  # heap of delivery tags received and not yet covered
        self._settled: dict[int, Delivery | None] = {}  # tag -> to ack / None
        self._scheduled = False  # a flush is queued for this loop turn
        self._sending: set[asyncio.Task[None]] = set()  # ack frames being written

    def received(self, message: Delivery) -> None:
        """Track a new delivery (call before it can be settled)."""
        heapq.heappush(self._open, message.delivery_tag)

    def ack(self, message: Delivery) -> None:
        """Ack ``message`` (its write committed) with the next flush."""
        self._settle(message.delivery_tag, message)

    def nacked(self, message: Delivery) -> None:
        """``message`` was nacked on its own (no longer outstanding at the broker)."""
        self._settle(message.delivery_tag, None)

    def _settle(self, tag: int, message: Delivery | None) -> None:
        self._settled[tag] = message
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        last: Delivery | None = None
        while self._open and self._open[0] in self._settled:
            message = self._settled.pop(heapq.heappop(self._open))
            if message is not None:
                last = message
        if last is not None:
            task = asyncio.create_task(self._send(last))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _send(message: Delivery) -> None:
        with contextlib.suppress(Exception):  # channel gone: redelivered, sessions dedupe
            await message.ack_through()


class _Receipts:
    """Sends the receipts queued during one loop turn in ONE socket write, on a channel
    without confirms (a receipt is best effort: the ack is what counts). aio-pika's
    ``publish`` costs a task, a lock round and a frame write per receipt."""

    def __init__(self, channel: RawChannel) -> None:
        self._channel = channel  # the receipts channel (no confirm mode)
        self._framing = framing(channel)  # its number and body frame size
        self._queued: list[bytes] = []  # wire frames of receipts not yet written
        self._sending: set[asyncio.Task[None]] = set()  # writes in progress

    def send(self, message: Delivery, status: str, body: dict[str, Any]) -> None:
        """Queue the receipt for ``message`` (which has ``reply_to``)."""
        number, max_body = self._framing
        reply_to = message.reply_to or ""
        if len(reply_to.encode()) > 255 or len((message.correlation_id or "").encode()) > 255:
            logger.debug("receipt not sendable to %r: name too long", reply_to[:300])
            return
        frames = message_frames(
            number,
            default_publish_frame(number, reply_to),
            max_body,
            json.dumps(body, separators=(",", ":")).encode(),
            headers=status_table(status),
            content_type="application/json",
            correlation_id=message.correlation_id,
            persistent=False,
        )
        if not self._queued:
            task = asyncio.create_task(self._write())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._queued.append(frames)

    async def _write(self) -> None:
        await asyncio.sleep(0)  # gather every receipt of this loop turn
        payload, self._queued = b"".join(self._queued), []
        await write_frames(self._channel, payload)


class Ingest(LeaderService):
    """Consumes the writes queue while the node leads."""

    name = "ingest"

    def __init__(
        self,
        node: ServiceHost,
        amqp_url: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        content_types: Sequence[str] = (),
        schema: type[BaseModel] | None = None,
    ) -> None:
        super().__init__(node)
        self.amqp_url = amqp_url  # broker URL (own connection)
        self.prefetch = prefetch  # unacked deliveries at once
        self.rules = WriteRules(node.max_write_bytes, tuple(content_types), schema)
        for key in ("committed", "duplicates", "dead", "requeued"):
            node.count(f"ingest_{key}", 0)  # shown by `raftmq status --json`

    async def lead(self) -> None:
        """Consume until cancelled; then cancel the consumer and close the channel."""
        cluster = self.node.cluster
        # Per run: a slow clean-up of a previous run must not touch this run's handlers.
        handlers: set[asyncio.Task[None]] = set()
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await declare_writes(channel, cluster)
            dead = await declare_dead(channel, cluster)
            # Receipts are best effort (the ack is what counts): a channel without confirms
            # spares a broker round trip and a future per receipt.
            receipt_channel = await connection.channel(publisher_confirms=False)
            receipts = _Receipts(await underlay(receipt_channel))
            acks = _Acks()

            async def on_message(delivered: Delivered) -> None:
                # Each delivery runs in a task of its own (aiormq's): handle it right here.
                message = Delivery(delivered)
                acks.received(message)
                task = asyncio.current_task()
                if task is not None:
                    handlers.add(task)
                try:
                    await self._guarded(receipts, dead, acks, message)
                finally:
                    if task is not None:
                        handlers.discard(task)

            consumer = await underlay(channel)
            consumer_tag = await consume(consumer, queue.name, on_message, no_ack=False)
            try:
                await asyncio.Future()  # until cancelled (leadership lost, node stopping)
            finally:
                with contextlib.suppress(Exception):
                    await cancel(consumer, consumer_tag)
        finally:
            for task in list(handlers):
                task.cancel()
            # Closing the channel returns every unacked delivery to the queue.
            with contextlib.suppress(Exception):
                await connection.close()

    async def _guarded(
        self,
        receipts: _Receipts,
        dead: AbstractExchange,
        acks: _Acks,
        message: Delivery,
    ) -> None:
        try:
            await self._handle(receipts, dead, acks, message)
        except Exception:
            # Never leave a delivery unsettled: it would hold back every later ack.
            logger.exception("%s: handling a write failed; requeued", self.node.node_id)
            with contextlib.suppress(Exception):
                await message.nack()
                acks.nacked(message)

    async def _handle(
        self,
        receipts: _Receipts,
        dead: AbstractExchange,
        acks: _Acks,
        message: Delivery,
    ) -> None:
        if message.type == BATCH_TYPE:
            await self._handle_batch(receipts, dead, acks, message)
            return
        try:
            record, payload = self.rules.from_delivery(message)
        except BadWrite as exc:
            await self._dead_letter(receipts, dead, acks, message, exc.reason)
            return
        try:
            outcome = self._submit(record, payload)
            if not isinstance(outcome, Commit):
                outcome = await asyncio.wait_for(outcome, self.node.write_timeout)
        except (NotLeader, WriteRejected, NodeStopped, TimeoutError) as exc:
            await self._requeue(acks, message, exc)
            return
        self._count(outcome.duplicate)
        acks.ack(message)
        if message.reply_to:
            receipts.send(message, "ok", _receipt_body(outcome))

    def _submit(self, record: Record, payload: bytes) -> Commit | asyncio.Future[Commit]:
        """The duplicate receipt of ``record`` when its session already applied it, else
        the future of its commit (``payload``: ``record`` encoded; raises NotLeader,
        WriteRejected, NodeStopped at once)."""
        key = session_key(record)
        if key is not None:
            original = self.node.original(key[0], key[1])
            if original is not None:
                return Commit(original.index or 0, original.term or 0, duplicate=True)
        return self.node.submit_payload(payload)

    def _count(self, duplicate: bool) -> None:
        self.node.count("ingest_duplicates" if duplicate else "ingest_committed")

    async def _requeue(self, acks: _Acks, message: Delivery, reason: BaseException) -> None:
        # Not committed here (or unknown): back to the queue, for the next leader.
        self.node.count("ingest_requeued")
        logger.debug("%s: write requeued: %r", self.node.node_id, reason)
        with contextlib.suppress(Exception):
            await message.nack()
            acks.nacked(message)  # only once the nack frame is queued

    async def _handle_batch(
        self,
        receipts: _Receipts,
        dead: AbstractExchange,
        acks: _Acks,
        message: Delivery,
    ) -> None:
        """A batch message: every record is judged and proposed on its own, all in ONE
        proposal batch; the message is acked once every good record committed and every
        bad one was dead-lettered; one receipt lists the outcome of each record."""
        try:
            payloads = decode_batch(message.body)
        except MalformedMessage as exc:
            await self._dead_letter(receipts, dead, acks, message, f"bad_batch: {exc}")
            return
        results: list[dict[str, Any]] = []
        pending: list[tuple[int, asyncio.Future[Commit]]] = []
        rejected: list[tuple[bytes, str]] = []
        try:
            for payload in payloads:
                try:
                    record, entry = self.rules.from_batch(payload)
                except BadWrite as exc:
                    rejected.append((payload, exc.reason))
                    results.append({"reason": exc.reason})
                    continue
                outcome = self._submit(record, entry)
                if isinstance(outcome, Commit):
                    results.append(_receipt_body(outcome, record.seq))
                else:
                    pending.append((len(results), outcome))
                    results.append({"seq": record.seq} if record.seq is not None else {})
        except (NotLeader, WriteRejected, NodeStopped) as exc:
            for _, future in pending:
                future.cancel()  # nobody will await them: the redelivery decides
            await self._requeue(acks, message, exc)
            return
        if pending:
            futures = [future for _, future in pending]
            done, _ = await asyncio.wait(futures, timeout=self.node.write_timeout)
            failure: BaseException | None = None
            for future in futures:
                if future not in done or future.cancelled():
                    failure = TimeoutError("batch not committed in time")
                elif future.exception() is not None:
                    failure = future.exception()
                if failure is not None:
                    break
            if failure is not None:
                for future in futures:
                    future.cancel()  # the node skips cancelled futures when it applies
                await self._requeue(acks, message, failure)
                return
            for slot, future in pending:
                results[slot].update(_receipt_body(future.result()))
        for payload, reason in rejected:  # only now: a requeued batch dead-letters nothing
            await self._dead_letter_record(dead, message, payload, reason)
        for result in results:
            if "index" in result:
                self._count(result["duplicate"])
        acks.ack(message)
        if message.reply_to:
            receipts.send(message, "ok", {"results": results})

    async def _dead_letter_record(
        self, dead: AbstractExchange, message: Delivery, payload: bytes, reason: str
    ) -> None:
        """Dead-letter one refused record of a batch as a message of its own."""
        try:
            record = Record.decode(payload)
        except MalformedMessage:
            record = Record(body=payload)
        headers: dict[str, Any] = dict(kept_headers(record.headers))
        if record.producer_id is not None:
            headers[H_PRODUCER] = record.producer_id
        if record.seq is not None:
            headers[H_SEQ] = record.seq
        await self._publish_dead(
            dead,
            reason,
            record.body,
            headers,
            content_type=record.content_type,
            message_id=record.message_id,
            correlation_id=message.correlation_id,
        )

    async def _publish_dead(
        self,
        dead: AbstractExchange,
        reason: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        content_type: str | None,
        message_id: str | None,
        correlation_id: str | None,
        content_encoding: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        """Publish a dead letter: ``body`` and ``headers`` plus ``raftmq-reason``,
        persistent, to the dead exchange (the one builder for a refused write, whether a
        whole delivery or one record of a batch)."""
        self.node.count("ingest_dead")
        logger.warning("%s: dead-lettering a write: %s", self.node.node_id, reason)
        letter = aio_pika.Message(
            body,
            headers={**headers, H_REASON: reason},
            content_type=content_type,
            content_encoding=content_encoding,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await dead.publish(letter, routing_key="", mandatory=False)

    async def _dead_letter(
        self,
        receipts: _Receipts,
        dead: AbstractExchange,
        acks: _Acks,
        message: Delivery,
        reason: str,
    ) -> None:
        await self._publish_dead(
            dead,
            reason,
            message.body,
            message.headers or {},
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
        )
        acks.ack(message)
        if message.reply_to:
            receipts.send(message, "error", {"reason": reason})
