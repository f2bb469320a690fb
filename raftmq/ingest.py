"""Ingest: the leader consumes ``raftmq.C.writes`` and turns queued writes into proposals.

Only while the node leads (see :class:`raftmq.leading.LeaderService`). Each delivery is
converted to a :class:`Record` and handed to ``node.write_record`` without an await in
between, so all deliveries of one loop turn become one proposal batch, in queue order.
A delivery is acked only after its entry committed (or it was a duplicate of a committed
write); then the receipt goes to ``reply_to``. Bad writes are published to
``raftmq.C.dead`` with a ``raftmq-reason`` header (confirmed), then acked. On losing
leadership the consumer is cancelled and the channel closed: unacked writes go back to the
queue for the next leader (client sessions make that safe for writes with a producer id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from pydantic import BaseModel, ValidationError

from raftmq.errors import NodeStopped, NotLeader, WriteRejected
from raftmq.leading import LeaderService
from raftmq.node import Commit, Node
from raftmq.record import HeaderValue, Record
from raftmq.sessions import MAX_PRODUCER_ID, RESERVED_PREFIX, session_key
from raftmq.topology import H_PRODUCER, H_REASON, H_SEQ, H_STATUS, declare_dead, declare_writes

logger = logging.getLogger("raftmq.ingest")

DEFAULT_PREFETCH = 2000  # unacked writes in flight on the leader


class BadWrite(Exception):
    """A write that can never be committed; ``reason`` goes into ``raftmq-reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # short machine-readable reason plus detail


def _header_value(value: Any) -> HeaderValue | None:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            return value.decode()
    return None  # tables, arrays, timestamps, decimals, void: not carried


def to_record(
    message: AbstractIncomingMessage,
    *,
    max_write_bytes: int,
    content_types: Sequence[str] = (),
    schema: type[BaseModel] | None = None,
) -> Record:
    """The Record of one delivery, or :class:`BadWrite` naming why it is refused."""
    raw = dict(message.headers or {})
    producer = _header_value(raw.pop(H_PRODUCER, None))
    seq_value = raw.pop(H_SEQ, None)
    producer_id: str | None = None
    seq: int | None = None
    if producer is not None or seq_value is not None:
        if not isinstance(producer, str) or not producer:
            raise BadWrite(f"invalid_producer: {H_PRODUCER} must be a non-empty string")
        if len(producer) > MAX_PRODUCER_ID or producer.startswith(RESERVED_PREFIX):
            raise BadWrite(f"invalid_producer: too long or reserved prefix {RESERVED_PREFIX!r}")
        if isinstance(seq_value, bytes | str):
            with contextlib.suppress(ValueError):
                seq_value = int(seq_value)
        if not isinstance(seq_value, int) or isinstance(seq_value, bool) or seq_value < 1:
            raise BadWrite(f"invalid_seq: {H_SEQ} must be an integer >= 1 with {H_PRODUCER}")
        producer_id, seq = producer, seq_value
    if content_types and message.content_type not in content_types:
        raise BadWrite(f"content_type: {message.content_type!r} is not one of {content_types}")
    headers: dict[str, HeaderValue] = {}
    for key, value in raw.items():
        kept = _header_value(value)
        if kept is not None and not key.startswith("raftmq-"):
            headers[key] = kept
    record = Record(
        body=message.body,
        content_type=message.content_type,
        headers=headers,
        message_id=message.message_id or None,
        producer_id=producer_id,
        seq=seq,
    )
    size = len(record.encode())
    if size > max_write_bytes:
        raise BadWrite(f"too_large: {size} bytes exceeds max_write_bytes={max_write_bytes}")
    if schema is not None:
        try:
            schema.model_validate_json(message.body)
        except ValidationError as exc:
            raise BadWrite(
                f"schema: not a valid {schema.__name__}: {exc.error_count()} errors"
            ) from None
    return record


