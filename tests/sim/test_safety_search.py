"""Randomized safety search: many seeds, each a long schedule of partitions, crashes,
restarts, drops, delays, duplicates and reorders, with Raft's safety properties
(election safety, log matching, leader completeness, state machine safety, monotonic
commit) checked after every step.

``RAFTMQ_SAFETY_SEEDS`` sets how many seeds run (default 500; ``make safety-soak``
runs the ``slow`` variant with 5,000 other seeds). A failure names the seed and a
one-line command replaying it; ``RAFTMQ_SAFETY_SEED=N ... -k replay`` runs one seed.
"""

from __future__ import annotations

import os

import pytest

from tests.sim.schedule import REPLAY_COMMAND, ScheduleResult, run_schedule

SEEDS = int(os.environ.get("RAFTMQ_SAFETY_SEEDS", "500"))
SOAK_SEEDS = int(os.environ.get("RAFTMQ_SAFETY_SEEDS", "5000"))
SOAK_BASE = 1_000_000  # the soak explores seeds the default run does not
CHUNK = 50  # seeds per test item, so progress shows and a failure is localized


TRACE_LINES = 12  # last schedule actions shown with a failure


def _run_seed(seed: int) -> ScheduleResult:
    actions: list[str] = []
    try:
        return run_schedule(seed, actions)
    except AssertionError as exc:
        replay = REPLAY_COMMAND.format(seed=seed)
        trace = "\n  ".join(actions[-TRACE_LINES:])
        message = (
            f"safety search failed at seed {seed}: {exc}\n"
            f"last actions (tick: action):\n  {trace}\n"
            f"replay with: {replay}"
        )
        print(message)
        raise AssertionError(message) from exc


def _chunks(base: int, count: int) -> list[range]:
    return [range(base + lo, base + min(lo + CHUNK, count)) for lo in range(0, count, CHUNK)]


@pytest.mark.parametrize("seeds", _chunks(0, SEEDS), ids=lambda r: f"seeds{r.start}-{r.stop - 1}")
def test_safety_search(seeds: range) -> None:
    """Every seed's schedule keeps every safety property and recovers at the end."""
    proposed = reads = 0
    for seed in seeds:
        result = _run_seed(seed)
        proposed += result.proposed
        reads += result.reads_answered
    assert proposed > 0, "the schedules never got a proposal accepted"
    assert reads > 0, "the schedules never got a read answered"


@pytest.mark.slow
@pytest.mark.parametrize(
    "seeds", _chunks(SOAK_BASE, SOAK_SEEDS), ids=lambda r: f"seeds{r.start}-{r.stop - 1}"
)
def test_safety_soak(seeds: range) -> None:
    """The same search over thousands of further seeds (``make safety-soak``)."""
    for seed in seeds:
        _run_seed(seed)


def test_replay() -> None:
    """Replay one seed (``RAFTMQ_SAFETY_SEED``, default 0) and print its trace."""
    seed = int(os.environ.get("RAFTMQ_SAFETY_SEED", "0"))
    result = _run_seed(seed)
    print(f"seed {seed}: {result.proposed} proposals accepted, {result.sim.now} ticks")
    print("\n".join(result.actions))
    assert result.sim.applied_index(result.sim.node_ids[0]) > 0
