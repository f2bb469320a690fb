"""Replay server: every node consumes ``raftmq.C.replay`` and answers from its database.

Request: JSON ``{"from": int, "to": int | null, "max": int}`` with ``reply_to`` and
``correlation_id``. Answer, to ``reply_to`` with the same correlation id: each published
entry of ``[from, min(to, applied)]`` (at most ``max``), formatted exactly like a
committed fan-out message, then an end marker: empty body, header ``raftmq-replay-end`` =
last index covered (``from - 1`` when nothing was covered). Entries that never reach the
committed exchange (NOOPs, watermark entries, duplicates) are skipped but covered.
A ``from`` this node's log no longer holds (compacted by retention or a snapshot) is
answered with the end marker alone, covering nothing, plus header ``raftmq-replay-first``
= the first index it holds: the asker decides whether to skip to it.
A request that is not valid JSON of that shape gets an ``raftmq-status: error`` reply
(when it has ``reply_to``) and is dropped.

Every request is bounded, because one small request could otherwise make a node publish
thousands of messages into any queue: an answer holds at most ``max_entries`` messages and
``max_bytes`` of bodies and scans at most ``max_range`` indexes; a ``from`` above the
applied index is answered at once, without reading storage; answers go only to a direct
reply-to address or a replay reply queue of this cluster (anything else is dropped and
counted); each ``reply_to`` may ask ``rate`` times per second (``burst`` at once), more
gets a ``throttled`` error reply, which costs the node one small message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raftmq._amqp.connect import BrokersLike, Connector
from raftmq._amqp.topology import declare_replay
from raftmq.node.types import ServiceHost
from raftmq.protocol.names import (
    H_REPLAY_END,
    H_REPLAY_FIRST,
    H_STATUS,
    connection_name,
    replay_reply_allowed,
)
from raftmq.services.fanout import committed_message, previous_published, publishable

logger = logging.getLogger("raftmq.services.replay")

MAX_REPLAY = 10_000  # entries answered per request at most, whatever ``max`` asks
MAX_REPLAY_BYTES = 16 << 20  # bytes of bodies answered per request at most (one at least)
MAX_REPLAY_RANGE = 50_000  # indexes scanned per request at most (the end marker says where)
REQUESTS_PER_SECOND = 20.0  # requests answered per reply_to and second, on average
REQUESTS_BURST = 40  # requests answered per reply_to at once
_MAX_INDEX = (1 << 63) - 2  # int64 with room for the +1 of the next request
_TRACKED = 10_000  # requesters remembered by the throttle (least recently seen forgotten)
_READ_BYTES = 4 << 20  # bytes of entries read from storage at once
_RETRY_DELAY = 1.0  # seconds before reconnecting after a failure


class ReplayRequest(BaseModel):
    """A subscriber's request for entries it missed."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    start: int = Field(alias="from", ge=1, le=_MAX_INDEX)  # first index wanted
    to: int | None = Field(default=None, ge=0, le=_MAX_INDEX)  # None: up to the commit
    max: int = Field(default=1000, ge=1, le=_MAX_INDEX)  # entries at most (see MAX_REPLAY)


