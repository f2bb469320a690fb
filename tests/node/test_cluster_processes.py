"""Three `raftmq node` processes on the real broker with SQLite (and Postgres) files:
election, replication, leader crash, a partitioned follower, broker faults, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time

import aio_pika
import pytest

from raftmq.client.admin import AdminClient
from raftmq.protocol.codec import Envelope
from raftmq.protocol.names import inbox_queue
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import Record
from raftmq.testing.localcluster import (
    LocalCluster,
    wait_answering,
    wait_applied,
    wait_for_leader,
)
from raftmq.testing.postgres import fresh_postgres_database
from tests.node.conftest import ELECTION_TIMEOUT_MAX, ClusterFactory

pytestmark = pytest.mark.integration


async def _answering(admin: AdminClient, nodes: list[str]) -> float:
    """Wait until every node answers status (processes are up); return that moment."""
    await wait_answering(admin, nodes)
    return time.monotonic()


async def _write_many(
    admin: AdminClient, first: int, count: int, parallel: int = 32
) -> dict[int, str]:
    """Write bodies w<first>..; return index -> body of every acknowledged write."""
    acked: dict[int, str] = {}
    gate = asyncio.Semaphore(parallel)

    async def one(k: int) -> None:
        body = f"w{k}"
        async with gate:
            commit: Commit = await admin.write(Record(body=body.encode()), timeout=30)
        acked[commit.index] = body

    await asyncio.gather(*(one(k) for k in range(first, first + count)))
    return acked


def _check_applied(cluster: LocalCluster, acked: dict[int, str], nodes: list[str]) -> None:
    """Every node applied exactly the acknowledged writes, once each, in index order, and
    all nodes agree. The applied log spans the node's restarts, SIGKILLs included: the
    node may repeat its last callbacks after a crash (the on-commit contract), and the
    CLI's applied log skips indexes it already holds, so the file stays exactly-once."""
    reference = None
    for node_id in nodes:
        applied = [(line.index, line.body.decode()) for line in cluster.read_applied(node_id)]
        indexes = [index for index, _ in applied]
        assert indexes == sorted(set(indexes)), f"{node_id} applied an index twice or out of order"
        assert dict(applied) == acked, f"{node_id} applied something else than the acked writes"
        if reference is None:
            reference = applied
        assert applied == reference, f"{node_id} disagrees with {nodes[0]}"


async def test_elect_replicate_crash_leader_and_catch_up(local_cluster: ClusterFactory) -> None:
    cluster = local_cluster()
    cluster.start_all()
    async with cluster.admin() as admin:
        up = await _answering(admin, cluster.node_ids)
        leader = await wait_for_leader(admin, timeout=30)
        elected_after = time.monotonic() - up
        assert elected_after <= 3 * ELECTION_TIMEOUT_MAX + 1.0, elected_after  # + poll slack

        acked = await _write_many(admin, 0, 1000)
        assert len(acked) == 1000
        await wait_applied(admin, cluster.node_ids, max(acked), timeout=60)

        old = leader.node_id
        cluster.kill(old, signal.SIGKILL)
        new = await wait_for_leader(admin, timeout=30, exclude={old})
        assert new.term > leader.term
        acked.update(await _write_many(admin, 1000, 200))

        cluster.start(old)
        await wait_applied(admin, cluster.node_ids, max(acked), timeout=60)
        statuses = await admin.statuses()
        assert {s.leader_id for s in statuses.values() if s} == {new.node_id}
    _check_applied(cluster, acked, cluster.node_ids)


async def test_partitioned_follower_rejoins_without_deposing_leader(
    local_cluster: ClusterFactory,
) -> None:
    """A follower whose consumers stop (it still sends) times out again and again; with
    pre-vote it never raises its term, so on rejoining the leader stays (thesis §9.6)."""
    cluster = local_cluster(extra_env={"RAFTMQ_ALLOW_FAULT_INJECTION": "1"})
    cluster.start_all()
    async with cluster.admin() as admin:
        await _answering(admin, cluster.node_ids)
        leader = await wait_for_leader(admin, timeout=30)
        follower = next(n for n in cluster.node_ids if n != leader.node_id)
        await admin.requests.request(follower, "isolate")
        acked = await _write_many(admin, 0, 50)
        await asyncio.sleep(4 * ELECTION_TIMEOUT_MAX)  # the follower's timer fires repeatedly
        cut_off = await admin.status(follower)
        assert cut_off.term == leader.term and cut_off.applied < max(acked)
        await admin.requests.request(follower, "rejoin")
        acked.update(await _write_many(admin, 50, 50))
        await wait_applied(admin, cluster.node_ids, max(acked), timeout=30)
        after = await wait_for_leader(admin, timeout=5)
        assert (after.node_id, after.term) == (leader.node_id, leader.term)
    _check_applied(cluster, acked, cluster.node_ids)


