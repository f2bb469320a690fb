"""An amnesiac member (its database wiped while the cluster keeps its id) never breaks
safety, and an operator's REPLACE brings it back (raftmq.core.membership, "Incarnations").

The scenario is the one the issue describes: a voter that acknowledged a committed entry
loses its disk and comes back empty. Without incarnations its vote elects a leader
that lacks the entry (the checker's LeaderCompletenessViolation, shown with the check
planted away); with them its vote and acknowledgements count nowhere until it is
replaced. The random schedules of the safety search wipe members too
(tests/sim/schedule.py).
"""

from __future__ import annotations

import pytest

from raftmq.core import membership
from raftmq.core.membership import ChangeKind, ConfChange
from raftmq.core.state import RaftState
from raftmq.testing import Simulation
from raftmq.testing.checkers import SafetyViolation
from tests.sim.harness import AGREEMENT_BUDGET, check_one_leader, one

NODES = ["n1", "n2", "n3"]


def _pinned_everywhere(sim: Simulation) -> bool:
    """Every node's persisted configuration pins every member to its database."""
    want = {n: sim.incarnation(n) for n in NODES}
    return all(dict(sim.persisted_membership(n).incarnations) == want for n in NODES)


def _accepted(sim: Simulation, leader: str, change: ConfChange) -> None:
    """Run until ``leader`` accepts ``change`` (it waits for its own pending entries)."""
    done: list[int] = []

    def propose() -> bool:
        index = sim.change_membership(leader, change)
        if index is not None:
            done.append(index)
        return bool(done)

    assert sim.run_until(propose, 100)


def counts_everyone(s: RaftState, sender: str, incarnation: str) -> bool:
    """membership.admits with the check taken out (a planted bug)."""
    return True


def _amnesia(sim: Simulation) -> tuple[str, str, str, int]:
    """Commit an entry on the leader and one follower only, then wipe that follower and
    restart it empty, with the leader cut off: (leader, wiped, other, entry index)."""
    leader = check_one_leader(sim)
    assert sim.run_until(lambda: _pinned_everywhere(sim), AGREEMENT_BUDGET)
    wiped, other = [n for n in NODES if n != leader]
    sim.disconnect(other)
    index = one(sim, b"committed on two", 2)
    sim.wipe(wiped)
    sim.restart(wiped)
    sim.disconnect(leader)
    sim.connect(other)
    return leader, wiped, other, index


def test_an_amnesiac_voter_elects_no_leader_that_lacks_a_committed_entry() -> None:
    sim = Simulation(NODES, seed=3)
    leader, wiped, other, index = _amnesia(sim)
    sim.run(400)  # twenty election timeouts: the checker would raise on a bad leader
    assert sim.leader() is None  # `other` lacks the entry; the wiped vote counts nowhere
    assert sim.core(other).status().strangers == ((wiped, sim.incarnation(wiped)),)
    assert sim.core(other).strangers_dropped > 0
    # The old leader comes back: it leads, sees the stranger, and an operator replaces it.
    sim.connect(leader)
    new_leader = check_one_leader(sim)
    assert sim.run_until(lambda: bool(sim.core(new_leader).status().strangers), 100)
    _accepted(sim, new_leader, ConfChange(ChangeKind.REPLACE, wiped))
    m = sim.core(new_leader).membership
    assert (wiped in m.learners, dict(m.incarnations)[wiped]) == (True, sim.incarnation(wiped))
    assert sim.run_until(lambda: sim.applied_index(wiped) >= index, AGREEMENT_BUDGET)
    assert sim.applied(wiped)[0] == (index, b"committed on two")
    _accepted(sim, new_leader, ConfChange(ChangeKind.ADD_VOTER, wiped))  # promoted
    one(sim, b"after the replacement", 3)
    assert wiped in sim.core(new_leader).membership.voters


def test_without_incarnations_the_amnesiac_vote_loses_a_committed_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: with the check planted away, the same run breaks safety."""
    monkeypatch.setattr(membership, "admits", counts_everyone)
    sim = Simulation(NODES, seed=3)
    _amnesia(sim)
    with pytest.raises(SafetyViolation):
        sim.run(400)


def test_the_replacement_catches_up_through_install_snapshot() -> None:
    """With the log compacted past what the new database holds (nothing), the replaced
    member gets the leader's snapshot, with the configuration and its pins."""
    sim = Simulation(NODES, seed=5, trailing_entries=0)
    leader = check_one_leader(sim)
    assert sim.run_until(lambda: _pinned_everywhere(sim), AGREEMENT_BUDGET)
    for k in range(20):
        one(sim, b"w%d" % k, 3)
    wiped = next(n for n in NODES if n != leader)
    sim.wipe(wiped)
    for node_id in NODES:
        if node_id != wiped:
            assert sim.take_snapshot(node_id) is not None  # the whole log is compacted
    sim.restart(wiped)
    assert sim.run_until(lambda: bool(sim.core(leader).status().strangers), 100)
    _accepted(sim, leader, ConfChange(ChangeKind.REPLACE, wiped))
    assert sim.run_until(lambda: sim.applied_index(wiped) >= sim.commit_index(leader), 200)
    snapshot = sim.core(wiped).snapshot
    assert snapshot is not None  # installed from the leader's
    assert dict(snapshot.incarnations).get(leader) == sim.incarnation(leader)
    assert [data for _, data in sim.applied(wiped)] == [b"w%d" % k for k in range(20)]
    _accepted(sim, leader, ConfChange(ChangeKind.ADD_VOTER, wiped))
    one(sim, b"three voters again", 3)
