"""Subscriber against deliveries nobody should send (docs/protocol.md §6-7): long runs of
duplicates, malformed committed messages, a gap no node can fill and hostile replay
answers are dropped and counted; none of them holds an ack or stops the subscription."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import uuid
from collections import Counter, deque
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from raftmq._amqp import topology
from raftmq._amqp.channel import consume, underlay
from raftmq.client import CommittedMessage, Subscriber
from raftmq.client.replay import ReplayClient
from raftmq.protocol import names
from raftmq.protocol.names import subscription_queue
from tests.queue.conftest import ProtocolNode
from tests.queue.test_client_subscriber import _publish, _take, _wait_depth

pytestmark = pytest.mark.integration


def _committed(headers: dict[str, Any] | None, body: bytes = b"x") -> aio_pika.Message:
    return aio_pika.Message(body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


def _valid(index: int) -> dict[str, Any]:
    return {names.H_INDEX: index, names.H_TERM: 1, names.H_PREV_INDEX: index - 1}


async def _straight_to(
    channel: AbstractChannel, queue: str, messages: list[aio_pika.Message]
) -> None:
    """Publish ``messages`` to ``queue`` through the default exchange (what any account
    that may publish can do), confirmed, in order."""
    for start in range(0, len(messages), 500):
        await asyncio.gather(
            *(
                channel.default_exchange.publish(m, routing_key=queue)
                for m in messages[start : start + 500]
            )
        )


async def test_2000_duplicates_in_a_row_do_not_stall_a_named_subscription(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode, channel: AbstractChannel
) -> None:
    """A re-published run longer than the prefetch (a new leader resumes fan-out from its
    watermark) is dropped and acked as it goes: the new messages behind it arrive, the
    queue ends empty and the stored position is the last index processed."""
    name, dups = "dups", 2000
    queue = subscription_queue(cluster_name, name)
    try:
        async with Subscriber(amqp_url, cluster_name, name=name, prefetch=1000) as sub:
            await _publish(amqp_url, cluster_name, [b"a", b"b"])
            assert [m.index for m in await _take(sub, 2)] == [1, 2]
            await _straight_to(channel, queue, [_committed(_valid(1 + k % 2)) for k in range(dups)])
            fresh = await _publish(amqp_url, cluster_name, [b"n%d" % k for k in range(5)])
            got = await _take(sub, 5, timeout=30)
            assert [m.index for m in got] == fresh == [3, 4, 5, 6, 7]
            assert sub.counters["duplicate"] == dups
        await _wait_depth(amqp_url, queue, 0)  # every drop was acked, not only redelivered
        await _publish(amqp_url, cluster_name, [b"after"])
        async with Subscriber(amqp_url, cluster_name, name=name) as sub:
            assert [m.index for m in await _take(sub, 1)] == [8]  # the position moved to 7
            assert sub.counters["duplicate"] == 0
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


_MALFORMED: list[dict[str, Any] | None] = [
    None,  # no headers at all
    {names.H_TERM: 1, names.H_PREV_INDEX: 0},  # no index
    {**_valid(5), names.H_INDEX: "abc"},
    {**_valid(5), names.H_INDEX: "5"},  # text, not an int
    {**_valid(5), names.H_INDEX: bytearray(b"5")},
    {**_valid(5), names.H_INDEX: decimal.Decimal("5")},
    {**_valid(5), names.H_INDEX: datetime.datetime(2024, 1, 1)},
    {**_valid(5), names.H_INDEX: 2.5},
    {**_valid(5), names.H_INDEX: True},
    {**_valid(5), names.H_INDEX: 0},
    {**_valid(5), names.H_INDEX: -3},
    {**_valid(5), names.H_INDEX: {"nested": 1}},
    {**_valid(5), names.H_INDEX: [1, 2]},
    {**_valid(5), names.H_INDEX: None},
    {names.H_INDEX: 5, names.H_PREV_INDEX: 4},  # no term
    {**_valid(5), names.H_TERM: "1"},
    {**_valid(5), names.H_PREV_INDEX: 5},  # prev not below the index
    {**_valid(5), names.H_PREV_INDEX: "4"},
    {**_valid(5), names.H_PREV_INDEX: -1},
]


async def test_malformed_committed_messages_are_dropped_counted_and_acked(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode, channel: AbstractChannel
) -> None:
    """Missing, garbage and non-int raftmq headers, more of them than the prefetch: each is
    dropped and counted, none raises, none holds an ack; the real messages arrive."""
    name, rounds = "malformed", 20
    queue = subscription_queue(cluster_name, name)
    try:
        async with Subscriber(amqp_url, cluster_name, name=name, prefetch=100) as sub:
            await _publish(amqp_url, cluster_name, [b"a"])
            assert [m.index for m in await _take(sub, 1)] == [1]
            bad = [_committed(h) for _ in range(rounds) for h in _MALFORMED]
            await _straight_to(channel, queue, bad)
            fresh = await _publish(amqp_url, cluster_name, [b"b", b"c"])
            got = await _take(sub, 2, timeout=30)
            assert [(m.index, m.body) for m in got] == list(zip(fresh, [b"b", b"c"], strict=True))
            assert sub.counters["malformed"] == len(bad)
        await _wait_depth(amqp_url, queue, 0)
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


async def test_a_gap_no_node_can_fill_is_dropped_after_the_gap_timeout(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode, channel: AbstractChannel
) -> None:
    """A message claiming an index far beyond the log (its gap is never filled) does not
    hold the subscription: it is dropped after ``gap_timeout`` and the real stream goes on."""
    name = "forged"
    queue = subscription_queue(cluster_name, name)
    far = 10**12
    try:
        async with Subscriber(amqp_url, cluster_name, name=name, gap_timeout=0.5) as sub:
            await _publish(amqp_url, cluster_name, [b"a"])
            assert [m.index for m in await _take(sub, 1)] == [1]
            await _straight_to(channel, queue, [_committed(_valid(far), b"forged")])
            fresh = await _publish(amqp_url, cluster_name, [b"b", b"c"])
            got = await _take(sub, 2, timeout=30)
            assert [(m.index, m.body) for m in got] == list(zip(fresh, [b"b", b"c"], strict=True))
            assert sub.counters["unreachable_gap"] == 1
        # b and c may have come by replay while the gap was tried: their live copies are
        # redelivered to the next subscriber, which drops them as duplicates
        [last] = await _publish(amqp_url, cluster_name, [b"d"])
        async with Subscriber(amqp_url, cluster_name, name=name) as sub:
            assert [(m.index, m.body) for m in await _take(sub, 1)] == [(last, b"d")]
        await _wait_depth(amqp_url, queue, 0)
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


async def test_hostile_replay_answers_are_dropped_and_asked_again(
    amqp_url: str, cluster_name: str, channel: AbstractChannel
) -> None:
    """An error reply, a message without raftmq headers and an end marker that is not an
    index claim nothing: the client counts them, asks again, and takes the good answer."""
    await topology.declare_all(channel, cluster_name)
    replay = await topology.declare_replay(channel, cluster_name)
    reply_queue = await channel.declare_queue(
        names.replay_reply_queue(cluster_name, uuid.uuid4().hex), exclusive=True
    )
    requests: list[dict[str, Any]] = []

    async def answer(request: AbstractIncomingMessage) -> None:
        async def send(body: bytes, headers: dict[str, Any] | None) -> None:
            message = aio_pika.Message(body, headers=headers, correlation_id=request.correlation_id)
            await channel.default_exchange.publish(message, routing_key=request.reply_to or "")

        requests.append(json.loads(request.body))
        if len(requests) == 1:
            await send(b"junk", None)  # malformed: dropped
            await send(b'{"reason": "throttled"}', {names.H_STATUS: "error"})
        elif len(requests) == 2:
            await send(b"", {names.H_REPLAY_END: "everything"})  # not an index
        else:
            await send(b"one", _valid(1))
            await send(b"", {names.H_REPLAY_END: 3})
        await request.ack()

    counters: Counter[str] = Counter()
    client = ReplayClient(channel, reply_queue.name, cluster_name, counters=counters)  # type: ignore[arg-type]
    try:
        await replay.consume(answer)
        raw = await underlay(channel)
        await consume(raw, reply_queue.name, client.on_reply, no_ack=True, consumer_tag="replies")
        ready: deque[tuple[CommittedMessage, Any]] = deque()
        async with asyncio.timeout(20):
            assert await client.fill(1, 3, ready, 0, batch=10, timeout=5)
    finally:
        await topology.delete_all(channel, cluster_name)
    assert [(m.index, m.body) for m, _ in ready] == [(1, b"one")]
    assert counters == Counter(replay_malformed=1, replay_error=1)
    assert len(requests) == 3


async def test_a_lagging_replay_answer_is_caught_up_in_an_idle_cluster(
    amqp_url: str, cluster_name: str, channel: AbstractChannel
) -> None:
    """From earliest, the first replay is answered by a node that lags (it has 2 of the 5
    messages fanned out before the subscriber bound its queue) and no write follows: the
    subscriber asks again while no live message comes, and gets all five."""
    await topology.declare_all(channel, cluster_name)
    replay = await topology.declare_replay(channel, cluster_name)
    requests: list[dict[str, Any]] = []

    async def answer(request: AbstractIncomingMessage) -> None:
        asked = json.loads(request.body)
        requests.append(asked)
        known = 2 if len(requests) == 1 else 5  # the lagging node, then an up-to-date one
        for index in range(asked["from"], known + 1):
            headers = _valid(index)
            message = aio_pika.Message(b"m%d" % index, headers=headers)
            message.correlation_id = request.correlation_id
            await channel.default_exchange.publish(message, routing_key=request.reply_to or "")
        end = aio_pika.Message(b"", headers={names.H_REPLAY_END: max(known, asked["from"] - 1)})
        end.correlation_id = request.correlation_id
        await channel.default_exchange.publish(end, routing_key=request.reply_to or "")
        await request.ack()

    try:
        await replay.consume(answer)
        async with Subscriber(amqp_url, cluster_name, start="earliest", replay_timeout=0.3) as sub:
            got = await _take(sub, 5, timeout=20)
        assert [(m.index, m.body) for m in got] == [(k, b"m%d" % k) for k in range(1, 6)]
        assert [r["from"] for r in requests[:2]] == [1, 3]  # asked again after index 2
    finally:
        await topology.delete_all(channel, cluster_name)
