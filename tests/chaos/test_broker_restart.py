"""Chaos: the whole broker goes away and comes back (`make chaos`; restarts the local
RabbitMQ application, so it is not part of `make test`)."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from raftmq.client import Producer, Subscriber
from raftmq.testing.localcluster import wait_applied, wait_for_leader
from tests.conftest import ClusterFactory

pytestmark = [pytest.mark.slow, pytest.mark.integration]


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(process.wait(), 120) == 0


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_cluster_survives_a_broker_restart(local_cluster: ClusterFactory) -> None:
    cluster = local_cluster()
    cluster.start_all()
    url, name = cluster.amqp_url, cluster.cluster
    async with cluster.admin() as admin:
        await wait_for_leader(admin, timeout=30)
    acked: dict[int, bytes] = {}
    async with Producer(url, name) as producer:
        for k in range(100):
            receipt = await producer.publish(b"before-%d" % k)
            assert receipt.index is not None
            acked[receipt.index] = b"before-%d" % k
        await _rabbitmqctl("stop_app")
        await asyncio.sleep(3)
        await _rabbitmqctl("start_app")
        await _rabbitmqctl("await_startup")
    # Clients reconnect with a fresh Producer; the nodes reconnect on their own.
    async with Producer(url, name) as producer:
        for k in range(100):
            receipt = await producer.publish(b"after-%d" % k, timeout=120)
            assert receipt.index is not None
            acked[receipt.index] = b"after-%d" % k
    async with cluster.admin() as admin:
        await wait_applied(admin, cluster.node_ids, max(acked), timeout=60)
    assert not cluster.crashed()
    async with Subscriber(url, name, start="earliest") as subscriber:
        got: dict[int, bytes] = {}
        async with asyncio.timeout(60):
            async for message in subscriber:
                got[message.index] = message.body
                if message.index >= max(acked):
                    break
    assert got == acked
    for node_id in cluster.node_ids:
        applied = {line.index: line.body for line in cluster.read_applied(node_id)}
        assert applied == acked, node_id
