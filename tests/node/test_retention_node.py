"""Retention in the node (issue 12, item 4): a node whose log passed a bound by its slack
takes a snapshot and compacts to the retention point, at most to its trailing entries
and its compaction floor; each bound alone decides (the furthest wins); periodic
snapshots never compact what retention keeps."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from raftmq.errors import ConfigError
from raftmq.node.node import Node
from raftmq.node.retention import Retention
from raftmq.node.settings import NodeSettings
from raftmq.storage.port import LogExtent
from tests.node.memory_cluster import Item, MemoryCluster
from tests.node.test_snapshots_node import _bookkeeping_saved, _state, _write_many


def _extent(entries: int, payload: int = 0, oldest: float | None = None) -> LogExtent:
    return LogExtent(
        first_index=1,
        last_index=entries,
        entries=entries,
        payload_bytes=payload,
        oldest_appended=oldest,
    )


def test_a_bound_is_exceeded_only_past_its_slack() -> None:
    by_count = Retention(entries=100)
    assert not by_count.exceeded(_extent(110), now=0)  # a tenth over: not yet
    assert by_count.exceeded(_extent(111), now=0)
    by_bytes = Retention(bytes=1000)
    assert not by_bytes.exceeded(_extent(5, payload=1100), now=0)
    assert by_bytes.exceeded(_extent(5, payload=1101), now=0)
    by_age = Retention(age=100.0)
    now = time.time()
    assert not by_age.exceeded(_extent(5, oldest=now - 105), now=now)
    assert by_age.exceeded(_extent(5, oldest=now - 111), now=now)
    assert not by_age.exceeded(_extent(1, oldest=now - 1000), now=now)  # the newest stays
    assert not by_age.exceeded(_extent(5, oldest=None), now=now)  # age unknown
    assert not Retention().active and not Retention().exceeded(_extent(10**6), now=now)


@pytest.mark.parametrize("field", ["entries", "bytes", "age"])
def test_a_negative_bound_is_a_config_error(field: str) -> None:
    with pytest.raises(ConfigError, match=f"retain_{field}"):
        Retention(**{field: -1}).check()
    bad: dict[str, Any] = {f"retain_{field}": -1}
    with pytest.raises(ValueError, match=f"retain_{field}"):
        NodeSettings(node_id="a", single_node=True, insecure=True, **bad)


def test_settings_give_the_node_its_retention() -> None:
    settings = NodeSettings(
        node_id="a", single_node=True, insecure=True, retain_entries=5, retain_age=60
    )
    assert settings.retention() == Retention(entries=5, bytes=0, age=60.0)


class RetentionCluster(MemoryCluster):
    """A MemoryCluster whose nodes keep ``retention`` (and a compaction floor, if set)."""

    def __init__(
        self,
        retention: Retention,
        *,
        snapshot_entries: int = 0,
        floor: int | None = None,
        **config: Any,
    ) -> None:
        super().__init__(**config)
        self.retention = retention
        self.snapshot_entries = snapshot_entries
        self.floor = floor

    async def start(self, node_id: str) -> Node[Item]:
        record = self.applied[node_id]
        node = self.build(
            node_id,
            lambda applied: record.append((applied.index, applied.value.n)),
            retention=self.retention,
            snapshot_entries=self.snapshot_entries,
        )
        if self.floor is not None:
            floor = self.floor
            node.compaction_floor = lambda: floor
        await node.start()
        self.nodes[node_id] = node
        return node


async def _written(c: MemoryCluster, count: int) -> tuple[Node[Item], int]:
    """The leader and the last index, once ``count`` writes were applied on every node."""
    leader = await c.leader()
    commits = await _write_many(leader, 1, count)
    last = max(x.index for x in commits)
    await c.wait_applied(last)
    return leader, last


async def _compacted(c: MemoryCluster, past: int, timeout: float = 20.0) -> None:
    """Wait until every node's storage starts after ``past`` (retention runs about once
    a second)."""
    async with asyncio.timeout(timeout):
        for node_id in c.nodes:
            while await c.storages[node_id].first_index() <= past:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_every_node_keeps_the_newest_entries_and_the_same_state() -> None:
    c = RetentionCluster(Retention(entries=100), trailing_entries=20)
    await c.start_all()
    try:
        leader, last = await _written(c, 400)
        await _compacted(c, last - 111)
        for node_id, node in c.nodes.items():
            extent = await c.storages[node_id].extent()
            assert extent.last_index == last
            assert 100 <= extent.entries <= 111, (node_id, extent)
            assert node.status().counters["snapshots_taken"] >= 1
            assert node.status().first_index == extent.first_index  # status shows it
            # the entries kept are whole and readable
            kept = await c.storages[node_id].entries(extent.first_index, last)
            assert [e.index for e in kept] == list(range(extent.first_index, last + 1))
        async with asyncio.timeout(10):  # the leader hears every follower's last ack
            while True:
                followers = leader.status().followers
                assert followers is not None
                if all(f.match == last and f.lag == 0 for f in followers.values()):
                    break
                await asyncio.sleep(c.tick)
        assert set(followers) == set(c.ids) - {leader.node_id}
        assert all(n.status().followers is None for n in c.nodes.values() if n is not leader)
        await _bookkeeping_saved(c)
        states = [_state(node) for node in c.nodes.values()]
        assert all(state == states[0] for state in states)
    finally:
        await c.stop_all()


async def test_trailing_entries_and_the_floor_hold_retention_back() -> None:
    # keep 10 by count, but 50 trailing entries and nothing past index 120
    c = RetentionCluster(Retention(entries=10), floor=120, trailing_entries=50)
    await c.start_all()
    try:
        await _written(c, 300)
        await _compacted(c, 100)
        for node_id in c.nodes:
            assert await c.storages[node_id].first_index() == 121  # the floor, no further
    finally:
        await c.stop_all()


async def test_periodic_snapshots_never_compact_what_retention_keeps() -> None:
    # a snapshot every 50 entries with 5 trailing entries would keep about 5-55 entries;
    # retention keeps the newest 150
    c = RetentionCluster(Retention(entries=150), snapshot_entries=50, trailing_entries=5)
    await c.start_all()
    try:
        _, last = await _written(c, 400)
        await _compacted(c, last - 166)
        for node_id in c.nodes:
            extent = await c.storages[node_id].extent()
            assert extent.entries >= 150, (node_id, extent)
    finally:
        await c.stop_all()


async def test_retention_by_bytes_and_age_compacts_an_idle_log() -> None:
    # every payload is far above 100 bytes: by bytes only the newest few stay
    c = RetentionCluster(Retention(bytes=2_000, age=0.5), trailing_entries=0)
    await c.start_all()
    try:
        _, last = await _written(c, 100)
        # nothing is written any more: age alone empties the log down to its newest entry
        await _compacted(c, last - 1)
        for node_id in c.nodes:
            extent = await c.storages[node_id].extent()
            # (the newest entry may be the leader's configuration entry pinning the
            # members' databases, made right after the first commits)
            assert extent.entries == 1 and extent.first_index == extent.last_index >= last
    finally:
        await c.stop_all()
