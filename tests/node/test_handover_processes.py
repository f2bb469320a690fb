"""Graceful handover with three `raftmq node` processes on the real broker (issue MEMBERS
item 5): a leader given SIGTERM hands leadership to the most caught-up voter before it
stops, so a rolling restart under load starts no election by timeout."""

from __future__ import annotations

import asyncio
import signal

import pytest

from raftmq.client.admin import AdminClient
from raftmq.protocol.record import Record
from raftmq.testing.localcluster import (
    LocalCluster,
    wait_answering,
    wait_applied,
    wait_for_leader,
)
from raftmq.testing.workload import ContinuousWrites
from tests.node.conftest import ClusterFactory

pytestmark = pytest.mark.integration


async def _counters(admin: AdminClient, node_id: str) -> dict[str, int]:
    return (await admin.status(node_id, timeout=5)).counters


def _applied(cluster: LocalCluster, node_id: str) -> dict[int, bytes]:
    return {line.index: line.body for line in cluster.read_applied(node_id)}


async def test_sigterm_on_the_leader_hands_over(local_cluster: ClusterFactory) -> None:
    cluster = local_cluster()
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_answering(admin, cluster.node_ids)
        leader = await wait_for_leader(admin, timeout=30)
        old = leader.node_id
        others = [n for n in cluster.node_ids if n != old]
        first = await admin.write(Record(body=b"before"), timeout=30)
        await wait_applied(admin, cluster.node_ids, first.index, timeout=30)
        before = {n: await _counters(admin, n) for n in others}

        await asyncio.to_thread(cluster.kill, old, signal.SIGTERM)
        assert cluster.processes[old].returncode == 0, cluster.log_file(old).read_text()[-3000:]

        new = await wait_for_leader(admin, timeout=5, exclude={old})
        assert new.term == leader.term + 1  # one election: the handover's
        after_write = await admin.write(Record(body=b"after"), timeout=30)
        await wait_applied(admin, others, after_write.index, timeout=30)
        after = {n: await _counters(admin, n) for n in others}
        assert after[new.node_id]["elections_transfer"] == (
            before[new.node_id]["elections_transfer"] + 1
        )
        for node_id in others:
            assert after[node_id]["elections_timeout"] == before[node_id]["elections_timeout"]
    assert "handed leadership over" in cluster.log_file(old).read_text()
    for node_id in others:
        assert _applied(cluster, node_id)[after_write.index] == b"after"


async def test_rolling_restart_under_load_starts_no_election_by_timeout(
    local_cluster: ClusterFactory,
) -> None:
    """Each node in turn: SIGTERM, exit, start, catch up, while a producer writes all the
    time. The counters restart with each process, so each lifetime is summed: read just
    before its SIGTERM (less what the cluster's first election counted) and at the end."""
    cluster = local_cluster()
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_answering(admin, cluster.node_ids)
        await wait_for_leader(admin, timeout=30)
        baseline = {n: await _counters(admin, n) for n in cluster.node_ids}
        timeouts = transfers = 0
        async with ContinuousWrites(cluster.amqp_url, cluster.cluster) as load:
            await load.wait_for(50)
            for node_id in cluster.node_ids:
                lived = await _counters(admin, node_id)
                timeouts += lived["elections_timeout"] - baseline[node_id]["elections_timeout"]
                transfers += lived["elections_transfer"] - baseline[node_id]["elections_transfer"]
                code = await cluster.restart(node_id, admin, sig=signal.SIGTERM)
                assert code == 0, cluster.log_file(node_id).read_text()[-3000:]
                baseline[node_id] = dict.fromkeys(baseline[node_id], 0)  # a new process
                await load.wait_for(len(load.committed) + 50)  # writes go on meanwhile
        assert not load.failures, load.failures[:3]
        for node_id in cluster.node_ids:
            final = await _counters(admin, node_id)
            timeouts += final["elections_timeout"]
            transfers += final["elections_transfer"]
        indexed = {c.index: c.body for c in load.committed if c.index is not None}
        await wait_applied(admin, cluster.node_ids, max(indexed), timeout=60)
    assert not cluster.crashed()
    assert timeouts == 0
    assert transfers >= 1  # the leader was restarted at least once, and handed over
    for node_id in cluster.node_ids:
        applied = _applied(cluster, node_id)
        missing = {i for i in indexed if applied.get(i) != indexed[i]}
        assert not missing, (node_id, sorted(missing)[:10])
        bodies = set(applied.values())
        assert all(c.body in bodies for c in load.committed), node_id
