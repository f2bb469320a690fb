"""Subscriber against the wire protocol (docs/protocol.md §6-7), with a protocol test
double playing the node: dedupe by index, gap fill from replay, start positions, named
resume."""

from __future__ import annotations

import asyncio

import pytest

from raftmq.client import CommittedMessage, Producer, Subscriber
from tests.queue.conftest import ProtocolNode

pytestmark = pytest.mark.integration


async def _take(
    subscriber: Subscriber, count: int, timeout: float = 20.0
) -> list[CommittedMessage]:
    got: list[CommittedMessage] = []
    async with asyncio.timeout(timeout):
        async for message in subscriber:
            got.append(message)
            if len(got) == count:
                break
    return got


async def _publish(amqp_url: str, cluster: str, bodies: list[bytes]) -> list[int]:
    async with Producer(amqp_url, cluster) as producer:
        receipts = await asyncio.gather(*(producer.publish(b) for b in bodies))
    return [r.index for r in receipts if r.index is not None]


async def test_latest_gets_new_messages_with_headers(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    await _publish(amqp_url, cluster_name, [b"before"])
    async with Subscriber(amqp_url, cluster_name) as subscriber:
        async with Producer(amqp_url, cluster_name) as producer:
            receipt = await producer.publish(
                b"after", content_type="text/plain", headers={"colour": "red"}, message_id="m1"
            )
        [message] = await _take(subscriber, 1)
    assert (message.index, message.term, message.body) == (receipt.index, 1, b"after")
    assert message.content_type == "text/plain" and message.message_id == "m1"
    assert message.headers["colour"] == "red"
    assert message.headers["raftmq-seq"] == 1
    assert protocol_node.replay_requests == []  # "latest" does not look back


async def test_duplicates_are_dropped_by_index(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    async with Subscriber(amqp_url, cluster_name) as subscriber:
        await _publish(amqp_url, cluster_name, [b"a", b"b"])
        # at-least-once fan-out: a new leader publishes b (and a) again
        await protocol_node.publish_committed(protocol_node.log[0], 0)
        await protocol_node.publish_committed(protocol_node.log[1], 1)
        await _publish(amqp_url, cluster_name, [b"c"])
        got = await _take(subscriber, 3)
    assert [(m.index, m.body) for m in got] == [(1, b"a"), (2, b"b"), (3, b"c")]


async def test_gap_is_filled_from_replay_in_order(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    protocol_node.drop_fanout.update({3, 4, 7})
    async with Subscriber(amqp_url, cluster_name) as subscriber:
        await _publish(amqp_url, cluster_name, [b"w1", b"w2"])
        protocol_node.noop()  # index 3 is a NOOP: absent from the log and the exchange
        indexes = await _publish(amqp_url, cluster_name, [f"w{k}".encode() for k in range(3, 9)])
        got = await _take(subscriber, 8)
    assert indexes == [4, 5, 6, 7, 8, 9]
    assert [m.index for m in got] == [1, 2, 4, 5, 6, 7, 8, 9]
    assert [m.body for m in got] == [f"w{k}".encode() for k in range(1, 9)]
    assert protocol_node.replay_requests  # the gaps were asked for


async def test_start_earliest_and_at_index(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    await _publish(amqp_url, cluster_name, [f"old{k}".encode() for k in range(25)])
    async with Subscriber(amqp_url, cluster_name, start="earliest", replay_batch=10) as sub:
        first = await _take(sub, 25)
        await _publish(amqp_url, cluster_name, [b"new"])
        [new] = await _take(sub, 1)
    assert [m.index for m in first] == list(range(1, 26))
    assert (new.index, new.body) == (26, b"new")
    async with Subscriber(amqp_url, cluster_name, start=20) as sub:
        tail = await _take(sub, 7)
    assert [m.index for m in tail] == list(range(20, 27))


async def test_named_subscription_resumes_where_it_stopped(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    name = "audit"
    try:
        async with Subscriber(amqp_url, cluster_name, name=name, start="earliest") as sub:
            await _publish(amqp_url, cluster_name, [f"x{k}".encode() for k in range(10)])
            got = await _take(sub, 4)
        assert [m.index for m in got] == [1, 2, 3, 4]
        # while it is down, more commits land in its durable queue
        await _publish(amqp_url, cluster_name, [f"y{k}".encode() for k in range(5)])
        async with Subscriber(amqp_url, cluster_name, name=name, start="earliest") as sub:
            rest = await _take(sub, 11)
        assert [m.index for m in rest] == list(range(5, 16))
        assert len(protocol_node.replay_requests) == 1  # only the very first start replayed
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)
