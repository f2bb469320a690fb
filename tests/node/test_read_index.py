"""Node.read_index (issue 13, item 6): a linearizable read barrier on the leader and on
followers (asked of the leader), that never returns before this node applied every write
acknowledged before the call, and that fails -- never answers stale -- on a node cut off
from the majority."""

from __future__ import annotations

import asyncio

import pytest

from raftmq.errors import NotLeader
from raftmq.node.node import Node
from tests.node.memory_cluster import Item, MemoryCluster


async def _wrote(leader: Node[Item], n: int) -> int:
    return (await leader.write(Item(n=n))).index


async def test_a_read_on_the_leader_and_on_followers_sees_every_acknowledged_write() -> None:
    c = MemoryCluster()
    await c.start_all()
    try:
        leader = await c.leader()
        for k in range(20):
            index = await _wrote(leader, k)
            for node_id, node in c.nodes.items():
                read = await node.read_index(timeout=10)
                assert read >= index, node_id
                # the node's own state machine already holds the write: no waiting after
                assert (index, k) in c.applied[node_id], node_id
                assert node.applied_index >= read
    finally:
        await c.stop_all()


async def test_many_concurrent_reads_share_rounds_and_all_answer() -> None:
    c = MemoryCluster()
    await c.start_all()
    try:
        leader = await c.leader()
        index = await _wrote(leader, 1)
        follower = next(n for i, n in c.nodes.items() if i != leader.node_id)
        reads = await asyncio.gather(
            *(node.read_index(timeout=10) for node in (leader, follower) for _ in range(200))
        )
        assert min(reads) >= index
    finally:
        await c.stop_all()


async def test_a_node_cut_off_from_the_majority_never_answers_a_read() -> None:
    c = MemoryCluster()
    await c.start_all()
    try:
        old = await c.leader()
        await _wrote(old, 1)
        c.network.disconnect(old.node_id)
        # the old leader cannot confirm: it times out or learns it lost leadership
        with pytest.raises((NotLeader, TimeoutError)):
            await old.read_index(timeout=2)
        new = await c.leader(exclude=frozenset({old.node_id}))
        index = await _wrote(new, 2)
        assert await new.read_index(timeout=10) >= index
        with pytest.raises((NotLeader, TimeoutError)):
            await old.read_index(timeout=1)
    finally:
        await c.stop_all()


async def test_no_leader_is_a_prompt_not_leader() -> None:
    c = MemoryCluster()
    await c.start_all()
    try:
        leader = await c.leader()
        for node_id in [i for i in c.ids if i != leader.node_id]:
            await c.stop(node_id)
        lone = leader
        # check-quorum makes the lone leader step down; then it knows no leader
        async with asyncio.timeout(10):
            while lone.leader_id is not None:  # noqa: ASYNC110
                await asyncio.sleep(c.tick)
        with pytest.raises(NotLeader):
            await lone.read_index(timeout=5)
    finally:
        await c.stop_all()
