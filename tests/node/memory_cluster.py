"""In-process clusters of real Nodes over the in-memory transport and storage twins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from raftmq.core.config import RaftConfig
from raftmq.node.node import Node
from raftmq.node.types import Applied
from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import Storage
from raftmq.transport.memory import MemoryNetwork


class Item(BaseModel):
    """The value type these tests replicate."""

    n: int


class MemoryCluster:
    """Nodes a, b, c... sharing one MemoryNetwork; storages survive node restarts."""

    def __init__(
        self,
        size: int = 3,
        *,
        seed: int = 1,
        tick: float = 0.01,
        voters: Sequence[str] | None = None,
        **config: Any,
    ) -> None:
        """``config``: more RaftConfig fields for every node (e.g. max_cached_entries);
        ``voters``: the seed configuration (default every node; the others start outside
        the cluster, waiting to be added)."""
        self.ids = [chr(ord("a") + i) for i in range(size)]
        self.voters = tuple(voters) if voters is not None else tuple(self.ids)
        self.config = config
        self.network = MemoryNetwork(seed=seed)
        self.tick = tick
        self.seed = seed
        self.storages: dict[str, Storage] = {
            i: MemoryStorage(cluster="mem", node_id=i) for i in self.ids
        }
        self.applied: dict[str, list[tuple[int, int]]] = {i: [] for i in self.ids}
        self.nodes: dict[str, Node[Item]] = {}

    def wrap_storage(self, node_id: str, wrap: Callable[[Storage], Storage]) -> None:
        """Replace a node's storage by ``wrap(storage)`` (before it starts)."""
        self.storages[node_id] = wrap(self.storages[node_id])

    async def start(self, node_id: str) -> Node[Item]:
        def on_commit(applied: Applied[Item]) -> None:
            self.applied[node_id].append((applied.index, applied.value.n))

        node = self.build(node_id, on_commit)
        await node.start()
        self.nodes[node_id] = node
        return node

    async def start_all(self) -> None:
        for node_id in self.ids:
            await self.start(node_id)

    def build(
        self, node_id: str, on_commit: Callable[[Applied[Item]], None], **options: Any
    ) -> Node[Item]:
        """Node ``node_id`` of this cluster (not started); ``options`` go to Node."""
        return Node(
            config=RaftConfig(node_id=node_id, voters=self.voters, **self.config),
            storage=self.storages[node_id],
            transport=self.network.transport(node_id, "mem"),
            model=Item,
            on_commit=on_commit,
            tick_interval=self.tick,
            seed=self.seed * 100 + self.ids.index(node_id),
            identity=self.network.identity("mem", self.voters),
            **options,
        )

    async def stop(self, node_id: str) -> None:
        await self.nodes.pop(node_id).stop()

    async def stop_all(self) -> None:
        for node_id in list(self.nodes):
            await self.stop(node_id)

    async def leader(
        self, timeout: float = 5.0, exclude: frozenset[str] = frozenset()
    ) -> Node[Item]:
        """Wait for a leader (highest term) among running nodes not in ``exclude``."""
        async with asyncio.timeout(timeout):
            while True:
                leaders = [n for i, n in self.nodes.items() if n.is_leader and i not in exclude]
                if leaders:
                    return max(leaders, key=lambda n: n.status().term)
                await asyncio.sleep(self.tick)

    async def wait_applied(self, index: int, timeout: float = 10.0) -> None:
        """Wait until every running node applied ``index``."""
        async with asyncio.timeout(timeout):
            while not all(n.applied_index >= index for n in self.nodes.values()):  # noqa: ASYNC110 - polls node state owned by other tasks
                await asyncio.sleep(self.tick)
