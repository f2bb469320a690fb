"""The subscriber's side of replay: fill a gap in the committed stream (or catch up from
an earlier index) with messages asked from the cluster's replay queue.

Wire protocol: docs/protocol.md section 7 (the server side is raftmq.services.replay). Requests go
to ``raftmq.<cluster>.replay``; answers come back on one reply queue consumed for the
subscriber's lifetime and are routed by correlation id (aio-pika's RPC pattern).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque

import aio_pika
from aio_pika.abc import AbstractRobustChannel

from raftmq._amqp.delivery import Delivered, properties
from raftmq.client.committed import CommittedMessage, parse_delivered
from raftmq.protocol import names

__all__ = ["ReplayClient"]

logger = logging.getLogger("raftmq.client.replay")


class ReplayClient:
    """Asks the replay queue of ``cluster`` for committed messages on ``channel``; answers
    arrive on the queue named ``reply_to``, whose consumer calls :meth:`on_reply`."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        reply_to: str,
        cluster: str,
    ) -> None:
        self.channel = channel  # the subscriber's channel (robust: survives reconnects)
        self.reply_to = reply_to  # the subscriber's exclusive reply queue
        self.cluster = cluster  # cluster name
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
    ) -> None:
        """Replay [first, wanted] (``wanted`` None: up to the answering node's commit) into
        the ready queue, re-asking until the wanted index is covered. ``last``: the last
        index yielded (None: none yet); what is not above it and ``ready`` is dropped.
        ``batch``: the "max" of one request; ``timeout``: seconds without an answer
        message before asking again."""
        pause = 0.05
        while True:
            got, end = await self._replay_once(first, wanted, batch, timeout)
            for message in got:
                if last is None or message.index > max(last, _top(ready)):
                    ready.append((message, None))
            if wanted is None and len(got) < batch:
                return
            if wanted is not None and end >= wanted:
                return
            if got:
                pause = 0.05
            else:  # the answering node lags behind the fan-out: ask again shortly
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            first = max(first, end + 1)

    async def _replay_once(
        self, first: int, wanted: int | None, batch: int, timeout: float
    ) -> tuple[list[CommittedMessage], int]:
        """One replay request/answer; re-asked when no answer comes in time."""
        request = json.dumps({"from": first, "to": wanted, "max": batch}).encode()
        while True:
            correlation_id = uuid.uuid4().hex
            answers: asyncio.Queue[Delivered] = asyncio.Queue()
            self._replies[correlation_id] = answers
            try:
                await self.channel.default_exchange.publish(
                    aio_pika.Message(
                        request,
                        content_type="application/json",
                        reply_to=self.reply_to,
                        correlation_id=correlation_id,
                    ),
                    routing_key=names.replay_queue(self.cluster),
                )
                got: list[CommittedMessage] = []
                while True:
                    answer = await asyncio.wait_for(answers.get(), timeout=timeout)
                    end = (properties(answer).headers or {}).get(names.H_REPLAY_END)
                    if end is not None:
                        return got, int(str(end))
                    got.append(parse_delivered(answer)[0])
            except TimeoutError:
                logger.info("no replay answer for %s..%s; asking again", first, wanted)
            finally:
                self._replies.pop(correlation_id, None)


def _top(ready: deque[tuple[CommittedMessage, Delivered | None]]) -> int:
    return ready[-1][0].index if ready else 0