class Throttle:
    """Token buckets per requester (``reply_to``): ``rate`` requests per second on average,
    ``burst`` at once. At most ``tracked`` requesters are remembered; the least recently
    seen is forgotten first (it comes back with a full bucket)."""

    def __init__(self, rate: float, burst: int, tracked: int = _TRACKED) -> None:
        self.rate = rate  # tokens added per second
        self.burst = burst  # bucket size
        self.tracked = tracked  # buckets kept at most
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, at)

    def allow(self, requester: str, now: float) -> bool:
        """Take a token of ``requester``'s bucket; False when it is empty."""
        tokens, at = self._buckets.pop(requester, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[requester] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.tracked:
            self._buckets.popitem(last=False)
        return allowed


class ReplayServer:
    """Answers replay requests from this node's database (on every node, leader or not)."""

    def __init__(
        self,
        node: ServiceHost,
        amqp_url: BrokersLike,
        *,
        prefetch: int = 4,
        max_entries: int = MAX_REPLAY,
        max_bytes: int = MAX_REPLAY_BYTES,
        max_range: int = MAX_REPLAY_RANGE,
        rate: float = REQUESTS_PER_SECOND,
        burst: int = REQUESTS_BURST,
    ) -> None:
        self.node = node  # whose database answers
        # The broker URLs (own connection); each retry starts with the next one.
        self.connector = Connector(
            amqp_url, name=connection_name(node.cluster, node.node_id, "replay")
        )
        self.prefetch = prefetch  # requests delivered at once (answered one by one)
        self.max_entries = max_entries  # messages per answer at most
        self.max_bytes = max_bytes  # bytes of bodies per answer at most (one message at least)
        self.max_range = max_range  # indexes scanned per answer at most
        self.throttle = Throttle(rate, burst)  # requests per reply_to
        node.count("replay_answered", 0)  # replay requests answered
        node.count("replay_refused", 0)  # no reply_to, or one answers may not go to
        node.count("replay_throttled", 0)  # refused: their reply_to asked too often
        node.count("replay_failed", 0)  # answering raised (logged; the next one is served)
        node.count("replay_compacted", 0)  # asked from an index this node compacted
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
        connection = await self.connector.connect()
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await declare_replay(channel, self.node.cluster)
            async with queue.iterator() as requests:
                async for request in requests:
                    try:
                        await self.answer(channel, request)
                    except (asyncio.CancelledError, aio_pika.exceptions.AMQPError):
                        raise  # stopping, or the connection is gone: reconnect
                    except Exception:
                        self.node.count("replay_failed")
                        logger.exception("%s: replay request failed", self.node.node_id)
                    finally:
                        await request.ack()
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def answer(self, channel: AbstractChannel, request: AbstractIncomingMessage) -> None:
        """Answer one request (its ack is the caller's)."""
        node = self.node
        reply_to = request.reply_to
        if not reply_to or not replay_reply_allowed(node.cluster, reply_to):
            node.count("replay_refused")
            logger.debug("%s: replay answer to %r refused", node.node_id, reply_to)
            return
        if not self.throttle.allow(reply_to, time.monotonic()):
            node.count("replay_throttled")
            await _error(channel, request, reply_to, "throttled: too many replay requests")
            return
        try:
            ask = ReplayRequest.model_validate_json(request.body)
        except ValidationError as exc:
            await _error(
                channel, request, reply_to, f"bad replay request: {exc.error_count()} errors"
            )
            return
        exchange = channel.default_exchange
        covered = ask.start - 1  # every index up to it was sent or publishes nothing
        end: dict[str, int] = {}  # the end marker's headers besides H_REPLAY_END
        first_held = await node.first_index()
        if ask.start < first_held and ask.start <= node.applied_index:
            node.count("replay_compacted")
            end[H_REPLAY_FIRST] = first_held
            ask.to = covered  # nothing to read: the end marker says where the log starts
        # Clamped before any read, so a ``from`` beyond the log costs nothing.
        hi = min(node.applied_index, covered + self.max_range)
        if ask.to is not None:
            hi = min(hi, ask.to)
        if ask.start <= hi:
            entries_left, bytes_left = min(ask.max, self.max_entries), self.max_bytes
            prev = await previous_published(node, covered)
            lo, full = ask.start, False
            while lo <= hi and not full:
                entries = await node.committed_entries(lo, hi, _READ_BYTES)
                if not entries:
                    break
                for entry in entries:
                    full = entries_left == 0
                    if full:
                        break
                    record = publishable(node, entry)
                    if record is not None:
                        size = len(record.body)
                        # the first message goes whatever its size; later ones must fit
                        full = size > bytes_left and bytes_left < self.max_bytes
                        if full:
                            break
                        message = committed_message(entry, record, prev)
                        message.correlation_id = request.correlation_id
                        await exchange.publish(message, routing_key=reply_to, mandatory=False)
                        prev = entry.index
                        entries_left -= 1
                        bytes_left -= size
                    covered = entry.index
                lo = covered + 1
        await exchange.publish(
            aio_pika.Message(
                b"",
                correlation_id=request.correlation_id,
                headers={H_REPLAY_END: covered, **end},
            ),
            routing_key=reply_to,
            mandatory=False,
        )
        node.count("replay_answered")


async def _error(
    channel: AbstractChannel, request: AbstractIncomingMessage, reply_to: str, reason: str
) -> None:
    """Reply ``raftmq-status: error`` with ``{"reason": reason}`` (no end marker)."""
    await channel.default_exchange.publish(
        aio_pika.Message(
            json.dumps({"reason": reason}).encode(),
            correlation_id=request.correlation_id,
            headers={H_STATUS: "error"},
        ),
        routing_key=reply_to,
        mandatory=False,
    )
