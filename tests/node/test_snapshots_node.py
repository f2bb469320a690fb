"""Snapshots in the node (issue 12, items 2-3): a node snapshots its replicated state
(sessions, fan-out watermark, applied index) and the user's hooks every
``snapshot_entries`` applied entries and compacts its log; a follower behind the compacted
log catches up through InstallSnapshot; a restart from snapshot plus log is exact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from raftmq.core.config import RaftConfig
from raftmq.core.messages import InstallSnapshot
from raftmq.errors import ConfigError
from raftmq.node.node import Node
from raftmq.node.settings import NodeSettings
from raftmq.node.types import Applied
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import Record
from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import Storage
from raftmq.storage.sql import SqlStorage
from raftmq.transport.memory import MemoryNetwork
from tests.node.memory_cluster import Item, MemoryCluster


class UserState:
    """An embedded user's state machine: index -> n, with hashicorp-style hooks."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}
        self.restored = 0  # restore() calls

    def on_commit(self, applied: Applied[Item]) -> None:
        assert applied.index not in self.values, "a write applied twice"
        self.values[applied.index] = applied.value.n

    def snapshot(self) -> bytes:
        return json.dumps(sorted(self.values.items())).encode()

    def restore(self, data: bytes) -> None:
        self.restored += 1
        self.values = {index: n for index, n in json.loads(data)}


class SnapshotCluster(MemoryCluster):
    """A MemoryCluster whose nodes snapshot every ``snapshot_entries`` (with hooks when
    ``hooks``); a restarted node gets a fresh UserState (its memory is gone)."""

    def __init__(
        self,
        *,
        snapshot_entries: int,
        hooks: bool = True,
        floor: int | None = None,
        **config: Any,
    ) -> None:
        super().__init__(**config)
        self.snapshot_entries = snapshot_entries
        self.floor = floor  # every node's compaction floor (None: none)
        self.hooks = hooks
        self.users: dict[str, UserState] = {}

    async def start(self, node_id: str) -> Node[Item]:
        user = self.users[node_id] = UserState()
        record = self.applied[node_id]

        def on_commit(applied: Applied[Item]) -> None:
            record.append((applied.index, applied.value.n))
            user.on_commit(applied)

        node = self.build(
            node_id,
            on_commit,
            snapshot=user.snapshot if self.hooks else None,
            restore=user.restore if self.hooks else None,
            snapshot_entries=self.snapshot_entries,
        )
        if self.floor is not None:
            floor = self.floor
            node.compaction_floor = lambda: floor
        await node.start()
        self.nodes[node_id] = node
        return node

    async def stop_all_as_is(self) -> None:
        """Stop every node without a leader's handover, which would add the new leader's
        no-op entry: for tests that compare the state at stop with the state restarted."""
        for node in self.nodes.values():
            node.handover_timeout = 0
        await self.stop_all()


def _record(n: int, seq: int, producer: str = "p") -> Record:
    return Record(
        body=Item(n=n).model_dump_json().encode(),
        content_type="application/json",
        producer_id=producer,
        seq=seq,
    )


async def _write_many(leader: Node[Item], first: int, count: int) -> list[Commit]:
    commits: list[Commit] = []
    for start in range(first, first + count, 50):  # batches of 50 in flight
        batch = range(start, min(start + 50, first + count))
        commits += await asyncio.gather(*(leader.write_record(_record(k, k)) for k in batch))
    return commits


async def _bookkeeping_saved(c: MemoryCluster, timeout: float = 10.0) -> None:
    """Wait until every node's storage holds its applied index and fan-out watermark
    (deferred bookkeeping is saved at the loop's next idle turn)."""
    async with asyncio.timeout(timeout):
        for node_id, node in c.nodes.items():
            storage = c.storages[node_id]
            while (await storage.applied(), await storage.fanout_watermark()) != (  # noqa: ASYNC110
                node._applier.applied,
                node._applier.fanout_watermark,
            ):
                await asyncio.sleep(c.tick)


def _state(node: Node[Item]) -> tuple[Any, ...]:
    applier = node._applier
    return (applier.applied, applier.fanout_watermark, applier.sessions.rows(applier.applied))


