"""Same seed, same run, bit for bit."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from raftmq.testing import Simulation
from tests.sim.harness import connected_live

REPO_ROOT = Path(__file__).resolve().parents[2]
NODES5 = ["n1", "n2", "n3", "n4", "n5"]


def _storm(seed: int) -> Simulation:
    sim = Simulation(NODES5, seed=seed)
    pick = random.Random(seed)  # drives the scenario; the simulation has its own rng
    sim.network.drop_rate = 0.1
    sim.network.delay_ticks = (0, 3)
    sim.network.duplicate_rate = 0.1
    sim.network.reorder = 0.1
    for step in range(200):
        node_id = pick.choice(NODES5)
        roll = pick.random()
        if roll < 0.04:
            sim.crash(node_id)
        elif roll < 0.12 and not sim.is_alive(node_id):
            sim.restart(node_id)
        elif roll < 0.16:
            sim.partition(pick.sample(NODES5, 2))
        elif roll < 0.25:
            sim.heal()
        for candidate in connected_live(sim):
            if sim.propose(candidate, f"s{step}".encode()) is not None:
                break
        sim.run(pick.randint(1, 4))
    sim.heal()
    sim.network.reliable()
    for node_id in NODES5:
        if not sim.is_alive(node_id):
            sim.restart(node_id)
    sim.run(100)
    return sim


def _fingerprint(sim: Simulation) -> tuple[object, ...]:
    return (
        sim.now,
        tuple(tuple(sim.applied(n)) for n in NODES5),
        tuple(tuple(sim.log(n)) for n in NODES5),
        tuple(sorted(sim.network.sent.items())),
        tuple(sorted(sim.network.dropped.items())),
        tuple(sorted(sim.network.delivered.items())),
        tuple((sim.term(n), sim.role(n), sim.commit_index(n)) for n in NODES5),
    )


def test_same_seed_same_run() -> None:
    """Two runs with one seed produce identical logs, applied entries and message counts."""
    first = _fingerprint(_storm(1234))
    second = _fingerprint(_storm(1234))
    assert first == second
    applied_n1 = _storm(1234).applied("n1")
    assert len(applied_n1) > 10, "the scenario committed too little to be a fair comparison"


def test_different_seeds_differ() -> None:
    """The seed matters: another seed takes the network down another path."""
    assert _fingerprint(_storm(1234))[3:6] != _fingerprint(_storm(4321))[3:6]


def _digest_in_subprocess(hash_seed: str) -> str:
    code = (
        "import hashlib\n"
        "from tests.sim.test_determinism import _fingerprint, _storm\n"
        "print(hashlib.sha256(repr(_fingerprint(_storm(77))).encode()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_same_seed_same_run_across_processes() -> None:
    """Bit for bit even across interpreters with different string-hash seeds (no set or
    dict-of-str iteration order leaks into the run)."""
    assert _digest_in_subprocess("1") == _digest_in_subprocess("2")
