"""Membership changes with four `raftmq node` processes on the real broker (issue
MEMBERS): a node started with ``--join`` waits outside the cluster, is added as a
learner (`AdminClient.change_membership`, the call behind `raftmq members`), catches up
from index 1, is promoted, and then the leader itself is removed: it hands the cluster
over once the change commits, exits saying why, and writes go on; `raftmq members list`
shows the result."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable

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

SEED = ["n1", "n2", "n3"]


def _applied(cluster: LocalCluster, node_id: str) -> list[tuple[int, bytes]]:
    return [(line.index, line.body) for line in cluster.read_applied(node_id)]


def _members_list(cluster: LocalCluster) -> subprocess.CompletedProcess[str]:
    return _members_cli(cluster, "list")


def _members_cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "raftmq",
            "members",
            *args,
            "--cluster",
            cluster.cluster,
            "--nodes",
            ",".join(cluster.node_ids),
            "--amqp-url",
            cluster.amqp_url,
            "--cluster-key-file",
            str(cluster.key_file),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_a_joining_node_is_added_promoted_and_the_leader_removed(
    local_cluster: ClusterFactory,
) -> None:
    node_env = {n: {"RAFTMQ_PEERS": ",".join(p for p in SEED if p != n)} for n in SEED}
    node_env["n4"] = {"RAFTMQ_PEERS": ",".join(SEED), "RAFTMQ_JOIN": "true"}
    cluster = local_cluster(["n1", "n2", "n3", "n4"], node_env=node_env)
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_answering(admin, cluster.node_ids)
        leader = await wait_for_leader(admin, timeout=30)
        first = await admin.write(Record(body=b"before n4"), timeout=30)
        await wait_applied(admin, SEED, first.index, timeout=30)
        assert (await admin.status("n4")).applied == 0  # outside: nobody sends to it

        status = await admin.change_membership("add_learner", "n4", timeout=30)
        assert (status.voters, status.learners) == (SEED, ["n4"])
        second = await admin.write(Record(body=b"with a learner"), timeout=30)
        await wait_applied(admin, cluster.node_ids, second.index, timeout=30)
        assert _applied(cluster, "n4") == _applied(cluster, leader.node_id)

        status = await admin.change_membership("add_voter", "n4", timeout=30)
        assert (status.voters, status.learners) == (["n1", "n2", "n3", "n4"], [])

        old = (await wait_for_leader(admin, timeout=30)).node_id
        status = await admin.change_membership("remove", old, timeout=30)
        rest = [n for n in cluster.node_ids if n != old]
        assert status.voters == rest
        new = await wait_for_leader(admin, timeout=30, exclude={old})
        assert new.node_id in rest
        third = await admin.write(Record(body=b"without the old leader"), timeout=30)
        await wait_applied(admin, rest, third.index, timeout=30)
        # The removed node says why and exits with 0 (a supervisor does not restart it).
        code = await asyncio.to_thread(cluster.processes[old].wait, 30)
        cluster.stopped.add(old)
        assert code == 0
        assert "removed from the cluster" in cluster.log_file(old).read_text()

    listed = await asyncio.to_thread(_members_list, cluster)
    assert listed.returncode == 0, listed.stderr
    assert f"voters:   {','.join(rest)}" in listed.stdout
    assert "learners: -" in listed.stdout
    assert cluster.crashed() == {}


async def _caught_up(admin: AdminClient, node_id: str, timeout: float = 60.0) -> None:
    leader = await wait_for_leader(admin, timeout=timeout)
    await wait_applied(admin, [node_id], leader.commit, timeout=timeout)


async def _add(admin: AdminClient, node_id: str) -> None:
    """As an operator does: learner first, promoted once it caught up."""
    await admin.change_membership("add_learner", node_id, timeout=30)
    await _caught_up(admin, node_id)
    await admin.change_membership("add_voter", node_id, timeout=30)


async def _remove(admin: AdminClient, cluster: LocalCluster, node_id: str) -> None:
    await admin.change_membership("remove", node_id, timeout=30)
    code = await asyncio.to_thread(cluster.processes[node_id].wait, 60)
    cluster.stopped.add(node_id)
    assert code == 0, cluster.log_file(node_id).read_text()[-2000:]


async def test_grow_to_five_shrink_to_three_and_replace_a_wiped_node_under_writes(
    local_cluster: ClusterFactory,
) -> None:
    """3 -> 5 -> 3 voters and a node whose database was deleted coming back under its id
    (removed first, then started empty with --join, added as a learner, promoted), with
    writes in flight all the time: every receipt is in the final members' logs, which
    are identical."""
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    node_env = {n: {"RAFTMQ_PEERS": ",".join(p for p in SEED if p != n)} for n in SEED}
    for n in ("n4", "n5"):
        node_env[n] = {"RAFTMQ_PEERS": ",".join(SEED), "RAFTMQ_JOIN": "true"}
    cluster = local_cluster(nodes, node_env=node_env)
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_answering(admin, nodes)
        await wait_for_leader(admin, timeout=30)
        async with ContinuousWrites(cluster.amqp_url, cluster.cluster, writers=4) as load:
            await load.wait_for(50, timeout=60)
            for node_id in ("n4", "n5"):
                await _add(admin, node_id)
            assert (await admin.members()).voters == nodes
            await load.wait_for(len(load.committed) + 50, timeout=60)
            for node_id in ("n1", "n2"):
                await _remove(admin, cluster, node_id)
            assert (await admin.members()).voters == ["n3", "n4", "n5"]
            await load.wait_for(len(load.committed) + 50, timeout=60)
            # n3's disk is lost: out of the configuration first, then back, empty.
            await _remove(admin, cluster, "n3")
            for path in cluster.node_dir("n3").glob("raftmq-*.db*"):
                path.unlink()
            cluster.applied_log("n3").unlink()
            cluster.node_env["n3"] = {"RAFTMQ_PEERS": ",".join(SEED), "RAFTMQ_JOIN": "true"}
            cluster.start("n3")
            await _add(admin, "n3")
            assert (await admin.members()).voters == ["n3", "n4", "n5"]
            await load.wait_for(len(load.committed) + 50, timeout=60)
        assert load.failures == []
        final = ["n3", "n4", "n5"]
        written = {c.index: c.body for c in load.committed if c.index is not None}
        assert len(written) == len(load.committed)  # new writes: each has its own index
        last = max(written)
        await wait_applied(admin, final, last, timeout=60)
    logs = {n: _applied(cluster, n) for n in final}
    assert logs["n3"] == logs["n4"] == logs["n5"]
    held = dict(logs["n4"])
    assert all(held.get(index) == body for index, body in written.items())
    assert cluster.crashed() == {}


def _wipe(cluster: LocalCluster, node_id: str) -> None:
    """Delete a stopped node's database (and its applied log): a lost disk."""
    for path in cluster.node_dir(node_id).glob("raftmq-*.db*"):
        path.unlink()
    cluster.applied_log(node_id).unlink()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - polling other processes' status
            await asyncio.sleep(0.1)


