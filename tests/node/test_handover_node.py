"""A stopping leader hands leadership over (docs/core.md, "Graceful handover"), over the
in-memory transport and storage twins."""

from __future__ import annotations

import time

import pytest

from raftmq.errors import ConfigError
from tests.node.memory_cluster import Item, MemoryCluster


def _counters(cluster: MemoryCluster, name: str) -> dict[str, int]:
    return {i: n.status().counters[name] for i, n in cluster.nodes.items()}


async def test_stopping_leader_hands_over_to_the_most_caught_up_follower() -> None:
    """Thesis §3.10: the follower with the highest match index takes over through
    TimeoutNow, before the leader stops; nobody's election timeout fires."""
    cluster = MemoryCluster(size=5, seed=3, tick=0.05)  # the default: 0.5-1 s timeouts
    await cluster.start_all()
    try:
        leader = await cluster.leader()
        followers = sorted(i for i in cluster.ids if i != leader.node_id)
        lagging, expected = followers[0], followers[1]  # the lowest id lags: not a tie
        cluster.network.disconnect(lagging)
        last = None
        for k in range(20):
            last = await leader.write(Item(n=k))
        assert last is not None
        timeouts = _counters(cluster, "elections_timeout")
        started = time.monotonic()
        await cluster.stop(leader.node_id)
        took = time.monotonic() - started
        new = cluster.nodes[expected]
        assert new.is_leader, {i: n.leader_id for i, n in cluster.nodes.items()}
        assert took < leader.handover_timeout
        assert new.status().counters["elections_transfer"] == 1
        after = _counters(cluster, "elections_timeout")
        for node_id in cluster.nodes:
            if node_id != lagging:  # the cut-off node times out again and again meanwhile
                assert after[node_id] == timeouts[node_id], node_id
        cluster.network.connect(lagging)
        commit = await new.write(Item(n=99))
        assert commit.index > last.index
        await cluster.wait_applied(commit.index)
    finally:
        await cluster.stop_all()


async def test_stop_returns_within_the_timeout_when_no_voter_can_take_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The other voters are cut off (and check-quorum is off, so the leader keeps leading):
    every voter's turn passes without a new leader, and stop gives up (logged) within
    ``handover_timeout``."""
    cluster = MemoryCluster(check_quorum=False)
    await cluster.start_all()
    try:
        leader = await cluster.leader()
        assert leader.handover_timeout == pytest.approx(3 * 2 * 10 * cluster.tick)
        for other in cluster.ids:
            if other != leader.node_id:
                cluster.network.disconnect(other)
        started = time.monotonic()
        await cluster.stop(leader.node_id)
        took = time.monotonic() - started
        assert took < leader.handover_timeout + 0.2
        assert "nobody took over" in caplog.text
    finally:
        await cluster.stop_all()


async def test_handover_timeout_zero_stops_at_once() -> None:
    """``handover_timeout=0`` disables the handover: the others elect by timeout."""
    cluster = MemoryCluster()
    for node_id in cluster.ids:
        node = cluster.build(node_id, lambda _a: None, handover_timeout=0)
        await node.start()
        cluster.nodes[node_id] = node
    try:
        leader = await cluster.leader()
        await cluster.stop(leader.node_id)
        new = await cluster.leader(exclude=frozenset({leader.node_id}))
        assert new.status().counters["elections_transfer"] == 0
        assert new.status().counters["elections_timeout"] >= 1
    finally:
        await cluster.stop_all()


def test_negative_handover_timeout_is_refused() -> None:
    cluster = MemoryCluster()
    with pytest.raises(ConfigError, match="handover_timeout"):
        cluster.build("a", lambda _a: None, handover_timeout=-1)
