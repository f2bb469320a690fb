"""The node runtime over the in-memory transport and storage twins: the driver contract
(persist before send, apply once in order, writes resolve by index and term) under faults."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from raftmq.errors import NodeStopped, NotLeader, StorageError, WriteRejected
from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import PersistBatch
from tests.node.memory_cluster import Item, MemoryCluster


@pytest.fixture
async def cluster() -> AsyncIterator[MemoryCluster]:
    c = MemoryCluster()
    await c.start_all()
    yield c
    await c.stop_all()


def _assert_same_applied(c: MemoryCluster, count: int) -> None:
    logs = list(c.applied.values())
    assert all(log == logs[0] for log in logs), "nodes applied different sequences"
    indexes = [index for index, _ in logs[0]]
    assert indexes == sorted(set(indexes)), "an index was applied twice or out of order"
    assert len(logs[0]) == count


async def test_concurrent_writes_apply_identically_everywhere(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    commits = await asyncio.gather(*(leader.write(Item(n=k)) for k in range(300)))
    assert len({c.index for c in commits}) == 300
    await cluster.wait_applied(max(c.index for c in commits))
    _assert_same_applied(cluster, 300)
    by_index = dict(cluster.applied["a"])
    assert [by_index[c.index] for c in commits] == list(range(300))


async def test_every_node_waits_for_the_same_leader() -> None:
    """Node.wait_for_leader: what an embedding service awaits before its first write (the
    README's example), instead of a NotLeader without a hint right after start."""
    c = MemoryCluster()
    await c.start_all()
    try:
        leaders = await asyncio.gather(*(n.wait_for_leader(timeout=5) for n in c.nodes.values()))
        assert len(set(leaders)) == 1 and c.nodes[leaders[0]].is_leader
        follower = next(n for i, n in c.nodes.items() if i != leaders[0])
        with pytest.raises(NotLeader) as info:
            await follower.write(Item(n=1))
        assert info.value.leader_hint == leaders[0]
        stopped = c.nodes["a"]
        await c.stop("a")
        with pytest.raises(NodeStopped):
            await stopped.wait_for_leader(timeout=5)
    finally:
        await c.stop_all()


async def test_follower_refuses_writes_with_leader_hint(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    await leader.write(Item(n=1))  # followers learn the leader from its AppendEntries
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    with pytest.raises(NotLeader) as info:
        await follower.write(Item(n=2))
    assert info.value.leader_hint == leader.node_id


async def test_oversized_write_is_rejected_and_nothing_appended(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    leader.max_write_bytes = 100
    before = leader.status().last_index
    with pytest.raises(WriteRejected, match="max_write_bytes"):
        await leader.write(Item(n=10**200))
    assert leader.status().last_index == before


async def test_leader_loss_fails_over_without_losing_commits(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    first = await asyncio.gather(*(leader.write(Item(n=k)) for k in range(50)))
    old = leader.node_id
    await cluster.stop(old)
    new = await cluster.leader(exclude=frozenset({old}))
    assert new.status().term > first[-1].term
    second = await asyncio.gather(*(new.write(Item(n=k)) for k in range(50, 100)))
    await cluster.start(old)
    await cluster.wait_applied(second[-1].index)
    _assert_same_applied(cluster, 100)


async def test_restart_of_every_node_applies_nothing_twice(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    commits = await asyncio.gather(*(leader.write(Item(n=k)) for k in range(40)))
    await cluster.wait_applied(commits[-1].index)
    await cluster.stop_all()
    await cluster.start_all()
    leader = await cluster.leader()
    last = await leader.write(Item(n=40))
    await cluster.wait_applied(last.index)
    _assert_same_applied(cluster, 41)


async def test_duplicated_delayed_reordered_messages_are_harmless() -> None:
    c = MemoryCluster(seed=5)
    c.network.duplicate_rate = 0.3
    c.network.reorder_rate = 0.3
    c.network.delay = (0.0, 0.004)
    await c.start_all()
    try:
        leader = await c.leader()
        commits = await asyncio.gather(*(leader.write(Item(n=k)) for k in range(200)))
        await c.wait_applied(max(x.index for x in commits))
        _assert_same_applied(c, 200)
    finally:
        await c.stop_all()


class FlakyStorage(MemoryStorage):
    """A real MemoryStorage whose next ``failures`` saves raise StorageError (a database
    that goes away for a while)."""

    failures = 0

    async def save(self, batch: PersistBatch) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StorageError("database unavailable (injected)")
        await super().save(batch)


async def test_failing_saves_are_retried_and_nothing_is_lost() -> None:
    """A follower whose database fails keeps retrying the same batch, sends nothing that
    depends on it meanwhile, and catches up once the database is back."""
    c = MemoryCluster(seed=3)
    flaky = {i: FlakyStorage(cluster="mem", node_id=i) for i in c.ids}
    c.storages.update(flaky)
    await c.start_all()
    try:
        leader = await c.leader()
        follower = next(i for i in c.ids if i != leader.node_id)
        flaky[follower].failures = 5
        commits = await asyncio.gather(*(leader.write(Item(n=k)) for k in range(30)))
        await c.wait_applied(commits[-1].index)
        assert flaky[follower].failures == 0
        assert c.nodes[follower].status().counters["storage_retries"] >= 5
        assert c.nodes[follower].status().storage_ok
        _assert_same_applied(c, 30)
    finally:
        await c.stop_all()


async def test_stop_fails_pending_writes(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    cluster.network.disconnect(leader.node_id)  # nothing can commit now
    pending = asyncio.create_task(leader.write(Item(n=1)))
    await asyncio.sleep(0.05)
    assert not pending.done()
    await cluster.stop(leader.node_id)
    with pytest.raises((NodeStopped, NotLeader)):
        await pending


async def test_failing_callback_is_counted_and_the_node_goes_on() -> None:
    c = MemoryCluster(seed=9)
    await c.start_all()
    try:
        leader = await c.leader()
        calls: list[int] = []

        def explode(applied: object) -> None:
            calls.append(1)
            raise RuntimeError("application bug")

        leader.on_commit = explode
        commit = await leader.write(Item(n=1))
        commit2 = await leader.write(Item(n=2))
        assert commit2.index == commit.index + 1
        assert leader.status().counters["apply_errors"] == 2 and len(calls) == 2
    finally:
        await c.stop_all()


async def test_isolated_follower_rejoins_without_deposing_the_leader(
    cluster: MemoryCluster,
) -> None:
    """Pre-vote (thesis §9.6): a node that was cut off does not disrupt on return."""
    leader = await cluster.leader()
    term = leader.status().term
    follower = next(i for i in cluster.ids if i != leader.node_id)
    cluster.network.disconnect(follower)
    await asyncio.sleep(0.5)  # many election timeouts (0.1-0.2 s each) while cut off
    cluster.network.connect(follower)
    last = await leader.write(Item(n=7))
    await cluster.wait_applied(last.index)
    assert leader.is_leader and leader.status().term == term
    assert cluster.nodes[follower].status().term == term


async def test_saves_are_logged_at_debug_with_what_they_held(
    cluster: MemoryCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """`raftmq node --log-level DEBUG` shows each save: the entries, the hard state."""
    leader = await cluster.leader()
    with caplog.at_level(logging.DEBUG, logger="raftmq.node.loop"):
        commit = await leader.write(Item(n=1))
        await cluster.wait_applied(commit.index)
    saves = [r.getMessage() for r in caplog.records if ": saved " in r.getMessage()]
    wanted = f"entries {commit.index}..{commit.index}"
    assert any(line.startswith(f"{leader.node_id}: saved ") and wanted in line for line in saves)
    assert sum(wanted in line for line in saves) >= 2  # the leader's and a follower's