async def test_a_voter_back_on_an_empty_database_is_not_counted_until_replaced(
    local_cluster: ClusterFactory,
) -> None:
    """A voter's database is deleted and it is started again as before (same id, same
    --peers: the careless restart). Its vote elects nobody -- with the leader killed,
    the other voter and it stay leaderless (before incarnations the empty node voted
    and the other one led) -- until the old leader is back; then `raftmq members
    replace` makes it a learner pinned to its new database, it catches up and is a
    voter again, holding every write."""
    node_env = {n: {"RAFTMQ_PEERS": ",".join(p for p in SEED if p != n)} for n in SEED}
    cluster = local_cluster(SEED, node_env=node_env)
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_answering(admin, SEED)
        leader = (await wait_for_leader(admin, timeout=30)).node_id
        first = await admin.write(Record(body=b"before the disk is lost"), timeout=30)
        await wait_applied(admin, SEED, first.index, timeout=30)

        async def pinned() -> bool:
            return len((await admin.members()).incarnations) == len(SEED)

        await _until(pinned)
        victim, other = (n for n in SEED if n != leader)
        old = (await admin.status(victim)).incarnation
        await asyncio.to_thread(cluster.kill, victim)
        _wipe(cluster, victim)
        cluster.start(victim)

        async def named() -> bool:
            return victim in (await admin.members()).strangers

        await _until(named)
        new = (await admin.status(victim)).incarnation
        assert new not in (None, old)
        # Its vote counts nowhere: the other voter cannot lead with it.
        await asyncio.to_thread(cluster.kill, leader)
        loop = asyncio.get_running_loop()
        watch_until = loop.time() + 3.0  # several election timeouts (0.5-1 s each)
        while loop.time() < watch_until:  # an absence: watched, not waited for
            statuses = await admin.statuses(timeout=0.5)
            leaders = [n for n, s in statuses.items() if s is not None and s.role.value == "leader"]
            assert leaders == [], statuses
        other_status = statuses[other]
        assert other_status is not None and other_status.counters["strangers_dropped"] > 0
        cluster.start(leader)
        await wait_for_leader(admin, timeout=30)

        replaced = await asyncio.to_thread(_members_cli, cluster, "replace", victim)
        assert replaced.returncode == 0, replaced.stdout + replaced.stderr
        assert f"voters:   {','.join(SEED)}" in replaced.stdout
        status = await admin.members()
        assert (status.incarnations[victim], status.strangers) == (new, {})
        last = await admin.write(Record(body=b"after the replacement"), timeout=30)
        await wait_applied(admin, SEED, last.index, timeout=30)
    logs = {n: _applied(cluster, n) for n in SEED}
    assert logs[victim] == logs[leader] == logs[other]
    assert (first.index, b"before the disk is lost") in logs[victim]
    assert cluster.crashed() == {}
