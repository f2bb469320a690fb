"""Membership changes through the node (``Node.change_membership``): the change goes
through the node loop to the core, commits like a write, and the configuration it makes
is what ``status`` shows; a new node catches up as a learner, is promoted, and a voter
(the leader too) is removed while writes go on. In-memory network and storage; the
rules themselves are tested in tests/sim/test_membership.py."""

from __future__ import annotations

import asyncio

import pytest

from raftmq.core.membership import ChangeKind, ConfChange
from raftmq.core.types import Membership, Role
from raftmq.errors import ConfigError, MalformedMessage, NotLeader
from raftmq.node.requests import parse_change
from tests.node.memory_cluster import Item, MemoryCluster


async def _all_applied(c: MemoryCluster, nodes: list[str], index: int) -> None:
    async with asyncio.timeout(10):
        while not all(c.nodes[n].applied_index >= index for n in nodes):  # noqa: ASYNC110 - polls node state owned by other tasks
            await asyncio.sleep(c.tick)


async def _change(c: MemoryCluster, kind: ChangeKind, node_id: str) -> Membership:
    """Ask the leader for a change, again while its term's first entry is not committed."""
    async with asyncio.timeout(10):
        while True:
            leader = await c.leader()
            try:
                return await leader.change_membership(ConfChange(kind, node_id), timeout=5)
            except (NotLeader, ConfigError) as exc:
                if isinstance(exc, ConfigError) and "not committed yet" not in str(exc):
                    raise
                await asyncio.sleep(c.tick)


async def test_a_node_joins_as_learner_is_promoted_and_a_voter_leaves() -> None:
    c = MemoryCluster(size=4, seed=3, voters=("a", "b", "c"))
    await c.start_all()  # d runs outside the cluster
    try:
        leader = await c.leader()
        for k in range(5):
            await leader.write(Item(n=k))
        assert c.nodes["d"].applied_index == 0  # nobody sends to a non-member
        m = await _change(c, ChangeKind.ADD_LEARNER, "d")
        assert (m.voters, m.learners) == (("a", "b", "c"), ("d",))
        last = await leader.write(Item(n=5))
        await _all_applied(c, ["a", "b", "c", "d"], last.index)
        assert c.applied["d"] == c.applied[leader.node_id]  # the whole log, in order
        status = c.nodes["d"].status()
        assert (status.voters, status.learners) == (["a", "b", "c"], ["d"])
        assert c.nodes["d"].status().role is Role.FOLLOWER

        m = await _change(c, ChangeKind.ADD_VOTER, "d")
        assert m.voters == ("a", "b", "c", "d") and not m.learners
        follower = next(n for n in ("a", "b", "c") if n != leader.node_id)
        m = await _change(c, ChangeKind.REMOVE, follower)
        assert follower not in m.voters
        # The removed node learns it when the change commits there (`raftmq node` exits).
        assert await asyncio.wait_for(c.nodes[follower].wait_removed(), 10) > 0
        assert c.nodes["d"]._running.removed_at is None  # added, never removed
        last = await leader.write(Item(n=6))
        remaining = [n for n in c.ids if n != follower]
        await _all_applied(c, remaining, last.index)
        assert all(c.nodes[n].status().voters == list(m.voters) for n in remaining)
        # A restart rebuilds the configuration from the log (storage hands back its
        # configuration entries), not from the seed the node was started with.
        await c.stop("d")
        restarted = await c.start("d")
        assert (restarted.membership.voters, restarted.membership.learners) == (m.voters, ())
    finally:
        await c.stop_all()


async def test_a_change_asked_while_another_is_pending_waits_for_it() -> None:
    """Two changes at once: the leader makes one at a time (its own pins are changes
    too); the node loop holds the second until the first committed, then makes it."""
    c = MemoryCluster(size=5, seed=6, voters=("a", "b", "c"))
    await c.start_all()
    try:
        leader = await c.leader()
        both = await asyncio.gather(
            leader.change_membership(ConfChange(ChangeKind.ADD_LEARNER, "d"), timeout=10),
            leader.change_membership(ConfChange(ChangeKind.ADD_LEARNER, "e"), timeout=10),
        )
        assert both[1].learners == ("d", "e")
        assert leader.membership.learners == ("d", "e")
    finally:
        await c.stop_all()


async def test_removing_the_leader_hands_the_cluster_to_the_others() -> None:
    c = MemoryCluster(size=3, seed=4)
    await c.start_all()
    try:
        leader = await c.leader()
        await leader.write(Item(n=1))
        m = await _change(c, ChangeKind.REMOVE, leader.node_id)
        assert leader.node_id not in m.voters
        assert await asyncio.wait_for(leader.wait_removed(), 10) > 0
        others = frozenset(n for n in c.ids if n != leader.node_id)
        new = await c.leader(exclude=frozenset({leader.node_id}))
        assert new.node_id in others
        last = await new.write(Item(n=2))
        await _all_applied(c, sorted(others), last.index)
        assert not leader.is_leader
        with pytest.raises(NotLeader):
            await leader.change_membership(ConfChange(ChangeKind.ADD_VOTER, leader.node_id))
    finally:
        await c.stop_all()


async def test_a_change_that_does_not_apply_is_refused_with_the_reason() -> None:
    c = MemoryCluster(size=3, seed=5)
    await c.start_all()
    try:
        leader = await c.leader()
        await leader.write(Item(n=1))
        with pytest.raises(ConfigError, match="already a voter"):
            await leader.change_membership(ConfChange(ChangeKind.ADD_VOTER, "b"))
        follower = next(n for n in c.nodes.values() if not n.is_leader)
        with pytest.raises(NotLeader):
            await follower.change_membership(ConfChange(ChangeKind.ADD_LEARNER, "z"))
    finally:
        await c.stop_all()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"change": "add_voter"}',
        b'{"change": "add_voter", "node_id": "n 4"}',
        b'{"change": "make_king", "node_id": "n4"}',
        b'{"change": "remove", "node_id": 4}',
        b'{"change": "remove", "node_id": "n4", "extra": 1}',
        b"[" * 100_000,
    ],
)
def test_a_bad_members_request_is_refused_as_malformed(body: bytes) -> None:
    """A members request is hostile input like any other: a clear MalformedMessage (the
    request server answers it as an error), never a crash."""
    with pytest.raises(MalformedMessage):
        parse_change(body)


def test_a_members_request_names_one_change() -> None:
    change = parse_change(b'{"change": "add_learner", "node_id": "n4"}')
    assert change == ConfChange(ChangeKind.ADD_LEARNER, "n4")
