"""Fan-out and replay come back by themselves when the broker closes their connections
(real `raftmq node` processes, connections closed with `rabbitmqctl close_connection`):
while the same node leads, committed writes keep arriving on raftmq.C.committed without a
gap, and every node answers replay requests again. (Ingest: test_hostile_writes.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from raftmq.protocol import names
from raftmq.testing.localcluster import wait_applied, wait_for_leader
from tests.conftest import ClusterFactory
from tests.queue.test_node_side_queue import Inbox, _check_no_gap, _h, _publish, _started

pytestmark = pytest.mark.integration


def _connections(name: str) -> list[str]:
    """The broker pids of the connections whose client-given name is ``name``."""
    if subprocess.run(["which", "rabbitmqctl"], capture_output=True).returncode != 0:
        pytest.skip("rabbitmqctl is not available")
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    tag = f'{{"connection_name","{name}"}}'
    return [line.partition("\t")[0] for line in listed.splitlines() if tag in line]


def _close(pid: str) -> None:
    subprocess.run(
        ["rabbitmqctl", "-q", "close_connection", pid, "test: service connection closed"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


async def _reconnected(name: str, timeout: float = 30) -> str:
    """Close the connection called ``name`` (waiting for it first); return the pid of the
    one that replaced it (waiting for it, at most ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while not (before := _connections(name)):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        for pid in before:
            _close(pid)
        while not (after := [pid for pid in _connections(name) if pid not in before]):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    return after[0]


async def test_fanout_comes_back_when_the_broker_closes_its_connection(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster()
    committed, _ = await _started(cluster, channel)
    async with cluster.admin() as admin:
        leader = await wait_for_leader(admin, timeout=30)
        for k in range(10):
            await _publish(channel, cluster.cluster, f"before-{k}".encode())
        await committed.wait(lambda: len(committed.messages) >= 10, timeout=30)
        await _reconnected(names.connection_name(cluster.cluster, leader.node_id, "fanout"))
        for k in range(10):
            await _publish(channel, cluster.cluster, f"after-{k}".encode())
        bodies = [f"{when}-{k}".encode() for when in ("before", "after") for k in range(10)]
        await committed.wait(
            lambda: {m.body for m in committed.messages} >= set(bodies), timeout=30
        )
        by_index = _check_no_gap(committed.messages)  # at least once, and no hole
        assert [m.body for _, m in sorted(by_index.items())] == bodies
        assert (await admin.status(leader.node_id)).term == leader.term  # the same leader
    assert cluster.crashed() == {}


async def test_replay_comes_back_on_every_node_when_the_broker_closes_its_connections(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster()
    committed, _ = await _started(cluster, channel)
    for k in range(5):
        await _publish(channel, cluster.cluster, f"r{k}".encode())
    await committed.wait(lambda: len(committed.messages) >= 5, timeout=30)
    last = max(int(_h(m, names.H_INDEX)) for m in committed.messages)
    async with cluster.admin() as admin:
        await wait_applied(admin, cluster.node_ids, last, timeout=30)
        for node_id in cluster.node_ids:
            await _reconnected(names.connection_name(cluster.cluster, node_id, "replay"))
        reply_name = names.replay_reply_queue(cluster.cluster, "reconnect")
        answers = await Inbox(await channel.declare_queue(reply_name, exclusive=True)).start()
        # One request per node (the queue hands them out in turn): each must be answered.
        asked = [f"rq{k}" for k in range(2 * len(cluster.node_ids))]
        for correlation_id in asked:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps({"from": 1, "to": None, "max": 100}).encode(),
                    reply_to=reply_name,
                    correlation_id=correlation_id,
                ),
                routing_key=names.replay_queue(cluster.cluster),
            )

        def ended() -> set[str | None]:
            return {m.correlation_id for m in answers.messages if _h(m, names.H_REPLAY_END)}

        await answers.wait(lambda: ended() == set(asked), timeout=30)
        for correlation_id in asked:
            items = [
                m.body
                for m in answers.messages
                if m.correlation_id == correlation_id and not _h(m, names.H_REPLAY_END)
            ]
            assert items == [f"r{k}".encode() for k in range(5)]
        statuses = await admin.statuses()
        assert all(
            status is not None and status.counters.get("replay_answered", 0) >= 1
            for status in statuses.values()
        )
    assert cluster.crashed() == {}