async def test_a_stopped_follower_catches_up_through_install_snapshot() -> None:
    c = SnapshotCluster(snapshot_entries=50, trailing_entries=10)
    await c.start_all()
    try:
        leader = await c.leader()
        await leader.write_record(_record(0, 1, producer="early"))
        await c.wait_applied(leader.applied_index)
        lagging = next(i for i in c.ids if i != leader.node_id)
        c.network.disconnect(lagging)  # what the leader sends it meanwhile is lost
        await c.stop(lagging)
        commits = await _write_many(leader, 1, 400)
        await c.wait_applied(max(x.index for x in commits))
        assert await leader._storage.first_index() > 1  # the leader compacted its log
        assert leader._counters["snapshots_taken"] >= 1

        c.network.connect(lagging)
        follower = await c.start(lagging)
        await c.wait_applied(leader.applied_index)
        loop = follower._loop
        assert loop is not None
        assert loop.stats.received.get(InstallSnapshot, 0) >= 1, follower.status()
        installed = follower._counters["snapshots_installed"]
        assert installed >= 1
        assert await c.storages[lagging].first_index() > 1
        assert c.users[lagging].restored == installed
        # the same replicated state and the same user state, through the hooks
        assert _state(follower)[2] == _state(leader)[2]
        assert c.users[lagging].values == c.users[leader.node_id].values

        # it applies identically afterwards
        more = await _write_many(leader, 401, 60)
        last = max(x.index for x in more)
        await c.wait_applied(last)
        assert c.users[lagging].values == c.users[leader.node_id].values
        tail = [(i, n) for i, n in c.applied[leader.node_id] if i >= more[0].index]
        assert [(i, n) for i, n in c.applied[lagging] if i >= more[0].index] == tail

        # sessions came with the snapshot: the installed node, leading, knows duplicates
        await leader.transfer_leadership(lagging)
        new_leader = await c.leader(exclude=frozenset({leader.node_id}))
        assert new_leader.node_id == lagging
        again = await new_leader.write_record(_record(7, 7))
        assert again.duplicate  # its index is not known here (receipts name last_seq's)
        last_seq = await new_leader.write_record(_record(460, 460))
        assert last_seq.duplicate and last_seq.index == more[-1].index
        early = await new_leader.write_record(_record(0, 1, producer="early"))
        assert early.duplicate
    finally:
        await c.stop_all()


async def test_without_hooks_an_install_skips_the_callbacks_it_covers() -> None:
    c = SnapshotCluster(snapshot_entries=40, hooks=False, trailing_entries=5)
    await c.start_all()
    try:
        leader = await c.leader()
        lagging = next(i for i in c.ids if i != leader.node_id)
        c.network.disconnect(lagging)  # what the leader sends it meanwhile is lost
        await c.stop(lagging)
        commits = await _write_many(leader, 1, 200)
        await c.wait_applied(max(x.index for x in commits))
        c.network.connect(lagging)
        follower = await c.start(lagging)
        more = await _write_many(leader, 201, 10)
        await c.wait_applied(max(x.index for x in more))
        assert follower._counters["snapshots_installed"] >= 1
        seen = {i for i, _ in c.applied[lagging]}
        assert follower._loop is not None and follower._loop.core.snapshot is not None
        covered = follower._loop.core.snapshot.index
        assert not seen & {x.index for x in commits if x.index <= covered}
        # ... and says so: every index the install covered past what it had applied
        skipped = follower.status().counters["callbacks_skipped"]
        assert skipped >= len([x for x in commits if x.index <= covered]) > 0
        assert covered - 1 <= skipped <= covered  # it had applied the NOOP of index 1, or not
        assert {x.index for x in more} <= seen
        assert _state(follower)[2] == _state(leader)[2]
    finally:
        await c.stop_all()


