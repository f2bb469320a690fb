"""The subscriber's side of replay: fill a gap in the committed stream (or catch up from
an earlier index) with messages asked from the cluster's replay queue.

Wire protocol: docs/protocol.md section 7 (the server side is raftmq.services.replay). Requests go
to ``raftmq.<cluster>.replay``; answers come back on one reply queue consumed for the
subscriber's lifetime and are routed by correlation id (aio-pika's RPC pattern).

An answer is hostile like any delivery: an error reply (a throttled or refused request)
counts as an empty answer and is asked again after a pause; a message that is not a
committed message is dropped and counted; an end marker that is not an index claims
nothing.

An end marker with ``raftmq-replay-first`` says the answering node compacted the asked
index (retention): the request is asked again (another node may still hold it) up to
``COMPACTED_ASKS`` times in all; then the policy decides: ``"raise"`` raises
:class:`~raftmq.errors.Compacted`, ``"skip"`` counts the lost indexes (``compacted``) and
goes on from the first available one. A claim is never believed beyond the gap being
filled: a forged marker can skip at most the indexes the subscriber was missing anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter, deque
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractRobustChannel

from raftmq._amqp.delivery import Delivered, properties
from raftmq.client.committed import CommittedMessage, parse_delivered
from raftmq.errors import Compacted, MalformedMessage
from raftmq.protocol import names

__all__ = ["COMPACTED_ASKS", "OnCompacted", "ReplayClient"]

OnCompacted = Literal["raise", "skip"]
"""What a subscriber does when the entries it needs were compacted (module docstring)."""

COMPACTED_ASKS = 3  # answers saying "compacted" before the policy applies

logger = logging.getLogger("raftmq.client.replay")


class ReplayClient:
    """Asks the replay queue of ``cluster`` for committed messages on ``channel``; answers
    arrive on the queue named ``reply_to``, whose consumer calls :meth:`on_reply`."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        reply_to: str,
        cluster: str,
        *,
        counters: Counter[str] | None = None,
        on_compacted: OnCompacted = "raise",
    ) -> None:
        self.channel = channel  # the subscriber's channel (robust: survives reconnects)
        self.reply_to = reply_to  # the subscriber's exclusive reply queue
        self.cluster = cluster  # cluster name
        # replay_malformed / replay_error: answers dropped, error replies received
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.on_compacted = on_compacted  # raise Compacted, or skip to the first available
        self._replies: dict[str, asyncio.Queue[Delivered]] = {}

    async def on_reply(self, delivered: Delivered) -> None:
        """Consumer callback of the reply queue: hand an answer to its request."""
        answers = self._replies.get(properties(delivered).correlation_id or "")
        if answers is not None:
            answers.put_nowait(delivered)

    async def fill(
        self,
        first: int,
        wanted: int | None,
        ready: deque[tuple[CommittedMessage, Delivered | None]],
        last: int | None,
        *,
        batch: int,
        timeout: float,
        give_up: float = float("inf"),
    ) -> bool:
        """Replay [first, wanted] (``wanted`` None: up to the answering node's commit) into
        the ready queue, re-asking until the wanted index is covered. ``last``: the last
        index yielded (None: none yet); what is not above it and ``ready`` is dropped.
        ``batch``: the "max" of one request; ``timeout``: seconds without an answer
        message before asking again. Returns False when ``wanted`` is still not covered
        after ``give_up`` seconds in which no message came (an index no node has: the
        message that named it was not the cluster's); True otherwise. Raises
        :class:`Compacted` when ``first`` was compacted and the policy is ``"raise"``."""
        pause = 0.05
        progressed_at = time.monotonic()
        compacted: list[int] = []  # first available indexes claimed for this ``first``
        while True:
            got, end, first_held = await self._replay_once(first, wanted, batch, timeout)
            if first_held is not None and first_held > first and not got:
                compacted.append(first_held)
                if len(compacted) < COMPACTED_ASKS:
                    continue  # another node may still hold it
                first = self._skip_compacted(first, min(compacted), wanted)
                compacted.clear()
                progressed_at = time.monotonic()
                if wanted is not None and first > wanted:
                    return True
                continue
            compacted.clear()
            for message in got:
                if last is None or message.index > max(last, _top(ready)):
                    ready.append((message, None))
            if wanted is None and len(got) < batch:
                return True
            if wanted is not None and end >= wanted:
                return True
            if got:
                pause = 0.05
                progressed_at = time.monotonic()
            elif time.monotonic() - progressed_at >= give_up:
                return False
            else:  # the answering node lags behind the fan-out: ask again shortly
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            first = max(first, end + 1)

    def _skip_compacted(self, first: int, first_held: int, wanted: int | None) -> int:
        """Apply the policy to a compacted ``first``: the index to go on from (skip), or
        raise :class:`Compacted`. A claim beyond the gap (``wanted``) is cut to it."""
        if wanted is not None:
            first_held = min(first_held, wanted + 1)
        if self.on_compacted == "raise":
            raise Compacted(first, first_held)
        self.counters["compacted"] += first_held - first
        logger.warning(
            "entries %s..%s were compacted by the cluster's retention: skipped",
            first,
            first_held - 1,
        )
        return first_held

    async def _replay_once(
        self, first: int, wanted: int | None, batch: int, timeout: float
    ) -> tuple[list[CommittedMessage], int, int | None]:
        """One replay request/answer; re-asked when no answer comes in time. Returns the
        messages, the last index covered and the first index the node holds when it said
        ``first`` was compacted (None otherwise)."""
        request = json.dumps({"from": first, "to": wanted, "max": batch}).encode()
        while True:
            correlation_id = uuid.uuid4().hex
            answers: asyncio.Queue[Delivered] = asyncio.Queue()
            self._replies[correlation_id] = answers
            try:
                # Through the replay exchange: a subscriber account needs no write on
                # the default exchange (docs/protocol.md section 10).
                exchange = await self.channel.get_exchange(
                    names.replay_exchange(self.cluster), ensure=False
                )
                await exchange.publish(
                    aio_pika.Message(
                        request,
                        content_type="application/json",
                        reply_to=self.reply_to,
                        correlation_id=correlation_id,
                    ),
                    routing_key="",
                )
                got: list[CommittedMessage] = []
                while True:
                    answer = await asyncio.wait_for(answers.get(), timeout=timeout)
                    headers = properties(answer).headers
                    headers = headers if isinstance(headers, dict) else {}
                    if names.H_REPLAY_END in headers:
                        held = headers.get(names.H_REPLAY_FIRST)
                        return (
                            got,
                            _end(headers[names.H_REPLAY_END], first),
                            held if type(held) is int else None,
                        )
                    if names.H_STATUS in headers:  # refused (throttled, bad request)
                        self.counters["replay_error"] += 1
                        logger.info("replay refused: %r", answer.body[:200])
                        return got, first - 1, None
                    try:
                        got.append(parse_delivered(answer)[0])
                    except MalformedMessage as exc:
                        self.counters["replay_malformed"] += 1
                        logger.info("dropping a replay answer: %s", exc)
            except TimeoutError:
                logger.info("no replay answer for %s..%s; asking again", first, wanted)
            finally:
                self._replies.pop(correlation_id, None)


def _end(value: object, first: int) -> int:
    """The index an end marker covers; ``first - 1`` (nothing) when it is not an int."""
    return value if type(value) is int else first - 1


def _top(ready: deque[tuple[CommittedMessage, Delivered | None]]) -> int:
    return ready[-1][0].index if ready else 0
