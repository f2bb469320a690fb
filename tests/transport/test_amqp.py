"""The AMQP transport against the real RabbitMQ: the shared contract, topology and wire
properties, broker-side faults (connection closed by the broker), and raw bad input."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aio_pika.abc
import pytest

from raftmq._amqp import topology
from raftmq.core.messages import MESSAGE_ADAPTER, Message, RequestVote
from raftmq.errors import ConfigError, DropReason, TransportError
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.codec import Envelope, encode
from raftmq.protocol.names import inbox_queue
from raftmq.transport.amqp import AmqpTransport
from raftmq.transport.port import RequestClient
from raftmq.transport.rpc import RpcClient

from .contract import TransportContract
from .helpers import CLUSTER_ID, KEY, Inbox, append, signed, vote, vote_reply, wait_until

pytestmark = pytest.mark.integration


class AmqpHarness:
    """Harness on the real broker; deletes every queue it or its transports declared."""

    def __init__(self, url: str, cluster: str, connection: aio_pika.abc.AbstractConnection) -> None:
        self.url = url
        self.cluster = cluster
        self.connection = connection  # raw aio-pika connection for injection and cleanup
        self.transports: list[AmqpTransport] = []
        self.clients: list[RpcClient] = []
        self.queues: set[str] = set()  # every queue to delete at teardown

    def transport(self, node_id: str, **options: Any) -> AmqpTransport:
        options.setdefault("key", KEY)
        options.setdefault("cluster_id", CLUSTER_ID)
        transport = AmqpTransport(self.url, self.cluster, node_id, **options)
        self.transports.append(transport)
        self.queues.add(transport.queue)
        return transport

    async def inject(self, node_id: str, envelope: Envelope, ttl_ms: int | None = None) -> None:
        """Publish raw bytes with aio-pika into the node's inbox (with confirms, so it is
        queued before anything the test sends next)."""
        message = aio_pika.Message(
            envelope.body,
            type=envelope.type,
            app_id=envelope.cluster,
            reply_to=envelope.reply_to,
            correlation_id=envelope.correlation_id,
            message_id=envelope.mac,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            expiration=None if ttl_ms is None else ttl_ms / 1000,
        )
        async with self.connection.channel() as channel:
            await channel.default_exchange.publish(
                message, routing_key=inbox_queue(self.cluster, node_id)
            )

    async def client(self, key: ClusterKey | None = KEY) -> RequestClient:
        client = RpcClient(self.url, self.cluster, timeout=2.0, key=key, cluster_id=CLUSTER_ID)
        await client.start()
        self.clients.append(client)
        return client

    async def declare_raw(self, node_id: str) -> aio_pika.abc.AbstractQueue:
        """A plain queue standing in for a peer's inbox, read raw by the test."""
        channel = await self.connection.channel()
        name = inbox_queue(self.cluster, node_id)
        self.queues.add(name)
        return await channel.declare_queue(name, auto_delete=False)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for transport in self.transports:
            await transport.stop()
        async with self.connection.channel() as channel:
            for name in self.queues:
                await channel.queue_delete(name)


@pytest.fixture
async def harness(amqp_url: str, cluster_name: str) -> AsyncIterator[AmqpHarness]:
    connection = await aio_pika.connect(amqp_url)
    harness = AmqpHarness(amqp_url, cluster_name, connection)
    try:
        yield harness
    finally:
        await harness.close()
        await connection.close()


class TestAmqpTransport(TransportContract):
    """The contract against RabbitMQ."""


