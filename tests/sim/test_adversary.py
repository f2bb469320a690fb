"""A forging member (tests/sim/adversary.py) against whole simulated clusters.

Thesis §3.10 and §9.6: TimeoutNow and transfer votes count only when the leader of
the term asked for them; §5.3: replies naming indexes nobody sent are dropped; §5.1:
terms stay incrementable. The simulation's checkers watch every step (election
safety, log matching, leader completeness, state machine safety, monotonic commit);
the liveness checker requires a leader within a bound once the forging stops.
"""

from __future__ import annotations

import random

import pytest

from raftmq.testing import Simulation
from raftmq.testing.checkers import LivenessChecker, LivenessViolation
from tests.sim.adversary import Adversary
from tests.sim.harness import ELECTION_BUDGET, check_one_leader, one, same_applied

NODES5 = ["n1", "n2", "n3", "n4", "n5"]


def test_forged_transfers_and_replies_change_no_leader() -> None:
    """Thesis §9.6 with check-quorum: while a forging member sends three messages a tick
    for 300 ticks, the leader stays, no term moves, and proposals keep committing."""
    sim = Simulation(NODES5, seed=21)
    leader = check_one_leader(sim)
    sim.run(5)
    term = sim.term(leader)
    adversary = Adversary(sim, random.Random(21))
    committed = 0
    for tick in range(300):
        adversary.strike(3)
        if tick % 10 == 0:
            one(sim, f"during {tick}".encode(), len(NODES5))
            committed += 1
        sim.step()
    assert sim.leader() == leader
    assert {sim.term(n) for n in NODES5} == {term}
    assert committed == 30
    assert sum(adversary.sent.values()) > 500
    assert adversary.rejected["overflow"] > 0  # 2^63 - 1 never got past decode


@pytest.mark.parametrize("seed", range(12))
def test_forging_under_faults_keeps_safety_and_liveness(seed: int) -> None:
    """§5.2/§5.4 safety under a forging member plus drops, delays and partitions, any
    mix of pre-vote and check-quorum; once it stops and the network heals, a leader is
    elected within the bound and every node agrees on a new entry."""
    rng = random.Random(seed)
    sim = Simulation(
        NODES5,
        seed=seed,
        pre_vote=rng.random() < 0.7,
        check_quorum=rng.random() < 0.7,
        election_ticks=rng.choice([5, 10]),
    )
    adversary = Adversary(sim, rng)
    liveness = LivenessChecker(ELECTION_BUDGET)
    for phase in range(10):
        sim.network.drop_rate = rng.choice([0.0, 0.1, 0.3])
        sim.network.delay_ticks = (0, rng.randint(0, 3))
        if rng.random() < 0.4:
            cut = rng.sample(NODES5, 2)
            sim.partition(cut, [n for n in NODES5 if n not in cut])
        else:
            sim.heal()
        for _ in range(rng.randint(10, 40)):
            adversary.strike(rng.randint(0, 3))
            leader = sim.leader()
            if leader is not None and rng.random() < 0.3:
                sim.propose(leader, f"{seed}:{phase}:{sim.now}".encode())
            sim.step()
    sim.heal()
    sim.network.reliable()
    liveness.arm(sim.now)
    try:
        while liveness.elected_after is None:
            sim.step()
            liveness.observe(sim.now, sim.leader())
    except LivenessViolation as exc:
        raise AssertionError(f"seed {seed}: {exc}") from exc
    one(sim, b"after the attack", len(NODES5))
    assert sim.run_until(lambda: same_applied(sim, NODES5), 100)
    assert sum(adversary.sent.values()) > 0
