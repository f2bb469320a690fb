"""Fixtures for the queue tests.

``ProtocolNode`` plays the node's side of docs/protocol.md with plain aio-pika (consume
the writes queue, append to an in-memory log with producer sessions, publish receipts and
committed messages, answer replay requests). It is a protocol test double for the client
tests, written from the document, with knobs to lose or repeat messages on purpose.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from raftmq._amqp import topology
from raftmq.protocol import names
from raftmq.protocol.record import BATCH_TYPE, Record, decode_batch


@dataclass
class LoggedWrite:
    """One entry of the double's log."""

    index: int  # log index
    term: int  # term
    body: bytes  # producer body
    content_type: str | None  # producer content type
    message_id: str | None  # producer message id
    headers: dict[str, Any]  # producer headers


@dataclass
class ProtocolNode:
    """A single 'node' speaking the client protocol, for client tests."""

    channel: AbstractChannel  # a confirm-mode channel
    cluster: str  # cluster name
    term: int = 1  # term stamped on entries
    log: list[LoggedWrite] = field(default_factory=list)  # committed writes, index order
    next_index: int = 1  # next free index (NOOPs may skip some)
    seen: list[tuple[str | None, int | None]] = field(default_factory=list)  # (producer, seq)
    sessions: dict[str, dict[int, int]] = field(default_factory=dict)  # producer -> seq->index
    drop_receipts: set[int] = field(default_factory=set)  # seqs whose first receipt is lost
    drop_fanout: set[int] = field(default_factory=set)  # indexes never published live
    reject: Callable[[bytes], str | None] = lambda body: None  # body -> dead-letter reason
    replay_requests: list[dict[str, Any]] = field(default_factory=list)  # requests received
    last_published: int = 0  # raftmq-prev-index of the next fan-out message
    batch_sizes: list[int] = field(default_factory=list)  # writes per message received
    _commit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        """Declare the cluster's objects and consume writes and replay requests."""
        await topology.declare_all(self.channel, self.cluster)
        writes = await topology.declare_writes(self.channel, self.cluster)
        replay = await topology.declare_replay(self.channel, self.cluster)
        await writes.consume(self._on_write)
        await replay.consume(self._on_replay)

    def noop(self) -> None:
        """Take one index without a write (like a new leader's NOOP entry)."""
        self.next_index += 1

    def _headers(self, entry: LoggedWrite, prev: int) -> dict[str, Any]:
        return {
            **entry.headers,
            names.H_INDEX: entry.index,
            names.H_TERM: entry.term,
            names.H_PREV_INDEX: prev,
        }

    def _message(self, entry: LoggedWrite, prev: int, correlation_id: str | None = None) -> Any:
        return aio_pika.Message(
            entry.body,
            content_type=entry.content_type,
            message_id=entry.message_id,
            headers=self._headers(entry, prev),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=correlation_id,
        )

    async def publish_committed(self, entry: LoggedWrite, prev: int) -> None:
        """Publish ``entry`` on the committed exchange (also used to send a duplicate)."""
        exchange = await self.channel.get_exchange(names.committed_exchange(self.cluster))
        await exchange.publish(self._message(entry, prev), routing_key="")

    async def _receipt(self, write: AbstractIncomingMessage, status: str, body: Any) -> None:
        if not write.reply_to:
            return
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                headers={names.H_STATUS: status},
                correlation_id=write.correlation_id,
            ),
            routing_key=write.reply_to,
        )

    async def _on_write(self, write: AbstractIncomingMessage) -> None:
        async with self._commit_lock:
            if write.type == BATCH_TYPE:
                results: list[dict[str, Any]] = []
                lost = False
                payloads = decode_batch(write.body)
                self.batch_sizes.append(len(payloads))
                for payload in payloads:
                    record = Record.decode(payload)
                    headers: dict[str, Any] = dict(record.headers)
                    if record.producer_id is not None:
                        headers[names.H_PRODUCER] = record.producer_id
                        headers[names.H_SEQ] = record.seq
                    result, dropped = await self._accept(
                        record.body, record.content_type, record.message_id, headers
                    )
                    results.append(result)
                    lost = lost or dropped
                if not lost:
                    await self._receipt(write, "ok", {"results": results})
            else:
                self.batch_sizes.append(1)
                result, dropped = await self._accept(
                    write.body, write.content_type, write.message_id, dict(write.headers or {})
                )
                if not dropped:
                    await self._receipt(write, "error" if "reason" in result else "ok", result)
            await write.ack()

    async def _accept(
        self, body: bytes, content_type: str | None, message_id: str | None, headers: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """One write: (its receipt fields, whether its receipt is to be lost)."""
        producer: str | None = headers.get(names.H_PRODUCER)
        seq: int | None = headers.get(names.H_SEQ)
        self.seen.append((producer, seq))
        reason = self.reject(body)
        if reason is not None:
            return {"reason": reason}, False
        session = self.sessions.setdefault(producer, {}) if producer else None
        if session is not None and seq is not None and session and seq <= max(session):
            index = session.get(seq, session[max(session)])
            return {"seq": seq, "index": index, "term": 1, "duplicate": True}, False
        entry = LoggedWrite(self.next_index, self.term, body, content_type, message_id, headers)
        self.next_index += 1
        self.log.append(entry)
        if session is not None and seq is not None:
            session[seq] = entry.index
        if entry.index not in self.drop_fanout:
            await self.publish_committed(entry, self.last_published)
        self.last_published = entry.index
        dropped = seq in self.drop_receipts
        self.drop_receipts.discard(seq)
        return {"seq": seq, "index": entry.index, "term": entry.term, "duplicate": False}, dropped

    async def _on_replay(self, request: AbstractIncomingMessage) -> None:
        asked = json.loads(request.body)
        self.replay_requests.append(asked)
        first, last, most = asked["from"], asked["to"], asked["max"]
        sent = first - 1
        previous = 0
        count = 0
        for entry in self.log:
            if entry.index >= first and (last is None or entry.index <= last) and count < most:
                await self.channel.default_exchange.publish(
                    self._message(entry, previous, request.correlation_id),
                    routing_key=request.reply_to or "",
                )
                sent = entry.index
                count += 1
            previous = entry.index
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                b"",
                headers={names.H_REPLAY_END: sent},
                correlation_id=request.correlation_id,
            ),
            routing_key=request.reply_to or "",
        )
        await request.ack()


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    """A publisher-confirm channel on its own connection, closed after the test."""
    connection = await aio_pika.connect(amqp_url)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


@pytest.fixture
async def protocol_node(amqp_url: str, cluster_name: str) -> AsyncIterator[ProtocolNode]:
    """A running ProtocolNode for ``cluster_name``; the cluster's objects are deleted after."""
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    node = ProtocolNode(channel, cluster_name)
    await node.start()
    try:
        yield node
    finally:
        cleanup = await connection.channel()
        await topology.delete_all(cleanup, cluster_name)
        await connection.close()