async def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl (needs to run on the broker's host, as here)."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not available on this machine")
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def connection_pids(client_name: str) -> list[str]:
    """Broker-side pids of the connections whose client named itself ``client_name``
    (``rabbitmqctl close_connection`` takes the pid, in the tab-separated format)."""
    table = await rabbitmqctl("list_connections", "pid", "client_properties", "--no-table-headers")
    marker = f'{{"connection_name","{client_name}"}}'
    return [line.split("\t", 1)[0] for line in table.splitlines() if marker in line]


async def test_inbox_queue_topology(harness: AmqpHarness) -> None:
    transport = harness.transport("a", inbox_max_length=500, queue_expires_ms=60_000)
    await transport.start(Inbox())
    columns = ("name", "durable", "auto_delete", "exclusive", "arguments")
    rows = json.loads(await rabbitmqctl("list_queues", *columns, "--formatter", "json"))
    (row,) = [r for r in rows if r["name"] == f"raftmq.{harness.cluster}.node.a"]
    assert (row["durable"], row["auto_delete"], row["exclusive"]) == (False, False, False)
    arguments = {name: value for name, _kind, value in row["arguments"]}
    assert arguments == {"x-expires": 60_000, "x-max-length": 500, "x-overflow": "drop-head"}
    assert await connection_pids(f"raftmq:{harness.cluster}:a")


async def test_wire_properties_and_reply_correlation(harness: AmqpHarness) -> None:
    peer = await harness.declare_raw("peer")
    inbox = Inbox()
    a = harness.transport("a", message_ttl_ms=750)

    def answer(message: Message) -> None:
        if isinstance(message, RequestVote):
            a.send([vote_reply(message)])

    await a.start(answer)
    a.send([vote("a", "peer")])
    request = await _get_within(peer, 5.0)
    assert request.type == "request_vote"
    assert request.reply_to == a.queue
    assert request.correlation_id
    assert request.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
    assert request.expiration == 0.75
    assert request.app_id == harness.cluster
    assert request.message_id == KEY.mac(
        encode(
            vote("a", "peer"),
            harness.cluster,
            reply_to=a.queue,
            correlation_id=request.correlation_id,
        ),
        sender="",
        recipient="peer",
        cluster_id=CLUSTER_ID,
    )  # the MAC, in the one property node traffic had no other use for
    assert MESSAGE_ADAPTER.validate_json(request.body) == vote("a", "peer")

    # The peer asks a; a's answer carries the peer's correlation id.
    await harness.inject(
        "a",
        signed(
            encode(
                vote("peer", "a"), harness.cluster, reply_to=peer.name, correlation_id="corr-42"
            ),
            "a",
        ),
    )
    reply = await _get_within(peer, 5.0)
    assert reply.type == "request_vote_reply"
    assert reply.correlation_id == "corr-42"
    assert reply.reply_to is None
    assert len(inbox) == 0


async def _get_within(queue: aio_pika.abc.AbstractQueue, timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        await asyncio.sleep(0.01)
    raise AssertionError(f"nothing arrived in {queue.name} within {timeout}s")


async def test_reconnects_after_the_broker_closes_the_connection(harness: AmqpHarness) -> None:
    a_inbox, b_inbox = Inbox(), Inbox()
    a = harness.transport("a")
    b = harness.transport("b")
    await a.start(a_inbox)
    await b.start(b_inbox)
    (name,) = await connection_pids(b.connection_name)
    await rabbitmqctl("close_connection", name, "raftmq test: broker-side close")
    await wait_until(lambda: b.stats.reconnects == 1 and b.connected, 10.0, "b reconnected")
    # The consumer was restored: b receives again, and can still send.
    a.send([append("a", "b", 1)])
    b.send([append("b", "a", 2)])
    await wait_until(lambda: len(b_inbox) == 1 and len(a_inbox) == 1, what="traffic after")


async def test_sends_during_an_outage_are_dropped_and_counted(harness: AmqpHarness) -> None:
    inbox = Inbox()
    a = harness.transport("a", reconnect_delay=(1.0, 1.0))
    await a.start(Inbox())
    await harness.transport("b").start(inbox)
    (name,) = await connection_pids(a.connection_name)
    await rabbitmqctl("close_connection", name, "raftmq test: outage")
    await wait_until(lambda: not a.connected, what="a notices the outage")
    a.send([append("a", "b", i) for i in range(5)])  # must not raise
    assert a.stats.send_dropped["disconnected"] == 5
    await a.wait_connected(10.0)
    a.send([append("a", "b", 100)])
    await wait_until(lambda: len(inbox) == 1, what="delivery after the outage")
    assert a.stats.reconnects == 1


async def test_oversized_at_the_default_limit(harness: AmqpHarness) -> None:
    inbox = Inbox()
    a = harness.transport("a")
    await a.start(Inbox())
    b = harness.transport("b")
    assert b.max_message_bytes == 8 * 1024 * 1024
    await b.start(inbox)
    await harness.inject("b", Envelope(b"x" * (9 * 1024 * 1024), "append_entries", harness.cluster))
    a.send([append("a", "b", 1)])
    await wait_until(lambda: len(inbox) == 1, what="valid message after a 9 MiB one")
    assert b.stats.dropped == {DropReason.OVERSIZED.value: 1}


async def test_missing_cluster_name_is_dropped(harness: AmqpHarness) -> None:
    inbox = Inbox()
    b = harness.transport("b")
    await b.start(inbox)
    body = MESSAGE_ADAPTER.dump_json(append("a", "b", 1))
    await harness.inject("b", signed(Envelope(body, "append_entries", None)))
    await harness.inject("b", signed(encode(append("a", "b", 2), harness.cluster)))
    await wait_until(lambda: len(inbox) == 1, what="valid message")
    assert b.stats.dropped == {DropReason.WRONG_CLUSTER.value: 1}


async def test_start_fails_cleanly_without_a_broker(cluster_name: str) -> None:
    transport = AmqpTransport("amqp://guest:guest@127.0.0.1:1/", cluster_name, "a", key=KEY)
    with pytest.raises(TransportError, match="cluster id must be set"):  # signing needs it
        await transport.start(Inbox())
    transport = AmqpTransport(
        "amqp://guest:guest@127.0.0.1:1/", cluster_name, "a", key=KEY, cluster_id=CLUSTER_ID
    )
    with pytest.raises(TransportError, match="cannot connect"):
        await transport.start(Inbox())
    assert not transport.connected
    await transport.stop()


async def test_rpc_client_fails_cleanly_without_a_broker(cluster_name: str) -> None:
    with pytest.raises(TransportError, match="cannot connect"):
        async with RpcClient("amqp://guest:guest@127.0.0.1:1/", cluster_name):
            pass


async def test_rpc_client_declares_no_queue_per_request(harness: AmqpHarness) -> None:
    async def serve(kind: str, body: bytes) -> bytes:
        return body

    await harness.transport("b").start(Inbox(), serve)
    client = await harness.client()
    replies = await asyncio.gather(*(client.request("b", "echo", b"%d" % i) for i in range(50)))
    assert replies == [b"%d" % i for i in range(50)]
    queues = (await rabbitmqctl("list_queues", "name", "--no-table-headers")).split()
    assert [q for q in queues if harness.cluster in q] == [inbox_queue(harness.cluster, "b")]


async def test_an_operator_client_of_a_cluster_never_bootstrapped_is_a_clear_error(
    amqp_url: str, cluster_name: str
) -> None:
    """Operator commands sign with the cluster id of the bootstrap record; without one
    there is nothing to sign with, and they say why instead of timing out."""
    try:
        with pytest.raises(ConfigError, match="never bootstrapped"):
            async with RpcClient(amqp_url, cluster_name, key=KEY):
                pass
    finally:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await topology.delete_all(await connection.channel(), cluster_name)
