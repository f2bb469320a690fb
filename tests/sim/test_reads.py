"""ReadIndex under the simulator's full fault schedule: the safety search asks reads on
random nodes and checks each read index against every write committed before the read
began (raftmq.testing.simulation, ``Simulation.read``). These tests show the check has
teeth: a core that skips either half of §6.4 -- the majority round, or waiting for its
term's first commit -- serves a stale read within a few hundred seeds."""

from __future__ import annotations

import pytest

from raftmq.core import reads
from raftmq.core.state import RaftState
from raftmq.core.types import ReadState
from raftmq.testing.checkers import SafetyViolation
from raftmq.testing.simulation import Simulation
from tests.sim.schedule import run_schedule

SEEDS = 400  # seeds a planted bug must be caught within


def _first_stale_read(seeds: range) -> int | None:
    for seed in seeds:
        try:
            run_schedule(seed)
        except SafetyViolation as exc:
            if "stale read" in str(exc):
                return seed
            raise
    return None


def test_a_leader_that_confirms_reads_without_a_round_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def release_without_round(s: RaftState) -> None:
        while s.read_pending:
            request_id, origin, index, _ = s.read_pending.popleft()
            if origin is None:
                s.read_states.append(ReadState(request_id, index))

    monkeypatch.setattr(reads, "release", release_without_round)
    assert _first_stale_read(range(SEEDS)) is not None


def test_a_leader_that_answers_before_its_terms_first_commit_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def promote_at_once(s: RaftState) -> bool:
        s.read_seq += 1
        for request_id, origin in s.read_waiting:
            s.read_pending.append((request_id, origin, s.commit, s.read_seq))
        s.read_waiting.clear()
        return bool(s.progress)

    monkeypatch.setattr(reads, "promote", promote_at_once)
    assert _first_stale_read(range(SEEDS)) is not None


def test_reads_on_a_healthy_cluster_are_answered_on_leader_and_followers() -> None:
    sim = Simulation(["a", "b", "c"], seed=3)
    assert sim.run_until(lambda: sim.leader() is not None, 200)
    leader = sim.leader()
    assert leader is not None
    for k in range(5):
        sim.propose(leader, b"w%d" % k)
    sim.run(5)
    asked = {node: sim.read(node) for node in ("a", "b", "c")}
    sim.run(5)
    for node, request_id in asked.items():
        assert request_id is not None
        read = sim.read_log[request_id]
        assert read.index is not None and read.index >= read.floor >= 6, (node, read)
