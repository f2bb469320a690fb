"""Cluster identity on the memory network (the broker's bootstrap record, twinned): which
bootstrap of a cluster name a node belongs to is settled at start, before it speaks, and
a message of another bootstrap is dropped and counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from raftmq.core.config import RaftConfig
from raftmq.core.messages import AppendEntries
from raftmq.errors import ConfigError, StoreMismatch
from raftmq.node.node import Node
from raftmq.protocol.bootstrap import new_cluster_id
from raftmq.storage.memory import MemoryStorage
from raftmq.transport.memory import MemoryNetwork
from tests.node.memory_cluster import Item, MemoryCluster
from tests.transport.helpers import wait_until


@pytest.fixture
async def cluster() -> AsyncIterator[MemoryCluster]:
    c = MemoryCluster()
    await c.start_all()
    yield c
    await c.stop_all()


def _node(network: MemoryNetwork, storage: MemoryStorage, voters: tuple[str, ...]) -> Node[Item]:
    return Node(
        config=RaftConfig(node_id=storage.node_id, voters=voters),
        storage=storage,
        transport=network.transport(storage.node_id, "mem"),
        model=Item,
        tick_interval=0.01,
        identity=network.identity("mem", voters),
    )


async def _stored_id(storage: MemoryStorage) -> str | None:
    await storage.open()
    try:
        return await storage.cluster_id()
    finally:
        await storage.close()


async def test_every_member_stores_the_cluster_id_and_status_shows_it(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    status = leader.status()
    assert status.cluster_id == cluster.network.records["mem"].cluster_id
    assert status.bootstrap_voters == ["a", "b", "c"]
    for storage in cluster.storages.values():
        assert await storage.cluster_id() == status.cluster_id


async def test_a_node_whose_peers_differ_from_the_record_refuses_naming_both(
    cluster: MemoryCluster,
) -> None:
    """A mismatched peer list is refused loudly at start, before the node speaks; its
    database stays unclaimed and the cluster goes on committing."""
    storage = MemoryStorage(cluster="mem", node_id="d")
    intruder = _node(cluster.network, storage, ("a", "b", "d"))
    with pytest.raises(ConfigError, match=r"voters a,b,d differ .* bootstrapped with: a,b,c"):
        await intruder.start()
    assert await _stored_id(storage) is None
    leader = await cluster.leader()
    commit = await leader.write(Item(n=1))
    await cluster.wait_applied(commit.index)


async def test_a_database_of_another_bootstrap_is_refused_and_left_as_it_was() -> None:
    """The broker lost the cluster's objects and a new cluster was bootstrapped under the
    same name: an old member's database is refused (StoreMismatch), nothing in it changes,
    and nothing it acknowledged is lost from it."""
    old = MemoryCluster()
    await old.start_all()
    commit = await (await old.leader()).write(Item(n=7))
    await old.wait_applied(commit.index)
    await old.stop_all()
    old_a = old.storages["a"]
    assert isinstance(old_a, MemoryStorage)
    old_id = await _stored_id(old_a)

    new = MemoryCluster()  # a new broker: a new bootstrap record, a new cluster id
    for node_id in ("b", "c"):
        await new.start(node_id)
    try:
        stale = _node(new.network, old_a, ("a", "b", "c"))
        new_id = new.network.records["mem"].cluster_id
        with pytest.raises(StoreMismatch, match=f"belongs to cluster id {old_id}.* is {new_id}"):
            await stale.start()
        await old_a.open()
        assert await old_a.cluster_id() == old_id
        assert [e.index for e in await old_a.entries(1, commit.index)][-1] == commit.index
        await old_a.close()
    finally:
        await new.stop_all()


async def test_an_empty_database_adopts_the_record_and_a_lost_record_comes_back() -> None:
    network = MemoryNetwork()
    existing = new_cluster_id()
    first = network.identity("mem", ("a", "b", "c"))
    assert await first.admit(existing) == existing  # the first start bootstraps
    # An empty database never makes a second cluster of the name: it joins the record's.
    assert await network.identity("mem", ("c", "b", "a")).admit(None) == existing
    lost = MemoryNetwork()  # the broker lost the record: a member brings it back
    assert await lost.identity("mem", ("a", "b", "c")).admit(existing) == existing
    assert lost.records["mem"].cluster_id == existing


async def test_a_message_of_another_cluster_id_is_dropped_and_counted(
    cluster: MemoryCluster,
) -> None:
    """A node of another bootstrap (same name, same key) sends a higher-term AppendEntries:
    dropped as other_cluster_id, counted, and the term does not move."""
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    term = follower.status().term
    stale = cluster.network.transport("z", "mem", cluster_id=new_cluster_id())
    await stale.start(lambda _message: None)
    try:
        stale.send(
            [
                AppendEntries(
                    term=term + 5,
                    sender=leader.node_id,
                    recipient=follower.node_id,
                    prev_log_index=0,
                    prev_log_term=0,
                    entries=(),
                    leader_commit=0,
                )
            ]
        )
        await wait_until(
            lambda: follower.status().transport["dropped"].get("other_cluster_id", 0) == 1,
            what="the message of another cluster id dropped",
        )
    finally:
        await stale.stop()
    assert follower.status().term == term
