"""The node loop under storage faults: it retries what a retry can cure (reads as well as
saves, and a save whose commit landed but whose answer was lost), and anything else ends
it visibly -- status says so, writes fail, ``stop()`` raises -- never silently."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftmq.core.types import Entry, Role
from raftmq.errors import ConfigError, NodeStopped, NotLeader, StorageError, StoreMismatch
from raftmq.protocol.record import Record
from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import PersistBatch
from tests.node.memory_cluster import Item, MemoryCluster


class FaultyStorage(MemoryStorage):
    """A real MemoryStorage that fails on command: ``read_failures`` reads of entries
    raise StorageError; ``lost_answers`` saves land and then raise StorageError (the
    answer to a commit was lost); ``refuse`` makes every save raise it."""

    read_failures = 0
    lost_answers = 0
    refuse: StorageError | None = None

    async def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if self.read_failures > 0:
            self.read_failures -= 1
            raise StorageError("database unavailable (injected)")
        return await super().entries(lo, hi, max_bytes)

    async def save(self, batch: PersistBatch) -> None:
        if self.refuse is not None:
            raise self.refuse
        await super().save(batch)
        if self.lost_answers > 0 and batch.entries:
            self.lost_answers -= 1
            raise StorageError("connection lost after COMMIT (injected)")


def _faulty_cluster(seed: int, **config: Any) -> tuple[MemoryCluster, dict[str, FaultyStorage]]:
    c = MemoryCluster(seed=seed, **config)
    stores = {i: FaultyStorage(cluster="mem", node_id=i) for i in c.ids}
    c.storages.update(stores)
    return c, stores


def _assert_applied_everywhere(c: MemoryCluster, values: list[int]) -> None:
    for node_id in c.ids:
        assert sorted(n for _, n in c.applied[node_id]) == values, node_id
    logs = list(c.applied.values())
    assert all(log == logs[0] for log in logs), "nodes applied different sequences"


async def test_failing_reads_are_retried_and_a_far_behind_follower_catches_up() -> None:
    """A follower further behind than the leader's entry cache is served from storage;
    when those reads fail, the leader retries them (counted) instead of dying."""
    c, stores = _faulty_cluster(seed=4, max_cached_entries=8)
    await c.start_all()
    try:
        leader = await c.leader()
        behind = next(i for i in c.ids if i != leader.node_id)
        c.network.disconnect(behind)
        commits = [await leader.write(Item(n=k)) for k in range(40)]
        stores[leader.node_id].read_failures = 5
        c.network.connect(behind)
        await c.wait_applied(commits[-1].index)
        async with asyncio.timeout(5):
            while not leader.status().storage_ok:  # noqa: ASYNC110 - a last read may be between retries
                await asyncio.sleep(c.tick)
        status = leader.status()
        failed_reads = 5 - stores[leader.node_id].read_failures
        assert failed_reads >= 1 and status.counters["storage_read_retries"] == failed_reads
        assert status.loop_ok and status.storage_ok
        assert sorted(n for _, n in c.applied[behind]) == list(range(40))
    finally:
        await c.stop_all()


async def test_save_whose_commit_landed_is_retried_and_accepted() -> None:
    """Every node loses the answer to some of its saves after they landed: the retry of
    the same batch is accepted, nothing is lost or applied twice."""
    c, stores = _faulty_cluster(seed=6)
    await c.start_all()
    try:
        leader = await c.leader()
        for store in stores.values():
            store.lost_answers = 3
        commits = await asyncio.gather(*(leader.write(Item(n=k)) for k in range(30)))
        await c.wait_applied(max(x.index for x in commits))
        assert all(store.lost_answers == 0 for store in stores.values())
        for node in c.nodes.values():
            status = node.status()
            assert status.counters["storage_retries"] >= 3 and status.storage_ok, status
        _assert_applied_everywhere(c, list(range(30)))
    finally:
        await c.stop_all()


async def test_loop_failure_is_visible_and_stop_raises() -> None:
    """A store that is not the node's database any more cannot be cured by retrying: the
    loop ends, pending writes fail, status says the loop is dead (not the old role),
    ``wait_failed`` returns the error, ``stop`` raises it; the others go on."""
    c, stores = _faulty_cluster(seed=8)
    await c.start_all()
    try:
        leader = await c.leader()
        await leader.write(Item(n=0))
        stores[leader.node_id].refuse = StoreMismatch("the database was replaced (injected)")
        with pytest.raises(NodeStopped, match="loop failed"):
            await leader.write(Item(n=1))
        async with asyncio.timeout(5):
            error = await leader.wait_failed()
        assert isinstance(error, StoreMismatch) and leader.failure is error
        status = leader.status()
        assert not status.loop_ok and "replaced" in (status.loop_error or "")
        assert status.role is Role.FOLLOWER and status.leader_id is None
        assert not status.storage_ok and not leader.is_leader
        with pytest.raises(NodeStopped):
            leader.submit_record(Record(body=b'{"n": 2}'))
        new = await c.leader(exclude=frozenset({leader.node_id}))
        await new.write(Item(n=3))
        with pytest.raises(NodeStopped, match="loop failed"):
            await c.stop(leader.node_id)
    finally:
        await c.stop_all()


async def test_transfer_leadership_is_queued_for_the_loop() -> None:
    c, _ = _faulty_cluster(seed=10)
    await c.start_all()
    try:
        leader = await c.leader()
        await leader.write(Item(n=1))
        target = next(i for i in c.ids if i != leader.node_id)
        with pytest.raises(NotLeader):
            await c.nodes[target].transfer_leadership(leader.node_id)
        with pytest.raises(ConfigError):
            await leader.transfer_leadership("nobody")
        await leader.transfer_leadership(target)
        new = await c.leader(exclude=frozenset({leader.node_id}))
        assert new.node_id == target
    finally:
        await c.stop_all()