async def test_restart_from_snapshot_plus_log_is_exact() -> None:
    c = SnapshotCluster(snapshot_entries=40, trailing_entries=5)
    await c.start_all()
    try:
        leader = await c.leader()
        commits = await _write_many(leader, 1, 130)
        await leader.write_record(_record(3, 3))  # a duplicate in the log
        await leader._propose_watermark(commits[100].index)  # a replicated watermark
        await _write_many(leader, 131, 7)
        await c.wait_applied(leader.applied_index)
        await _bookkeeping_saved(c)  # the deferred bookkeeping is flushed at a tick
        before = {i: (_state(n), dict(c.users[i].values)) for i, n in c.nodes.items()}
        assert all(s[0][1] == commits[100].index for s in before.values())
        await c.stop_all_as_is()
        for node_id in c.ids:
            storage = c.storages[node_id]
            await storage.open()
            assert (await storage.snapshot()) is not None
            assert await storage.first_index() > 1
            await storage.close()
            node = await c.start(node_id)  # the loop has not turned yet: the state restored
            assert (_state(node), c.users[node_id].values) == before[node_id]
            assert c.users[node_id].restored == 1
    finally:
        await c.stop_all()


def test_snapshot_settings_are_validated() -> None:
    network = MemoryNetwork(seed=1)
    storage: Storage = MemoryStorage(cluster="mem", node_id="a")
    kwargs: dict[str, Any] = {
        "config": RaftConfig(node_id="a", voters=("a",)),
        "storage": storage,
        "transport": network.transport("a", "mem"),
        "model": Item,
    }
    with pytest.raises(ConfigError, match="snapshot_entries"):
        Node(**kwargs, snapshot_entries=-1)
    with pytest.raises(ConfigError, match="both"):
        Node(**kwargs, snapshot=lambda: b"")
    with pytest.raises(ValidationError, match="max_message_bytes"):
        NodeSettings(node_id="a", max_message_bytes=1 << 20)
    NodeSettings(node_id="a", max_message_bytes=1 << 20, snapshot_chunk_bytes=512 * 1024)


async def test_sqlite_nodes_install_and_restart_exactly(tmp_path: Path) -> None:
    """The same on SQLite: the lagging node installs through its SQL adapter, and every
    node restarts exactly from its snapshot plus log."""
    c = SnapshotCluster(snapshot_entries=40, trailing_entries=5)
    for node_id in c.ids:
        url = f"sqlite+aiosqlite:///{tmp_path / f'{node_id}.db'}"
        c.storages[node_id] = SqlStorage(url, cluster="mem", node_id=node_id, durability="normal")
    await c.start_all()
    try:
        leader = await c.leader()
        lagging = next(i for i in c.ids if i != leader.node_id)
        c.network.disconnect(lagging)
        await c.stop(lagging)
        commits = await _write_many(leader, 1, 150)
        await c.wait_applied(max(x.index for x in commits))
        c.network.connect(lagging)
        follower = await c.start(lagging)
        await c.wait_applied(leader.applied_index)
        assert follower._counters["snapshots_installed"] >= 1
        assert c.users[lagging].values == c.users[leader.node_id].values
        await _bookkeeping_saved(c)  # the deferred bookkeeping is flushed at a tick
        before = {i: (_state(n), dict(c.users[i].values)) for i, n in c.nodes.items()}
        await c.stop_all_as_is()
        for node_id in c.ids:
            node = await c.start(node_id)
            assert (_state(node), c.users[node_id].values) == before[node_id]
    finally:
        await c.stop_all()


async def test_storage_is_never_compacted_past_the_compaction_floor() -> None:
    """Where the queue services run, the floor is the fan-out watermark (runtime.py):
    fan-out reads what it publishes from storage, so a compaction must not pass it even
    when the core keeps fewer entries."""
    c = SnapshotCluster(snapshot_entries=40, trailing_entries=5, floor=30)
    await c.start_all()
    try:
        leader = await c.leader()
        await _write_many(leader, 1, 150)
        await c.wait_applied(leader.applied_index)
        for node_id, node in c.nodes.items():
            assert node._loop is not None and node._loop.core.first_index > 31  # core trimmed
            assert await c.storages[node_id].first_index() == 31  # storage kept 31..
            assert len(await c.storages[node_id].entries(31, 40)) == 10
    finally:
        await c.stop_all()
