"""Fixtures for node tests with real processes, a real broker and real databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from raftmq.localcluster import LocalCluster

TICK = 0.05  # seconds per tick in these tests (the default): election timeout 0.5-1.0 s
ELECTION_TIMEOUT_MAX = 2 * 10 * TICK


ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
async def local_cluster(amqp_url: str, tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """Factory of LocalClusters (unique names); all stopped and their queues deleted after."""
    made: list[LocalCluster] = []

    def make(node_ids: list[str] | None = None, **kwargs: object) -> LocalCluster:
        name = f"t{uuid.uuid4().hex[:10]}"
        cluster = LocalCluster(
            name,
            node_ids or ["n1", "n2", "n3"],
            tmp_path / name,
            amqp_url=amqp_url,
            tick_interval=TICK,
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()
        await cluster.delete_queues()
