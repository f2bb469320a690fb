"""Leader election scenarios (§5.2), in the spirit of the Raft lab's 2A tests."""

from __future__ import annotations

import random

import pytest

from raftmq.core.types import Role
from raftmq.testing import Simulation
from tests.sim.harness import check_no_leader, check_one_leader

NODES3 = ["n1", "n2", "n3"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_initial_election(seed: int) -> None:
    """§5.2: a leader emerges, every node agrees on its term, and with no failures the
    term stays put (heartbeats keep followers from campaigning)."""
    sim = Simulation(NODES3, seed=seed)
    leader = check_one_leader(sim)
    sim.run(20)  # let followers learn of the leader through heartbeats
    terms = {sim.term(n) for n in NODES3}
    assert len(terms) == 1, f"nodes disagree on the term: {terms}"
    term = terms.pop()
    assert term >= 1
    sim.run(200)  # 10+ election timeouts with a healthy leader
    assert sim.leader() == leader
    assert {sim.term(n) for n in NODES3} == {term}, "term changed without any failure"
    assert all(sim.core(n).leader_id == leader for n in NODES3)


def test_reelection_after_leader_loss() -> None:
    """§5.2: when the leader disappears a new one is elected; the old leader rejoining
    does not disturb the new one; without a quorum nobody leads."""
    sim = Simulation(NODES3, seed=11)
    leader1 = check_one_leader(sim)

    sim.disconnect(leader1)
    others = [n for n in NODES3 if n != leader1]
    leader2 = check_one_leader(sim, others)
    assert leader2 != leader1

    sim.connect(leader1)  # old leader returns: it must follow, not depose
    leader3 = check_one_leader(sim)
    assert leader3 == leader2
    assert sim.role(leader1) is Role.FOLLOWER

    # no quorum: no leader among the one connected node
    follower = next(n for n in NODES3 if n != leader2)
    sim.disconnect(leader2)
    sim.disconnect(follower)
    lone = next(n for n in NODES3 if n not in (leader2, follower))
    sim.run(100)
    check_no_leader(sim, [lone])
    assert sim.leader() is None

    sim.connect(follower)  # a quorum again
    check_one_leader(sim, [lone, follower])

    sim.connect(leader2)
    check_one_leader(sim)


def test_no_leader_without_quorum_and_leader_steps_down() -> None:
    """Check-quorum: a leader cut off from the majority steps down within an election
    timeout or two, and the minority side never elects anyone."""
    sim = Simulation(["n1", "n2", "n3", "n4", "n5"], seed=5)
    leader = check_one_leader(sim)
    minority = [leader, next(n for n in sim.node_ids if n != leader)]
    majority = [n for n in sim.node_ids if n not in minority]
    sim.partition(minority, majority)
    new_leader = check_one_leader(sim, majority)
    assert new_leader in majority
    sim.run(60)  # several election timeouts for the minority
    check_no_leader(sim, minority)
    sim.heal()
    assert check_one_leader(sim) == new_leader


def test_many_elections_seven_nodes() -> None:
    """§5.2: in 7 nodes with 3 random ones cut off, the 4 others always elect one leader;
    repeated 10 times with different cuts."""
    sim = Simulation([f"n{i}" for i in range(1, 8)], seed=77)
    pick = random.Random(77)
    check_one_leader(sim)
    for _ in range(10):
        cut = pick.sample(list(sim.node_ids), 3)
        for node_id in cut:
            sim.disconnect(node_id)
        rest = [n for n in sim.node_ids if n not in cut]
        check_one_leader(sim, rest)
        for node_id in cut:
            sim.connect(node_id)
    check_one_leader(sim)


@pytest.mark.parametrize("pre_vote", [True, False])
def test_election_message_count_is_bounded(pre_vote: bool) -> None:
    """An election in a healthy 3-node cluster costs a handful of messages: one vote
    round (plus a pre-vote round), the leader's first AppendEntries and the replies."""
    sim = Simulation(NODES3, seed=3, pre_vote=pre_vote)
    check_one_leader(sim)
    sim.settle()
    total = sim.network.total_sent()
    votes = sim.network.sent["request_vote"]
    # one round: 2 requests (+2 pre-vote requests); allow one split vote
    assert votes <= (8 if pre_vote else 4), sim.network.sent
    assert total <= 30, sim.network.sent


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fault", ["disconnect", "crash"])
def test_pre_vote_without_check_quorum_elects_after_leader_loss(seed: int, fault: str) -> None:
    """Thesis §9.6 with check-quorum off: there is no leader lease (as in etcd-io/raft, the
    lease comes with check-quorum), so pre-votes are judged on the log alone and the two
    healthy nodes elect a leader once the old one is gone, over a slow, lossy network."""
    sim = Simulation(NODES3, seed=seed, pre_vote=True, check_quorum=False)
    sim.network.delay_ticks = (0, 6)
    sim.network.drop_rate = 0.1
    leader = check_one_leader(sim)
    sim.crash(leader) if fault == "crash" else sim.disconnect(leader)
    others = [n for n in NODES3 if n != leader]
    new_leader = check_one_leader(sim, others)
    assert new_leader != leader
    assert sim.term(new_leader) > sim.term(leader) or fault == "crash"
