"""Crash/restart scenarios (§5.1 Fig. 2 "persistent state"), after the lab's 2C tests."""

from __future__ import annotations

import random
from typing import Any

import pytest

from raftmq.testing import Simulation
from tests.sim.harness import check_one_leader, connected_live, one, same_applied

NODES3 = ["n1", "n2", "n3"]
NODES5 = ["n1", "n2", "n3", "n4", "n5"]


@pytest.mark.parametrize("restart_tail", [None, 2])
def test_persistence_across_crash_of_all_nodes(restart_tail: int | None) -> None:
    """§5.1: term, vote and log survive crashes; after every node restarts (from its
    persisted record alone) the cluster keeps every committed entry and goes on.
    With ``restart_tail=2`` a restarted core holds only two log entries in memory and
    must read the rest back from storage."""
    sim = Simulation(NODES3, seed=21, restart_tail=restart_tail, max_cached_entries=4)
    for i in range(8):
        one(sim, f"a{i}".encode(), 3)
    terms_before = {n: sim.term(n) for n in NODES3}
    for node_id in NODES3:
        sim.crash(node_id)
    assert sim.leader() is None
    for node_id in NODES3:
        assert sim.term(node_id) == terms_before[node_id], "term not persisted"
        sim.restart(node_id)
    one(sim, b"b0", 3)

    leader = check_one_leader(sim)
    sim.crash(leader)
    sim.restart(leader)
    one(sim, b"b1", 3)

    leader = check_one_leader(sim)
    sim.crash(leader)
    one(sim, b"b2", 2)
    sim.restart(leader)
    one(sim, b"b3", 3)

    # crash a follower, commit without it, restart it: it catches up from its own log
    leader = check_one_leader(sim)
    follower = next(n for n in NODES3 if n != leader)
    sim.crash(follower)
    for i in range(6):
        one(sim, f"c{i}".encode(), 2)
    sim.restart(follower)
    one(sim, b"d", 3)
    want = [f"a{i}".encode() for i in range(8)] + [b"b0", b"b1", b"b2", b"b3"]
    want += [f"c{i}".encode() for i in range(6)] + [b"d"]
    for node_id in NODES3:
        assert [d for _, d in sim.applied(node_id)] == want


def test_restart_does_not_reapply() -> None:
    """An index is applied once per node across restarts: the applied index is durable
    and a restarted core resumes after it."""
    sim = Simulation(NODES3, seed=22)
    for i in range(5):
        one(sim, f"x{i}".encode(), 3)
    applied_before = {n: sim.applied(n) for n in NODES3}
    for node_id in NODES3:
        sim.crash(node_id)
        sim.restart(node_id)
    sim.run(60)
    for node_id in NODES3:
        assert sim.applied(node_id) == applied_before[node_id]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("unreliable", [False, True])
def test_figure8_with_crashes(unreliable: bool, seed: int) -> None:
    """§5.4.2 Figure 8: leaders crash right after proposing, again and again, while the
    network (optionally) drops, delays, duplicates and reorders; an entry from an older
    term is never committed by counting replicas, so no committed entry is ever lost
    (the checkers run after every tick). At the end everyone agrees."""
    # one entry per AppendEntries, so an old-term entry can reach a majority before the
    # new leader's NOOP does: the case §5.4.2 forbids committing by counting replicas
    run_figure8(seed, unreliable=unreliable, iterations=1000, max_batch_entries=1)


def run_figure8(seed: int, *, unreliable: bool, iterations: int, **overrides: Any) -> Simulation:
    """The lab's Figure 8 loop: propose everywhere, wait a little, crash the leader,
    keep at least 3 of 5 nodes up; finally restart everyone and agree once more."""
    sim = Simulation(NODES5, seed=seed, **overrides)
    pick = random.Random(sim.seed)
    one(sim, b"init", 1)
    # messages travel up to 2 ticks, so leaders crash with AppendEntries in flight and
    # old-term entries end up on some followers only (the Figure 8 set-up)
    sim.network.delay_ticks = (0, 2)
    if unreliable:
        sim.network.drop_rate = 0.1
        sim.network.delay_ticks = (0, 3)
        sim.network.duplicate_rate = 0.05
        sim.network.reorder = 0.1
    up = len(NODES5)
    for it in range(iterations):
        leader = None
        for node_id in sim.alive():
            if sim.propose(node_id, f"v{it}".encode()) is not None:
                leader = node_id
        if pick.random() < 0.1:
            sim.run(pick.randint(0, 25))
        else:
            sim.run(pick.randint(0, 2))
        if leader is not None and sim.is_alive(leader):
            sim.crash(leader)
            up -= 1
        if up < 3:
            node_id = pick.choice(NODES5)
            if not sim.is_alive(node_id):
                sim.restart(node_id)
                up += 1
    sim.network.reliable()
    for node_id in NODES5:
        if not sim.is_alive(node_id):
            sim.restart(node_id)
    one(sim, b"final", 5)
    assert sim.run_until(lambda: same_applied(sim, NODES5), 200)
    return sim


def test_unreliable_network_churn() -> None:
    """Everything at once: drops, delays, duplicates, reorders, disconnects, crashes and
    restarts while proposals keep coming; when the storm ends the cluster converges and
    every value that one() saw committed is applied everywhere, once."""
    sim = Simulation(NODES5, seed=99)
    pick = random.Random(99)
    committed = [one(sim, b"seed-value", 5)]
    sim.network.drop_rate = 0.2
    sim.network.delay_ticks = (0, 4)
    sim.network.duplicate_rate = 0.1
    sim.network.reorder = 0.2
    proposed = 0
    for _ in range(300):
        roll = pick.random()
        node_id = pick.choice(NODES5)
        if roll < 0.05:
            sim.crash(node_id)
        elif roll < 0.15:
            if not sim.is_alive(node_id):
                sim.restart(node_id)
        elif roll < 0.20:
            sim.disconnect(node_id)
        elif roll < 0.30:
            sim.connect(node_id)
        for candidate in connected_live(sim):
            if sim.propose(candidate, f"p{proposed}".encode()) is not None:
                proposed += 1
                break
        sim.run(pick.randint(1, 3))
    assert proposed > 20, "the storm left too few chances to propose"
    sim.network.reliable()
    sim.heal()
    for node_id in NODES5:
        if not sim.is_alive(node_id):
            sim.restart(node_id)
    committed.append(one(sim, b"after-storm", 5))
    assert sim.run_until(lambda: same_applied(sim, NODES5), 300)
    applied = sim.applied("n1")
    values = [d for _, d in applied]
    assert len(values) == len(set(values)), "a value was applied twice"
    assert values[0] == b"seed-value" and values[-1] == b"after-storm"
    assert sum(1 for v in values if v.startswith(b"p")) > 0, "nothing committed during churn"