class Ingest(LeaderService):
    """Consumes the writes queue while the node leads."""

    name = "ingest"

    def __init__(
        self,
        node: Node[Any],
        amqp_url: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        content_types: Sequence[str] = (),
        schema: type[BaseModel] | None = None,
    ) -> None:
        super().__init__(node)
        self.amqp_url = amqp_url  # broker URL (own connection)
        self.prefetch = prefetch  # unacked deliveries at once
        self.content_types = tuple(content_types)  # allowed content types; empty: any
        self.schema = schema  # bodies must validate against it, when set
        for key in ("committed", "duplicates", "dead", "requeued"):
            node.counters.setdefault(f"ingest_{key}", 0)  # shown by `raftmq status --json`

    async def lead(self) -> None:
        """Consume until cancelled; then cancel the consumer and close the channel."""
        cluster = self.node.transport.cluster
        # Per run: a slow clean-up of a previous run must not touch this run's handlers.
        handlers: set[asyncio.Task[None]] = set()
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await declare_writes(channel, cluster)
            dead = await declare_dead(channel, cluster)

            async def on_message(message: AbstractIncomingMessage) -> None:
                task = asyncio.create_task(self._handle(channel, dead, message))
                handlers.add(task)
                task.add_done_callback(handlers.discard)

            tag = await queue.consume(on_message, no_ack=False)
            try:
                await asyncio.Future()  # until cancelled (leadership lost, node stopping)
            finally:
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
        finally:
            for task in list(handlers):
                task.cancel()
            # Closing the channel returns every unacked delivery to the queue.
            with contextlib.suppress(Exception):
                await connection.close()

    async def _handle(
        self, channel: AbstractChannel, dead: AbstractExchange, message: AbstractIncomingMessage
    ) -> None:
        try:
            record = to_record(
                message,
                max_write_bytes=self.node.max_write_bytes,
                content_types=self.content_types,
                schema=self.schema,
            )
        except BadWrite as exc:
            await self._dead_letter(channel, dead, message, exc.reason)
            return
        key = session_key(record)
        original = None
        if key is not None:
            original = self.node.sessions.original(key[0], key[1], self.node.core.last_index + 1)
        if original is not None:
            commit = Commit(original.index or 0, original.term or 0, duplicate=True)
        else:
            try:
                commit = await self.node.write_record(record)
            except (NotLeader, WriteRejected, NodeStopped, TimeoutError) as exc:
                # Not committed here (or unknown): back to the queue, for the next leader.
                self.node.counters["ingest_requeued"] += 1
                logger.debug("%s: write requeued: %r", self.node.node_id, exc)
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                return
        self.node.counters["ingest_duplicates" if commit.duplicate else "ingest_committed"] += 1
        await message.ack()
        if message.reply_to:
            # index 0 (a duplicate whose original's place is no longer known) -> null
            body = {
                "index": commit.index or None,
                "term": commit.term or None,
                "duplicate": commit.duplicate,
            }
            await self._reply(channel, message, "ok", body)

    async def _reply(
        self,
        channel: AbstractChannel,
        message: AbstractIncomingMessage,
        status: str,
        body: dict[str, Any],
    ) -> None:
        with contextlib.suppress(Exception):  # a receipt is best effort; the ack counts
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(body).encode(),
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                    headers={H_STATUS: status},
                ),
                routing_key=message.reply_to or "",
                mandatory=False,
            )

    async def _dead_letter(
        self,
        channel: AbstractChannel,
        dead: AbstractExchange,
        message: AbstractIncomingMessage,
        reason: str,
    ) -> None:
        self.node.counters["ingest_dead"] += 1
        logger.warning("%s: dead-lettering a write: %s", self.node.node_id, reason)
        headers = dict(message.headers or {})
        headers[H_REASON] = reason
        await dead.publish(
            aio_pika.Message(
                message.body,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="",
            mandatory=False,
        )
        await message.ack()
        if message.reply_to:
            await self._reply(channel, message, "error", {"reason": reason})
