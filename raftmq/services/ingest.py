"""Ingest: the leader consumes ``raftmq.C.writes`` and turns queued writes into proposals.

Only while the node leads (see :class:`raftmq.services.leading.LeaderService`). Each delivery is
converted to a :class:`Record` by the rules of :mod:`raftmq.services.write_rules`, whose encoded
payload goes to ``ServiceHost.submit_payload`` without an await in between, so all deliveries of
one loop turn become one proposal batch (up to the node loop's per-turn bound), in queue
order; a batch message yields to the event
loop every :data:`TURN_RECORDS` records or :data:`TURN_BYTES` bytes, so that a burst of huge
batches cannot starve the node's heartbeats.
A delivery is acked only after its entry committed (or it was a duplicate of a committed
write), with one multiple-ack per loop turn over the contiguous settled prefix; the receipt
goes to ``reply_to`` (receipts of one loop turn in one socket write, best effort). Bad
writes are published to ``raftmq.C.dead`` with a ``raftmq-reason`` header (confirmed, always
in one frame: :mod:`raftmq.services.dead_letters`), then acked. On losing leadership the
consumer is cancelled and the channel closed: unacked writes go back to the queue for the
next leader (client sessions make that safe for writes with a producer id). A lost
channel, connection or consumer ends the run; the service reconnects while the node leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from raftmq._amqp.channel import cancel, closing_observer, consume, on_broker_cancel, underlay
from raftmq._amqp.connect import BrokersLike, Connector
from raftmq._amqp.delivery import Delivered
from raftmq._amqp.guard import install_header_guard
from raftmq._amqp.topology import declare_dead, declare_writes
from raftmq._amqp.wire import framing
from raftmq.errors import MalformedMessage, NodeStopped, NotLeader, WriteRejected
from raftmq.node.sessions import session_key
from raftmq.node.types import ServiceHost
from raftmq.protocol.names import H_PRODUCER, H_SEQ, connection_name
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import BATCH_TYPE, Record, decode_batch
from raftmq.services.dead_letters import DeadLetters
from raftmq.services.leading import LeaderService
from raftmq.services.settle import Acks, Receipts, receipt_body
from raftmq.services.write_rules import BadWrite, Delivery, WriteRules, kept_headers

logger = logging.getLogger("raftmq.services.ingest")

DEFAULT_PREFETCH = 2000  # unacked writes in flight on the leader
# Records of a batch judged and submitted between two yields, at most: about 10 ms of
# work here (40 us a record), so the node loop's timers keep their pace on a busy machine.
TURN_RECORDS = 256
TURN_BYTES = 1 << 20  # bytes of records judged and submitted between two yields, at most
# Writes submitted to the node and not yet settled, at most: a burst of huge batches waits
# here for commits instead of piling proposals on the loop (whose ticks, heartbeats and
# saves share this event loop), so the leader keeps its followers' lease while it ingests.
MAX_UNSETTLED = 4096
_FRAME_OVERHEAD = 8  # bytes of a frame around its payload


async def committed_all(
    futures: Sequence[asyncio.Future[Commit]], timeout: float
) -> BaseException | None:
    """Wait for the commits of a batch's records: None when every one committed within
    ``timeout``, else the first failure (or a TimeoutError), every future abandoned.
    Cancelled while waiting (ingest stops when leadership is lost), it abandons them too:
    the node fails them with NotLeader later, and nobody would ever look."""
    try:
        done, _ = await asyncio.wait(futures, timeout=timeout)
    except BaseException:
        abandon(futures)
        raise
    for future in futures:
        failure: BaseException | None = None
        if future not in done or future.cancelled():
            failure = TimeoutError("batch not committed in time")
        else:
            failure = future.exception()
        if failure is not None:
            abandon(futures)
            return failure
    return None


def abandon(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Let go of a batch's commit futures once nobody will await them: pending ones are
    cancelled (the node skips cancelled futures when it applies) and the failure of a
    finished one is retrieved, so that a batch requeued after a leadership change does
    not leave asyncio logging "Future exception was never retrieved" once per record."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


class Ingest(LeaderService):
    """Consumes the writes queue while the node leads."""

    name = "ingest"

    def __init__(
        self,
        node: ServiceHost,
        amqp_url: BrokersLike,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        content_types: Sequence[str] = (),
        schema: type[BaseModel] | None = None,
    ) -> None:
        super().__init__(node)
        # The broker URLs (own connection); each retry starts with the next one.
        self.connector = Connector(
            amqp_url, name=connection_name(node.cluster, node.node_id, "ingest")
        )
        self.prefetch = prefetch  # unacked deliveries at once
        # The rules of every write; frame_max becomes the broker's at each connect.
        self.rules = WriteRules(node.max_write_bytes, tuple(content_types), schema)
        install_header_guard()  # a header pamqp cannot decode must not end the connection
        self._unsettled = 0  # submitted writes whose commit future is not done
        self._room = asyncio.Event()  # set while _unsettled < MAX_UNSETTLED
        self._room.set()
        for key in ("committed", "duplicates", "dead", "requeued", "reconnects"):
            node.count(f"ingest_{key}", 0)  # shown by `raftmq status --json`

    def admit(self, record: Record) -> Record:
        """The node's ``write`` request check: the same rules as the writes queue
        (raises WriteRejected with the reason)."""
        return self.rules.admit(record)

    async def lead(self) -> None:
        """Consume until cancelled, or until the channel, connection or consumer is lost;
        then cancel the consumer and close the connection."""
        cluster = self.node.cluster
        # Per run: a slow clean-up of a previous run must not touch this run's handlers.
        handlers: set[asyncio.Task[None]] = set()
        connection = await self.connector.connect()
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await declare_writes(channel, cluster)
            consumer = await underlay(channel)
            # Judge writes by the frame size fan-out publishes with (same broker).
            frame_max = framing(consumer).max_body + _FRAME_OVERHEAD
            self.rules = dataclasses.replace(self.rules, frame_max=frame_max)
            dead = DeadLetters(await declare_dead(channel, cluster), frame_max)
            # Receipts are best effort (the ack is what counts): a channel without confirms
            # spares a broker round trip and a future per receipt.
            receipt_channel = await underlay(await connection.channel(publisher_confirms=False))
            receipts = Receipts(receipt_channel)
            acks = Acks()

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

            taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_taken(_tag: str) -> None:  # e.g. the queue was deleted
                if not taken.done():
                    taken.set_result(None)

            on_broker_cancel(consumer, on_taken)
            consumer_tag = await consume(consumer, queue.name, on_message, no_ack=False)
            try:
                # Until cancelled (leadership lost, node stopping), or until the broker
                # takes the consumer, a channel or the connection away.
                with (
                    closing_observer(consumer) as lost,
                    closing_observer(receipt_channel) as receipts_lost,
                ):
                    await asyncio.wait(
                        (lost, receipts_lost, taken), return_when=asyncio.FIRST_COMPLETED
                    )
                    for closed in (lost, receipts_lost):
                        if closed.done() and not closed.cancelled():
                            closed.exception()  # the close reason: logged below, not raised
                self.node.count("ingest_reconnects")
                logger.warning("%s: ingest lost its channel or consumer", self.node.node_id)
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
        self, receipts: Receipts, dead: DeadLetters, acks: Acks, message: Delivery
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
        self, receipts: Receipts, dead: DeadLetters, acks: Acks, message: Delivery
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
            receipts.send(message, "ok", receipt_body(outcome))

    def _submit(self, record: Record, payload: bytes) -> Commit | asyncio.Future[Commit]:
        """The duplicate receipt of ``record`` when its session already applied it, else
        the future of its commit (``payload``: ``record`` encoded; raises NotLeader,
        WriteRejected, NodeStopped at once)."""
        key = session_key(record)
        if key is not None:
            original = self.node.original(key[0], key[1])
            if original is not None:
                return Commit(original.index or 0, original.term or 0, duplicate=True)
        future = self.node.submit_payload(payload)
        self._unsettled += 1
        if self._unsettled >= MAX_UNSETTLED:
            self._room.clear()
        future.add_done_callback(self._settled)
        return future

    def _settled(self, _future: asyncio.Future[Commit]) -> None:
        self._unsettled -= 1
        if self._unsettled < MAX_UNSETTLED:
            self._room.set()

    def _count(self, duplicate: bool) -> None:
        self.node.count("ingest_duplicates" if duplicate else "ingest_committed")

    async def _requeue(self, acks: Acks, message: Delivery, reason: BaseException) -> None:
        # Not committed here (or unknown): back to the queue, for the next leader.
        self.node.count("ingest_requeued")
        logger.debug("%s: write requeued: %r", self.node.node_id, reason)
        with contextlib.suppress(Exception):
            await message.nack()
            acks.nacked(message)  # only once the nack frame is queued

    async def _handle_batch(
        self, receipts: Receipts, dead: DeadLetters, acks: Acks, message: Delivery
    ) -> None:
        """A batch message: every record is judged and proposed on its own, in batch
        order; the message is acked once every good record committed and every bad one
        was dead-lettered; one receipt lists the outcome of each record."""
        try:
            payloads = decode_batch(message.body)
        except MalformedMessage as exc:
            await self._dead_letter(receipts, dead, acks, message, f"bad_batch: {exc}")
            return
        results: list[dict[str, Any]] = []
        pending: list[tuple[int, asyncio.Future[Commit]]] = []
        rejected: list[tuple[bytes, str]] = []
        turn_records = turn_bytes = 0
        try:
            for payload in payloads:
                if turn_records >= TURN_RECORDS or turn_bytes >= TURN_BYTES:
                    # Let the node loop run (heartbeats, replies) between slices of a
                    # huge batch, and wait while too many writes are unsettled; the
                    # order of this batch's records is kept.
                    await asyncio.sleep(0)
                    await self._room.wait()
                    turn_records = turn_bytes = 0
                turn_records += 1
                turn_bytes += len(payload)
                try:
                    record, entry = self.rules.from_batch(payload)
                except BadWrite as exc:
                    rejected.append((payload, exc.reason))
                    results.append({"reason": exc.reason})
                    continue
                outcome = self._submit(record, entry)
                if isinstance(outcome, Commit):
                    results.append(receipt_body(outcome, record.seq))
                else:
                    pending.append((len(results), outcome))
                    results.append({"seq": record.seq} if record.seq is not None else {})
        except (NotLeader, WriteRejected, NodeStopped) as exc:
            abandon(future for _, future in pending)  # the redelivery decides
            await self._requeue(acks, message, exc)
            return
        except BaseException:  # cancelled (ingest stops when leadership is lost)
            abandon(future for _, future in pending)
            raise
        if pending and not await self._committed(acks, message, results, pending):
            return
        for payload, reason in rejected:  # only now: a requeued batch dead-letters nothing
            await self._dead_letter_record(dead, message, payload, reason)
        for result in results:
            if "index" in result:
                self._count(result["duplicate"])
        acks.ack(message)
        if message.reply_to:
            receipts.send(message, "ok", {"results": results})

    async def _committed(
        self,
        acks: Acks,
        message: Delivery,
        results: list[dict[str, Any]],
        pending: list[tuple[int, asyncio.Future[Commit]]],
    ) -> bool:
        """Wait for the pending records of a batch; fill in their results, or requeue the
        batch and return False when one failed or timed out."""
        futures = [future for _, future in pending]
        failure = await committed_all(futures, self.node.write_timeout)
        if failure is not None:
            await self._requeue(acks, message, failure)
            return False
        for slot, future in pending:
            results[slot].update(receipt_body(future.result()))
        return True

    async def _dead_letter_record(
        self, dead: DeadLetters, message: Delivery, payload: bytes, reason: str
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
        self._counted_dead(reason)
        await dead.publish(
            reason,
            record.body,
            headers,
            content_type=record.content_type,
            message_id=record.message_id,
            correlation_id=message.correlation_id,
        )

    async def _dead_letter(
        self,
        receipts: Receipts,
        dead: DeadLetters,
        acks: Acks,
        message: Delivery,
        reason: str,
    ) -> None:
        """Dead-letter a whole delivery, ack it, and send its error receipt."""
        self._counted_dead(reason)
        await dead.publish(
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

    def _counted_dead(self, reason: str) -> None:
        self.node.count("ingest_dead")
        logger.warning("%s: dead-lettering a write: %.300s", self.node.node_id, reason)
