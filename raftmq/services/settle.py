"""Settling the writes queue's deliveries: acks after commit (one multiple-ack per loop
turn) and receipts (one socket write per loop turn), for the ingest service."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from typing import Any

from raftmq._amqp.channel import RawChannel
from raftmq._amqp.wire import (
    default_publish_frame,
    framing,
    message_frames,
    status_table,
    write_frames,
)
from raftmq.protocol.receipts import Commit
from raftmq.services.write_rules import Delivery

logger = logging.getLogger("raftmq.services.settle")


def receipt_body(commit: Commit, seq: int | None = None) -> dict[str, Any]:
    """The receipt fields of a committed write; index 0 (a duplicate whose original's
    place is no longer known) becomes null."""
    body: dict[str, Any] = {} if seq is None else {"seq": seq}
    body["index"] = commit.index or None
    body["term"] = commit.term or None
    body["duplicate"] = commit.duplicate
    return body


class Acks:
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


class Receipts:
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
