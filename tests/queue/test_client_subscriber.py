"""Subscriber against the wire protocol (docs/protocol.md §6-7), with a protocol test
double playing the node: dedupe by index, gap fill from replay, start positions, named
resume, acks, and recovery from a lost connection or a deleted queue."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from urllib.parse import urlsplit

import aio_pika
import pytest

from raftmq.client import CommittedMessage, Producer, Subscriber
from raftmq.errors import ConfigError
from raftmq.protocol.names import subscription_queue
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


@pytest.mark.parametrize("start", [0, -3])
def test_a_start_index_below_one_raises_config_error(start: int) -> None:
    with pytest.raises(ConfigError, match="start index must be >= 1"):
        Subscriber("amqp://unused", "c", start=start)


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


async def _publish_until_yielded(
    amqp_url: str, cluster: str, subscriber: Subscriber
) -> list[CommittedMessage]:
    """Publish one write every 0.2 s until ``subscriber`` yields again (its queue may have
    missed some meanwhile: a gap it fills from replay), then take the rest up to the last
    index published (the protocol node's indexes have no holes)."""
    first = asyncio.create_task(_take(subscriber, 1, timeout=60))
    last = 0
    async with Producer(amqp_url, cluster) as producer:
        while not first.done():
            receipt = await producer.publish(b"after-%d" % last)
            assert receipt.index is not None
            last = receipt.index
            await asyncio.wait({first}, timeout=0.2)
    got = first.result()
    if got[0].index < last:
        got += await _take(subscriber, last - got[0].index)
    return got


async def _queue_depth(amqp_url: str, queue: str) -> int | None:
    """Messages ready in ``queue``."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count
    finally:
        await connection.close()


async def _wait_depth(amqp_url: str, queue: str, depth: int, timeout: float = 10.0) -> None:
    """Wait until ``queue`` holds ``depth`` messages (a closed consumer's unacked ones are
    requeued by the broker asynchronously)."""
    async with asyncio.timeout(timeout):
        while True:
            if await _queue_depth(amqp_url, queue) == depth:
                return
            await asyncio.sleep(0.05)


async def test_processed_messages_are_acked_and_the_last_unprocessed_is_not(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    name = "acks"
    queue = subscription_queue(cluster_name, name)
    try:
        async with Subscriber(amqp_url, cluster_name, name=name) as sub:
            await _publish(amqp_url, cluster_name, [b"m%d" % k for k in range(250)])
            got = await _take(sub, 250)  # more than one flush: acks during iteration too
        assert [m.index for m in got] == list(range(1, 251))
        await _wait_depth(amqp_url, queue, 0)  # every processed delivery was acked
        await _publish(amqp_url, cluster_name, [b"n1", b"n2", b"n3"])
        with pytest.raises(RuntimeError):
            async with Subscriber(amqp_url, cluster_name, name=name) as sub:
                assert [m.index for m in await _take(sub, 2)] == [251, 252]
                raise RuntimeError("the application failed on 252")
        await _wait_depth(amqp_url, queue, 2)  # 252 was yielded, not processed: not acked
        async with Subscriber(amqp_url, cluster_name, name=name) as sub:
            assert [m.index for m in await _take(sub, 2)] == [252, 253]
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


async def _rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, args
    return out.decode()


async def _close_connection(connection_name: str) -> None:
    """Make the broker close the connection(s) named ``connection_name`` (a lost link)."""
    listing = await _rabbitmqctl("list_connections", "pid", "client_properties")
    pids = [row.split("\t")[0] for row in listing.splitlines() if f'"{connection_name}"' in row]
    assert pids, f"no connection named {connection_name}"
    for pid in pids:
        await _rabbitmqctl("close_connection", pid, "test: the link is lost")


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
@pytest.mark.parametrize("name", [None, "survivor"])
async def test_subscriber_survives_a_lost_connection(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode, name: str | None
) -> None:
    """The robust connection comes back: the subscriber consumes again on the new channel,
    fills what its (anonymous, recreated) queue missed from replay, drops redeliveries,
    and its acks after the reconnect reach the broker."""
    if urlsplit(amqp_url).hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("rabbitmqctl reaches the local broker only")
    connection_name = f"raftmq-test-{uuid.uuid4().hex}"
    url = amqp_url + ("&" if "?" in amqp_url else "?")
    url += f"name={connection_name}&reconnect_interval=0.5"
    try:
        async with Subscriber(url, cluster_name, name=name) as sub:
            await _publish(amqp_url, cluster_name, [b"a", b"b"])
            got = await _take(sub, 2)
            await _close_connection(connection_name)
            # Asked for more while the link is down: a position write that fails is kept
            # for the next flush, never raised out of the iterator.
            got += await _publish_until_yielded(amqp_url, cluster_name, sub)
            await _publish(amqp_url, cluster_name, [b"c%d" % k for k in range(150)])
            got += await _take(sub, 150)
        assert [m.index for m in got] == list(range(1, len(protocol_node.log) + 1))
        assert [m.body for m in got] == [entry.body for entry in protocol_node.log]
        if name is not None:
            await _wait_depth(amqp_url, subscription_queue(cluster_name, name), 0)
    finally:
        if name is not None:
            await Subscriber.delete_subscription(amqp_url, cluster_name, name)


async def test_subscriber_consumes_again_when_its_queue_is_deleted(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """The broker cancels the consumer of a deleted queue: the subscriber declares and
    binds the queue again and fills what it missed meanwhile from replay."""
    name = "deleted"
    try:
        async with Subscriber(amqp_url, cluster_name, name=name) as sub:
            await _publish(amqp_url, cluster_name, [b"a", b"b"])
            got = await _take(sub, 2)
            connection = await aio_pika.connect(amqp_url)
            try:
                channel = await connection.channel()
                await channel.queue_delete(subscription_queue(cluster_name, name))
            finally:
                await connection.close()
            got += await _publish_until_yielded(amqp_url, cluster_name, sub)
        assert [m.index for m in got] == list(range(1, len(protocol_node.log) + 1))
        assert [m.body for m in got] == [entry.body for entry in protocol_node.log]
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


async def test_close_from_another_task_ends_a_waiting_iteration(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """An `async for` waiting for the next message ends (StopAsyncIteration) when another
    task closes the subscriber; it used to wait forever."""
    sub = Subscriber(amqp_url, cluster_name)
    await sub.open()
    await _publish(amqp_url, cluster_name, [b"a"])
    got = await _take(sub, 1)

    async def drain() -> list[CommittedMessage]:
        return [message async for message in sub]

    waiting = asyncio.create_task(drain())
    await asyncio.sleep(0.2)  # the iteration is parked, waiting for a delivery
    assert not waiting.done()
    await sub.close()
    assert await asyncio.wait_for(waiting, 5) == []
    assert [m.body for m in got] == [b"a"]
