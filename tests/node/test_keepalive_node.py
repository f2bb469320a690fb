"""A leader held up by a slow save keeps its followers with heartbeats (raftmq.node.loop,
``_keep_lease``), for at most KEEPALIVE_ELECTION_TIMEOUTS election timeouts of one turn.

Found in a full CI run (tests/queue/test_hostile_writes.py, the burst of huge batches)
and reproduced under disk load: one save of 512 entries took 922 ms on the leader,
longer than the 0.5 s election timeout, and both followers elected a new leader. Here
the leader's save is held on an event, so the stall is as long as the test wants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from raftmq.core.types import Role
from raftmq.node.loop import KEEPALIVE_ELECTION_TIMEOUTS
from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import PersistBatch
from tests.node.memory_cluster import Item, MemoryCluster

ELECTION_TICKS, HEARTBEAT_TICKS = 10, 2
ROUNDS_PER_TIMEOUT = ELECTION_TICKS // HEARTBEAT_TICKS


class HeldStorage(MemoryStorage):
    """A real MemoryStorage whose saves of entries wait while ``held`` is set (a disk
    that stops answering for as long as the test says)."""

    held: asyncio.Event | None = None

    async def save(self, batch: PersistBatch) -> None:
        if self.held is not None and batch.entries:
            await self.held.wait()
        await super().save(batch)


def _cluster(seed: int) -> tuple[MemoryCluster, dict[str, HeldStorage]]:
    c = MemoryCluster(seed=seed, election_ticks=ELECTION_TICKS, heartbeat_ticks=HEARTBEAT_TICKS)
    stores = {i: HeldStorage(cluster="mem", node_id=i) for i in c.ids}
    c.storages.update(stores)
    return c, stores


def _release(stores: dict[str, HeldStorage]) -> None:
    for store in stores.values():
        if store.held is not None:
            store.held.set()
            store.held = None


async def _until(condition: Callable[[], bool], c: MemoryCluster, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls node state owned by other tasks
            await asyncio.sleep(c.tick)


async def test_a_save_stalled_for_several_election_timeouts_costs_no_election() -> None:
    c, stores = _cluster(seed=3)
    await c.start_all()
    try:
        leader = await c.leader()
        first = await leader.write(Item(n=0))
        await c.wait_applied(first.index)
        term = leader.status().term
        elections = {i: n.status().counters["elections_timeout"] for i, n in c.nodes.items()}
        release = asyncio.Event()
        stores[leader.node_id].held = release
        write = asyncio.ensure_future(leader.write(Item(n=1)))
        # Longer than the longest randomized election timeout (2 x ELECTION_TICKS) passes
        # while the save waits: counted in keepalive rounds, one per heartbeat interval.
        rounds = 3 * ROUNDS_PER_TIMEOUT
        assert rounds * HEARTBEAT_TICKS > 2 * ELECTION_TICKS
        assert rounds < KEEPALIVE_ELECTION_TIMEOUTS * ROUNDS_PER_TIMEOUT
        # (or until someone started an election: what happened without keepalives)
        await _until(
            lambda: (
                leader.status().counters["keepalives"] >= rounds
                or any(n.status().term > term for n in c.nodes.values())
            ),
            c,
        )
        assert [n.status().term for n in c.nodes.values()] == [term] * len(c.nodes)
        release.set()
        stores[leader.node_id].held = None
        commit = await asyncio.wait_for(write, 10)
        await c.wait_applied(commit.index)
        for node_id, node in c.nodes.items():
            status = node.status()
            assert (status.term, status.leader_id) == (term, leader.node_id), node_id
            assert status.counters["elections_timeout"] == elections[node_id], node_id
        assert sorted(n for _, n in c.applied[leader.node_id]) == [0, 1]
    finally:
        _release(stores)
        await c.stop_all()


async def test_a_save_stalled_past_the_limit_lets_the_followers_elect_another_leader() -> None:
    c, stores = _cluster(seed=5)
    await c.start_all()
    try:
        leader = await c.leader()
        # Keepalives go to replicating followers: one write first puts them there (a
        # follower still probing, right after an election, gets none).
        first = await leader.write(Item(n=0))
        await c.wait_applied(first.index)
        term = leader.status().term
        release = asyncio.Event()
        stores[leader.node_id].held = release
        write = asyncio.ensure_future(leader.write(Item(n=1)))
        others = [n for i, n in c.nodes.items() if i != leader.node_id]
        # Keepalives stop after KEEPALIVE_ELECTION_TIMEOUTS election timeouts of the
        # turn; a follower then times out and wins (the stalled leader cannot vote).
        await _until(lambda: any(n.is_leader and n.status().term > term for n in others), c)
        assert leader.status().counters["keepalives"] >= (
            KEEPALIVE_ELECTION_TIMEOUTS * ROUNDS_PER_TIMEOUT - 2
        )
        release.set()
        stores[leader.node_id].held = None
        # The old leader learns of the new term once its loop runs again, and steps down;
        # the write proposed into the stalled save either committed or failed NotLeader.
        await _until(lambda: leader.status().role is Role.FOLLOWER, c)
        await asyncio.gather(write, return_exceptions=True)
        new_leader = await c.leader()
        last = await new_leader.write(Item(n=2))
        await c.wait_applied(last.index)
        logs = [c.applied[i] for i in c.ids]
        assert all(log == logs[0] for log in logs)
    finally:
        _release(stores)
        await c.stop_all()
