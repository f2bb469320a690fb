"""Cluster identity with real `raftmq node` processes on the broker: one process per node,
one voter set per cluster, one bootstrap per database, and a cluster of one node only when
asked for."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from raftmq.protocol.record import Record
from raftmq.storage.sql import SqlStorage
from raftmq.testing.localcluster import LocalCluster, wait_applied, wait_for_leader
from tests.node.conftest import TICK, ClusterFactory

pytestmark = pytest.mark.integration


def _sibling(cluster: LocalCluster, workdir: Path, node_ids: list[str]) -> LocalCluster:
    """Other processes under the same cluster name and key, with data dirs of their own."""
    workdir.mkdir(parents=True)
    shutil.copy(cluster.key_file, workdir / "cluster.key")  # their nodes and admin use it
    return LocalCluster(
        cluster.cluster, node_ids, workdir, amqp_url=cluster.amqp_url, tick_interval=TICK
    )


async def _exit_code(cluster: LocalCluster, node_id: str, timeout: float = 30.0) -> int:
    """Wait for the node's process to exit by itself; its exit code."""
    process = cluster.processes[node_id]
    async with asyncio.timeout(timeout):
        while process.poll() is None:  # noqa: ASYNC110 - polling a child process
            await asyncio.sleep(0.05)
    return process.returncode


async def test_a_twin_process_and_a_mismatched_peer_list_are_refused_at_start(
    local_cluster: ClusterFactory, tmp_path: Path
) -> None:
    """A second process of a running node id (with an empty data dir) exits non-zero
    saying so, and the cluster keeps committing; a node whose peers differ from the
    cluster's voters exits naming both lists."""
    cluster = local_cluster()
    cluster.start_all()
    twins = _sibling(cluster, tmp_path / "twins", cluster.node_ids)
    others = _sibling(cluster, tmp_path / "others", ["n1", "n2", "n4"])
    try:
        async with cluster.admin() as admin:
            leader = await wait_for_leader(admin, timeout=30)
            before = await admin.write(Record(body=b"before"), timeout=30)
            twins.start(leader.node_id)  # the twin of the leader, with an empty data dir
            assert await _exit_code(twins, leader.node_id) != 0
            log = twins.log_file(leader.node_id).read_text()
            assert f"node {leader.node_id} of cluster {cluster.cluster} is already running" in log
            assert "Traceback" not in log
            after = await admin.write(Record(body=b"after"), timeout=30)
            assert after.index > before.index
            await wait_applied(admin, cluster.node_ids, after.index, timeout=30)
            assert all(cluster.running(n) for n in cluster.node_ids)
            status = await admin.status(leader.node_id)
            assert status.bootstrap_voters == ["n1", "n2", "n3"] and status.cluster_id

            others.start("n4")  # peers n1,n2: not the voters the cluster was made with
            assert await _exit_code(others, "n4") == 1
            log = others.log_file("n4").read_text()
            assert "voters n1,n2,n4 differ" in log and "bootstrapped with: n1,n2,n3" in log
            assert "Traceback" not in log
    finally:
        twins.stop_all()
        others.stop_all()


async def test_a_database_of_an_earlier_bootstrap_is_refused_and_kept(
    local_cluster: ClusterFactory, tmp_path: Path
) -> None:
    """The cluster's broker objects are deleted but a node's database is kept; a new
    cluster is bootstrapped under the same name; the old node refuses to join it, and its
    database (with every write it acknowledged) is left as it was."""
    old = local_cluster()
    old.start_all()
    async with old.admin() as admin:
        await wait_for_leader(admin, timeout=30)
        acked = await admin.write(Record(body=b"acknowledged"), timeout=30)
        await wait_applied(admin, old.node_ids, acked.index, timeout=30)
        old_id = (await admin.status("n1")).cluster_id
    old.stop_all()
    await old.delete_queues()  # the broker lost the cluster: the bootstrap record too
    new = _sibling(old, tmp_path / "new", old.node_ids)
    try:
        new.start("n2")
        new.start("n3")
        async with new.admin() as admin:
            new_id = (await wait_for_leader(admin, timeout=30)).cluster_id
        assert new_id and old_id and new_id != old_id
        old.start("n1")
        assert await _exit_code(old, "n1") == 1
        log = old.log_file("n1").read_text()
        assert f"this database belongs to cluster id {old_id}" in log and new_id in log
    finally:
        new.stop_all()
    store = SqlStorage(
        f"sqlite:///{old.node_dir('n1') / f'raftmq-{old.cluster}-n1.db'}",
        cluster=old.cluster,
        node_id="n1",
    )
    await store.open()
    try:
        assert await store.cluster_id() == old_id
        assert (await store.hard_state()).commit >= acked.index
        assert await store.last_index() >= acked.index
    finally:
        await store.close()


async def test_a_single_node_cluster_runs_when_asked_for(local_cluster: ClusterFactory) -> None:
    cluster = local_cluster(["n1"])  # LocalCluster passes --single-node for one node
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_for_leader(admin, timeout=30)
        commit = await admin.write(Record(body=b"alone"), timeout=30)
        await wait_applied(admin, ["n1"], commit.index, timeout=30)
        assert (await admin.status("n1")).bootstrap_voters == ["n1"]