async def _rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def _connection_pids(name: str) -> list[str]:
    """Broker-side pids of the connections whose client_properties name ``name``."""
    out = await _rabbitmqctl("list_connections", "pid", "client_properties")
    return [line.split("\t", 1)[0] for line in out.splitlines() if name in line]


async def test_broker_closing_the_leader_connection_is_survived(
    local_cluster: ClusterFactory,
) -> None:
    cluster = local_cluster()
    cluster.start_all()
    async with cluster.admin() as admin:
        await _answering(admin, cluster.node_ids)
        leader = await wait_for_leader(admin, timeout=30)
        acked = await _write_many(admin, 0, 50)
        pids = await _connection_pids(f"raftmq:{cluster.cluster}:{leader.node_id}")
        if not pids:
            pytest.fail("could not find the leader's connection with rabbitmqctl")
        for pid in pids:
            await _rabbitmqctl("close_connection", pid, "raftmq test: broker-side close")
        acked.update(await _write_many(admin, 50, 100))
        await wait_applied(admin, cluster.node_ids, max(acked), timeout=30)
        statuses = await admin.statuses()
        assert sum(s.transport["reconnects"] for s in statuses.values() if s) >= 1
    _check_applied(cluster, acked, cluster.node_ids)


async def test_bad_input_on_a_node_inbox_is_dropped_and_counted(
    local_cluster: ClusterFactory, amqp_url: str
) -> None:
    cluster = local_cluster()
    cluster.start_all()
    async with cluster.admin() as admin:
        await _answering(admin, cluster.node_ids)
        leader = await wait_for_leader(admin, timeout=30)
        target = leader.node_id
        queue = inbox_queue(cluster.cluster, target)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            bad = [
                aio_pika.Message(
                    b"\x00\xffnot json", type="append_entries", app_id=cluster.cluster
                ),
                aio_pika.Message(b"{}", type="no_such_type", app_id=cluster.cluster),
                aio_pika.Message(
                    b'{"type":"append_entries","term":99,"sender":"x","recipient":"%s",'
                    b'"prev_log_index":0,"prev_log_term":0,"leader_commit":0}' % target.encode(),
                    type="append_entries",
                    app_id="another-cluster",
                ),
                aio_pika.Message(b"x" * (9 << 20), type="append_entries", app_id=cluster.cluster),
                aio_pika.Message(
                    b'{"type":"append_entries"}', type="append_entries", app_id=cluster.cluster
                ),
            ]
            key = cluster.key()
            assert key is not None
            cluster_id = (await admin.status(target)).cluster_id or ""
            for message in bad:
                # Signed with the cluster key: the codec, not the MAC check, judges them.
                envelope = Envelope(message.body, message.type, message.app_id)
                message.message_id = key.mac(
                    envelope, sender="", recipient=target, cluster_id=cluster_id
                )
                await channel.default_exchange.publish(message, routing_key=queue)
        acked = await _write_many(admin, 0, 30)
        await wait_applied(admin, cluster.node_ids, max(acked), timeout=30)
        status = await admin.status(target)
        dropped = status.transport["dropped"]
        for reason in ("garbage", "unknown_type", "wrong_cluster", "oversized", "invalid_fields"):
            assert dropped.get(reason, 0) >= 1, (reason, dropped)
        assert status.role.value == "leader" and status.term == leader.term
    _check_applied(cluster, acked, cluster.node_ids)


async def test_cluster_on_postgres(local_cluster: ClusterFactory, postgres_server_url: str) -> None:
    """Three nodes sharing one Postgres server, one database each."""
    async with contextlib.AsyncExitStack() as databases:
        urls = [
            await databases.enter_async_context(fresh_postgres_database(postgres_server_url))
            for _ in range(3)
        ]
        cluster = local_cluster(
            node_env={
                n: {"RAFTMQ_DATABASE_URL": u} for n, u in zip(["n1", "n2", "n3"], urls, strict=True)
            }
        )
        cluster.start_all()
        async with cluster.admin() as admin:
            await _answering(admin, cluster.node_ids)
            leader = await wait_for_leader(admin, timeout=30)
            acked = await _write_many(admin, 0, 200)
            cluster.kill(leader.node_id)
            await wait_for_leader(admin, timeout=30, exclude={leader.node_id})
            acked.update(await _write_many(admin, 200, 100))
            cluster.start(leader.node_id)
            await wait_applied(admin, cluster.node_ids, max(acked), timeout=60)
        cluster.stop_all()
        _check_applied(cluster, acked, cluster.node_ids)
