"""The safety search has teeth for membership changes too: a core that counts learners
in its majorities, or that makes a second change before the first committed, commits
entries a later leader overwrites, and the random schedules (which add, promote and
remove members under every fault, tests/sim/schedule.py) catch it within a few hundred
seeds (seed 0 and seed 59 when this was written). Likewise a core that counts a wiped
member's votes and acknowledgements (the schedules wipe members' databases and replace
them): seed 3 when this was written, and 11 of the first 400 seeds."""

from __future__ import annotations

import pytest

from raftmq.core import membership
from raftmq.core.state import RaftState
from raftmq.testing.checkers import SafetyViolation
from tests.sim.schedule import run_schedule
from tests.sim.test_incarnations import counts_everyone

SEEDS = 400  # seeds a planted bug must be caught within


def _first_violation(seeds: range) -> int | None:
    for seed in seeds:
        try:
            run_schedule(seed)
        except SafetyViolation:
            return seed
        except AssertionError:
            continue  # a liveness failure is not what this looks for
    return None


def test_learners_counted_in_majorities_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def counting_learners(s: RaftState, values: dict[str, int], own: int) -> int:
        held = sorted(
            [*values.values(), *([own] if s.id in s.members.voters else [])], reverse=True
        )
        return held[s.quorum - 1] if len(held) >= s.quorum else 0

    monkeypatch.setattr(membership, "quorum_value", counting_learners)
    assert _first_violation(range(SEEDS)) is not None


def test_two_changes_at_a_time_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the one-change-at-a-time rule, configurations two servers apart elect
    leaders whose majorities do not overlap."""
    monkeypatch.setattr(membership, "pending", lambda s: False)
    assert _first_violation(range(SEEDS)) is not None


def test_a_wiped_member_counted_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the incarnation check, a member that lost its database votes again in a
    term it voted in and its old acknowledgements keep counting."""
    monkeypatch.setattr(membership, "admits", counts_everyone)
    assert _first_violation(range(SEEDS)) is not None
