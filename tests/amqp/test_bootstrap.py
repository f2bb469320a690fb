"""The bootstrap record (raftmq._amqp.bootstrap) on the real broker: of many nodes that
bootstrap one cluster name at once, exactly one record wins and all read it back; and a
node, once admitted, has declared the cluster's shared objects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftmq._amqp import bootstrap, topology
from raftmq.errors import ConfigError, MalformedMessage
from raftmq.protocol import names
from raftmq.protocol.bootstrap import BootstrapRecord, new_cluster_id
from raftmq.protocol.names import bootstrap_queue
from raftmq.transport.identity import AmqpClusterIdentity


@pytest.fixture
async def cluster(amqp_url: str) -> AsyncIterator[str]:
    """A fresh cluster name; its broker objects are deleted afterwards."""
    name = f"b{uuid.uuid4().hex[:10]}"
    yield name
    connection = await aio_pika.connect(amqp_url)
    try:
        await topology.delete_all(await connection.channel(), name)
    finally:
        await connection.close()


async def test_concurrent_claims_agree_on_one_record(amqp_url: str, cluster: str) -> None:
    connections = [await aio_pika.connect(amqp_url) for _ in range(6)]
    try:
        proposals = [BootstrapRecord.make(new_cluster_id(), ["n1", "n2", "n3"]) for _ in range(6)]
        won = await asyncio.gather(
            *(bootstrap.claim(c, cluster, p) for c, p in zip(connections, proposals, strict=True))
        )
        assert len(set(won)) == 1 and won[0] in proposals
        # Later readers and claimers (a node restarted with an empty database) get it too.
        assert await bootstrap.read(connections[0], cluster) == won[0]
        late = BootstrapRecord.make(new_cluster_id(), ["n1", "n2", "n3"])
        assert await bootstrap.claim(connections[1], cluster, late) == won[0]
    finally:
        for connection in connections:
            await connection.close()


async def test_a_cluster_never_bootstrapped_has_no_record(amqp_url: str, cluster: str) -> None:
    """And reading creates nothing: `raftmq status` of a misspelt cluster name used to
    leave its record queue (and lock queue) on the broker."""
    connection = await aio_pika.connect(amqp_url)
    try:
        assert await bootstrap.read(connection, cluster) is None
        for name in (bootstrap_queue(cluster), names.bootstrap_lock_queue(cluster)):
            assert not await _exists(connection, name, "queue")
    finally:
        await connection.close()


async def test_a_record_that_is_not_one_is_refused_not_replaced(
    amqp_url: str, cluster: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await bootstrap.declare_bootstrap(channel, cluster)
        await channel.default_exchange.publish(
            aio_pika.Message(b"not a record"), routing_key=bootstrap_queue(cluster)
        )
        proposal = BootstrapRecord.make(new_cluster_id(), ["n1"])
        with pytest.raises(MalformedMessage):
            await bootstrap.claim(connection, cluster, proposal)
        with pytest.raises(MalformedMessage):  # still there: nothing replaced it
            await bootstrap.read(connection, cluster)
    finally:
        await connection.close()


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_gives_a_record_or_malformed(data: bytes) -> None:
    try:
        record = BootstrapRecord.decode(data)
    except MalformedMessage:
        return
    assert BootstrapRecord.decode(record.encode()) == record


def test_records_round_trip_and_sort_their_voters() -> None:
    record = BootstrapRecord.make("0" * 32, ["n3", "n1", "n2"])
    assert record.voters == ("n1", "n2", "n3")
    assert BootstrapRecord.decode(record.encode()) == record
    for bad in (
        b'{"v":1,"cluster_id":"x","voters":["n1"]}',
        b'{"v":1,"cluster_id":"' + b"0" * 32 + b'","voters":[]}',
        b'{"v":1,"cluster_id":"' + b"0" * 32 + b'","voters":["n1","n1"]}',
        b'{"v":2,"cluster_id":"' + b"0" * 32 + b'","voters":["n1"]}',
        b'{"v":1,"cluster_id":"' + b"0" * 32 + b'","voters":["a.b"]}',
        b"[]",
        b"\xff",
    ):
        with pytest.raises(MalformedMessage):
            BootstrapRecord.decode(bad)


async def _exists(connection: aio_pika.abc.AbstractConnection, name: str, kind: str) -> bool:
    if kind == "queue":
        return await topology.queue_exists(connection, name)
    return await topology.exchange_exists(connection, name)


async def test_a_node_declares_the_shared_objects_when_admitted(
    amqp_url: str, cluster: str
) -> None:
    """A client that saw a node answer may publish at once: a write routed to a writes
    queue that does not exist yet would be dropped by the broker (and confirmed)."""
    shared = [
        (names.writes_queue(cluster), "queue"),
        (names.writes_exchange(cluster), "exchange"),
        (names.committed_exchange(cluster), "exchange"),
        (names.dead_name(cluster), "queue"),
        (names.replay_exchange(cluster), "exchange"),
        (names.positions_exchange(cluster), "exchange"),
    ]
    connection = await aio_pika.connect(amqp_url)
    try:
        plain = AmqpClusterIdentity(amqp_url, cluster, ("n1", "n2", "n3"))
        cluster_id = await plain.admit(None)
        assert [await _exists(connection, *obj) for obj in shared] == [False] * len(shared)
        node = AmqpClusterIdentity(amqp_url, cluster, ("n1", "n2", "n3"), declare_shared=True)
        assert await node.admit(None) == cluster_id  # joins the same bootstrap
        assert [await _exists(connection, *obj) for obj in shared] == [True] * len(shared)
        # A write published to the exchange right now lands in the writes queue.
        channel = await connection.channel(publisher_confirms=True)
        writes = await channel.get_exchange(names.writes_exchange(cluster))
        await writes.publish(aio_pika.Message(b"w"), routing_key="")
        queue = await channel.declare_queue(names.writes_queue(cluster), passive=True)
        assert queue.declaration_result.message_count == 1
    finally:
        await connection.close()


async def test_a_shared_object_with_other_arguments_is_a_config_error(
    amqp_url: str, cluster: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(names.writes_queue(cluster), durable=True)  # classic
        with pytest.raises(ConfigError, match="other arguments"):
            await topology.declare_shared(connection, cluster)
        assert not connection.is_closed  # only the declaring channel was closed
    finally:
        await connection.close()
