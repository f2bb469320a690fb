"""Replay server: every node consumes ``raftmq.C.replay`` and answers from its database.

Request: JSON ``{"from": int, "to": int | null, "max": int}`` with ``reply_to`` and
``correlation_id``. Answer, to ``reply_to`` with the same correlation id: each published
entry of ``[from, min(to, applied)]`` (at most ``max``), formatted exactly like a
committed fan-out message, then an end marker: empty body, header ``raftmq-replay-end`` =
last index covered (``from - 1`` when nothing was covered). Entries that never reach the
committed exchange (NOOPs, watermark entries, duplicates) are skipped but covered.
A request that is not valid JSON of that shape gets an ``raftmq-status: error`` reply
(when it has ``reply_to``) and is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raftmq._amqp.topology import declare_replay
from raftmq.node.types import ServiceHost
from raftmq.protocol.names import H_REPLAY_END, H_STATUS
from raftmq.services.fanout import committed_message, previous_published, publishable

logger = logging.getLogger("raftmq.services.replay")

MAX_REPLAY = 10_000  # entries answered per request at most, whatever ``max`` asks
_READ_BYTES = 4 << 20  # bytes of entries read from storage at once
_RETRY_DELAY = 1.0  # seconds before reconnecting after a failure


class ReplayRequest(BaseModel):
    """A subscriber's request for entries it missed."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    start: int = Field(alias="from", ge=1)  # first index wanted
    to: int | None = Field(default=None, ge=0)  # last index wanted; None: up to the commit
    max: int = Field(default=1000, ge=1)  # entries at most (capped by MAX_REPLAY)


class ReplayServer:
    """Answers replay requests from this node's database (on every node, leader or not)."""

    def __init__(self, node: ServiceHost, amqp_url: str, *, prefetch: int = 4) -> None:
        self.node = node  # whose database answers
        self.amqp_url = amqp_url  # broker URL (own connection)
        self.prefetch = prefetch  # requests handled at once
        node.count("replay_answered", 0)  # replay requests answered
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming replay requests."""
        self._task = asyncio.create_task(self._run(), name=f"raftmq-replay-{self.node.node_id}")

    async def stop(self) -> None:
        """Stop consuming (an unanswered request goes back to the queue)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: replay server failed; retrying", self.node.node_id)
            await asyncio.sleep(_RETRY_DELAY)

    async def _serve(self) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await declare_replay(channel, self.node.cluster)
            async with queue.iterator() as requests:
                async for request in requests:
                    try:
                        await self.answer(channel, request)
                    finally:
                        await request.ack()
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def answer(self, channel: AbstractChannel, request: AbstractIncomingMessage) -> None:
        """Answer one request (its ack is the caller's)."""
        if not request.reply_to:
            return
        exchange = channel.default_exchange
        try:
            ask = ReplayRequest.model_validate_json(request.body)
        except ValidationError as exc:
            reason = f"bad replay request: {exc.error_count()} errors"
            await exchange.publish(
                aio_pika.Message(
                    json.dumps({"reason": reason}).encode(),
                    correlation_id=request.correlation_id,
                    headers={H_STATUS: "error"},
                ),
                routing_key=request.reply_to,
                mandatory=False,
            )
            return
        node = self.node
        hi = node.applied_index if ask.to is None else min(ask.to, node.applied_index)
        budget = min(ask.max, MAX_REPLAY)
        covered = ask.start - 1
        prev = await previous_published(node, covered)
        lo = ask.start
        while lo <= hi and budget > 0:
            entries = await node.committed_entries(lo, hi, _READ_BYTES)
            if not entries:
                break
            for entry in entries:
                record = publishable(node, entry)
                if record is not None:
                    if budget == 0:
                        break
                    message = committed_message(entry, record, prev)
                    message.correlation_id = request.correlation_id
                    await exchange.publish(message, routing_key=request.reply_to, mandatory=False)
                    prev = entry.index
                    budget -= 1
                covered = entry.index
            lo = covered + 1
        await exchange.publish(
            aio_pika.Message(
                b"", correlation_id=request.correlation_id, headers={H_REPLAY_END: covered}
            ),
            routing_key=request.reply_to,
            mandatory=False,
        )
        node.count("replay_answered")
