"""Broker failover, for real: a private 3-node RabbitMQ cluster (b1, b2, b3) and a 3-node
raftmq cluster whose node i is given all three URLs starting with b_i. The broker node
the leader is connected to is stopped (``rabbitmqctl stop_app``) and started again while a
producer and a subscriber (both given all three URLs, starting with that same broker)
keep going: writes keep committing during the outage, and no acknowledged write is lost
(every node's applied log and the subscriber hold each of them, once, in index order).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftmq.client import Producer, Subscriber
from raftmq.client.admin import AdminClient
from raftmq.protocol.names import connection_name, dead_name, replay_queue
from raftmq.testing.localcluster import LocalCluster, wait_applied, wait_for_leader
from raftmq.testing.private_rabbitmq import PrivateNode, PrivateRabbitMQ, urls
from tests.brokers.conftest import require_private_nodes

pytestmark = pytest.mark.integration

NODES = ["n1", "n2", "n3"]


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[tuple[PrivateRabbitMQ, list[PrivateNode]]]:
    """A private 3-node RabbitMQ cluster for the module (~20-40 s to boot and join),
    stopped and deleted afterwards whatever the tests did."""
    require_private_nodes()
    with PrivateRabbitMQ("rmqha") as brokers:
        yield brokers, brokers.start_cluster(3)


async def _wait_home(
    brokers: PrivateRabbitMQ, any_node: PrivateNode, queue: str, timeout: float
) -> str:
    """The RabbitMQ node a classic queue lives on, once it exists."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        listing = await asyncio.to_thread(
            brokers.ctl, any_node, "list_queues", "--no-table-headers", "name", "pid"
        )
        for row in listing.splitlines():
            found, _, pid = row.partition("\t")
            if found == queue:  # a pid is <node@host.N.M>
                return pid.strip().strip("<>").split(".")[0]
        if loop.time() > deadline:
            raise TimeoutError(f"no queue {queue} within {timeout} s")
        await asyncio.sleep(0.5)


async def _wait_connected(
    brokers: PrivateRabbitMQ, node: PrivateNode, names: set[str], timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not names <= set(await asyncio.to_thread(brokers.connection_names, node)):
        if loop.time() > deadline:
            raise TimeoutError(f"{names} not connected to {node.name}")
        await asyncio.sleep(0.5)


async def test_writes_commit_while_the_leaders_broker_is_stopped_and_started(
    rabbit_cluster: tuple[PrivateRabbitMQ, list[PrivateNode]], tmp_path: Path
) -> None:
    brokers, rabbits = rabbit_cluster
    name = f"ha{uuid.uuid4().hex[:8]}"
    cluster = LocalCluster(
        name,
        NODES,
        tmp_path,
        amqp_url=urls(rabbits),
        node_env={n: {"RAFTMQ_AMQP_URL": urls(rabbits, i)} for i, n in enumerate(NODES)},
    )
    # n1 starts first and declares the cluster's shared objects on b1: the classic queues
    # among them (dead letters, replay) live on b1 (see the report: a broker node holding
    # them stops the writes path, so b1 is not the one stopped here).
    cluster.start("n1")
    acked: dict[int, bytes] = {}
    try:
        await _wait_home(brokers, rabbits[0], replay_queue(name), timeout=60)
        cluster.start("n2")
        cluster.start("n3")
        assert await _wait_home(brokers, rabbits[0], dead_name(name), 5) == rabbits[0].name
        assert await _wait_home(brokers, rabbits[0], replay_queue(name), 5) == rabbits[0].name
        async with cluster.admin() as admin:
            # The leader is n2, connected to b2 (its first URL): the broker to stop.
            await _lead(admin, "n2")
            victim = rabbits[1]
            await _wait_connected(
                brokers,
                victim,
                {connection_name(name, "n2"), connection_name(name, "n2", "ingest")},
                timeout=30,
            )
            await _run_outage(brokers, cluster, victim, rabbits, acked)
            await wait_applied(admin, NODES, max(acked), timeout=60)
        assert not cluster.crashed()
        for node_id in NODES:
            applied = {line.index: line.body for line in cluster.read_applied(node_id)}
            missing = {i: b for i, b in acked.items() if applied.get(i) != b}
            assert not missing, (node_id, sorted(missing)[:10])
    finally:
        cluster.stop_all()


async def _lead(admin: AdminClient, node_id: str) -> None:
    for _ in range(5):
        leader = await wait_for_leader(admin, timeout=60)
        if leader.node_id == node_id:
            return
        try:
            await admin.transfer_leadership(node_id, timeout=10)
        except Exception:  # an election in between: look again
            continue
    raise AssertionError(f"{node_id} does not lead")


async def _run_outage(
    brokers: PrivateRabbitMQ,
    cluster: LocalCluster,
    victim: PrivateNode,
    rabbits: list[PrivateNode],
    acked: dict[int, bytes],
) -> None:
    """Publish and subscribe (clients connected to ``victim`` first) before, during and
    after ``victim``'s outage; ``acked`` gets every committed write."""
    first = rabbits.index(victim)
    client_urls = urls(rabbits, first)
    phase = "before"
    during = 0
    async with (
        Subscriber(client_urls, cluster.cluster, start="earliest") as subscriber,
        Producer(client_urls, cluster.cluster) as producer,
    ):
        stop = asyncio.Event()

        async def publish() -> None:
            nonlocal during
            k = 0
            while not stop.is_set():
                body = b"%s-%d" % (phase.encode(), k)
                receipt = await producer.publish(body, timeout=120)
                assert receipt.index is not None
                acked[receipt.index] = body
                during += phase == "during"
                k += 1

        publisher = asyncio.create_task(publish())
        try:
            await _until(lambda: len(acked) >= 50, 60, publisher)
            phase = "during"
            await asyncio.to_thread(brokers.stop_app, victim)
            # Everything that was on the victim went on to the next URL, b3.
            moved = {
                connection_name(cluster.cluster, "n2"),
                connection_name(cluster.cluster, "n2", "ingest"),
                f"raftmq-producer:{cluster.cluster}",
                f"raftmq-subscriber:{cluster.cluster}",
            }
            await _wait_connected(brokers, rabbits[(first + 1) % 3], moved, timeout=30)
            await _until(lambda: during >= 50, 90, publisher)
            phase = "after"
            await asyncio.to_thread(brokers.start_app, victim)
            count = len(acked)
            await _until(lambda: len(acked) >= count + 50, 90, publisher)
        finally:
            stop.set()
            await asyncio.wait_for(publisher, 150)
        seen: dict[int, bytes] = {}
        previous = 0
        async with asyncio.timeout(90):
            async for message in subscriber:
                assert message.index > previous
                previous = message.index
                seen[message.index] = message.body
                if message.index >= max(acked):
                    break
    assert {i: seen.get(i) for i in acked} == acked


async def _until(condition: object, timeout: float, publisher: asyncio.Task[None]) -> None:
    """Wait until ``condition()`` holds (the publisher must not fail meanwhile)."""
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if publisher.done():
            publisher.result()
            raise AssertionError("the publisher stopped")
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.1)
