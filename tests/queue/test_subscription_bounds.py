"""Named subscription queues are bounded and expire when abandoned (docs/protocol.md §1,
docs/operations.md "Subscriptions"), against the real broker with the protocol test double
playing the node: messages the bound dropped come back through replay, in order, once; an
abandoned subscription disappears and starts again per ``start``; a running one keeps its
position queue; other bounds than the queue's are a ConfigError saying what to do; the
default bounds still open a subscription made before bounds existed."""

from __future__ import annotations

import asyncio
import logging
import shutil
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest

from raftmq.client import CommittedMessage, Subscriber
from raftmq.errors import ConfigError
from raftmq.protocol.names import position_queue, subscription_queue
from tests.queue.conftest import ProtocolNode
from tests.queue.test_client_subscriber import _publish, _take

pytestmark = pytest.mark.integration


async def _ready(amqp_url: str, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: it must exist)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _queues(amqp_url: str) -> set[str]:
    """The queues of the broker's vhost, listed by rabbitmqctl: unlike a passive declare,
    a listing does not count as a use of the queue (which would renew its expiry)."""
    vhost = unquote(urlsplit(amqp_url).path[1:]) or "/"
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return set(out.decode().split())


async def _wait_gone(amqp_url: str, queues: set[str], timeout: float = 30.0) -> None:
    """Wait until none of ``queues`` exists (the broker's expiry has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while True:
            if not queues & await _queues(amqp_url):
                return
            await asyncio.sleep(0.2)


needs_rabbitmqctl = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl (and a local broker)"
)


async def test_messages_the_bound_dropped_come_back_from_replay_in_order_once(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """x-max-length with drop-head: while the subscriber is away the queue keeps only the
    newest 5 of 20 messages; back, it sees a gap and replays the 15 dropped ones first."""
    name = "bounded"
    try:
        async with Subscriber(amqp_url, cluster_name, name=name, max_length=5) as sub:
            await _publish(amqp_url, cluster_name, [b"a", b"b"])
            first = await _take(sub, 2)
        await _publish(amqp_url, cluster_name, [b"m%d" % k for k in range(20)])
        assert await _ready(amqp_url, subscription_queue(cluster_name, name)) == 5
        async with Subscriber(amqp_url, cluster_name, name=name, max_length=5) as sub:
            rest = await _take(sub, 20)
            assert sub.counters["duplicate"] == 0
        got = first + rest
        assert [m.index for m in got] == list(range(1, 23))
        assert [m.body for m in got] == [entry.body for entry in protocol_node.log]
        assert [(r["from"], r["to"]) for r in protocol_node.replay_requests] == [(3, 17)]
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


async def test_other_bounds_than_the_queue_has_raise_a_config_error(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """RabbitMQ closes the channel of a redeclare with other arguments; the Subscriber
    says which subscription, and what to do, and the subscription stays usable."""
    name = "strict"
    try:
        async with Subscriber(amqp_url, cluster_name, name=name, max_length=5):
            pass
        for other in ({"max_length": 6}, {"expires": 60.0}, {}):
            refused = Subscriber(amqp_url, cluster_name, name=name, **other)
            with pytest.raises(ConfigError) as raised:
                async with refused:
                    pass
            # A failed open closes its connection (a CLI process used to die with its
            # robust channel's unretrieved PRECONDITION_FAILED in asyncio.run's shutdown).
            assert refused._connection is not None and refused._connection.is_closed
            text = str(raised.value)
            assert f"subscription 'strict' of cluster '{cluster_name}'" in text
            assert f"raftmq subscriptions delete strict --cluster {cluster_name}" in text
            assert "inequivalent arg" in text  # the broker's own words
        async with Subscriber(amqp_url, cluster_name, name=name, max_length=5) as sub:
            await _publish(amqp_url, cluster_name, [b"still here"])
            [message] = await _take(sub, 1)
        assert message.body == b"still here"
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


async def test_default_bounds_open_a_subscription_made_before_bounds(
    amqp_url: str,
    cluster_name: str,
    protocol_node: ProtocolNode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Queues declared as raftmq did before bounds (no arguments; the position queue
    x-max-length=1 only) open with the default Subscriber, unbounded, with a warning that
    says how to bound them; explicit bounds are refused."""
    name = "legacy"
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(subscription_queue(cluster_name, name), durable=True)
        await channel.declare_queue(
            position_queue(cluster_name, name), durable=True, arguments={"x-max-length": 1}
        )
        with caplog.at_level(logging.WARNING, "raftmq.client.subscription_queues"):
            async with Subscriber(amqp_url, cluster_name, name=name, start="earliest") as sub:
                await _publish(amqp_url, cluster_name, [b"old", b"new"])
                got = await _take(sub, 2)
        assert [m.body for m in got] == [b"old", b"new"]
        assert "has no bounds" in caplog.text
        assert f"raftmq subscriptions delete {name}" in caplog.text
        with pytest.raises(ConfigError, match="exists with other bounds"):
            async with Subscriber(amqp_url, cluster_name, name=name, max_length=10):
                pass
    finally:
        await connection.close()
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


@needs_rabbitmqctl
async def test_an_abandoned_subscription_expires_and_starts_again(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """x-expires on both queues: a running subscriber keeps them (its consumer, and the
    position queue's keep-alive, for several expiry periods); once it is gone both
    disappear, and the next Subscriber of that name starts again per ``start``."""
    name = "fleeting"
    queues = {subscription_queue(cluster_name, name), position_queue(cluster_name, name)}
    expires = 0.5
    loop = asyncio.get_running_loop()
    try:
        async with Subscriber(amqp_url, cluster_name, name=name, expires=expires) as sub:
            began = loop.time()
            got: list[CommittedMessage] = []
            while loop.time() - began < 6 * expires:  # 6 periods of use, one write at a time
                await _publish(amqp_url, cluster_name, [b"w%d" % len(got)])
                got += await _take(sub, 1)
            assert queues <= await _queues(amqp_url)  # the position queue was kept alive
        assert [m.index for m in got] == list(range(1, len(got) + 1))
        await _wait_gone(amqp_url, queues)
        async with Subscriber(
            amqp_url, cluster_name, name=name, expires=expires, start="earliest"
        ) as sub:
            again = await _take(sub, len(got))
        assert [m.index for m in again] == [m.index for m in got]  # no position: from 1
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)


@pytest.mark.parametrize(
    ("bounds", "says"),
    [
        ({"max_length": 0}, "max_length must be >= 1"),
        ({"max_length_bytes": -1}, "max_length_bytes must be >= 1"),
        ({"expires": 0.0}, "expires must be at least"),
    ],
)
def test_bounds_the_broker_would_refuse_raise_config_error(
    bounds: dict[str, float], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        Subscriber("amqp://unused", "c", name="n", **bounds)  # type: ignore[arg-type]
