"""Membership changes in the core (raftmq.core.membership, thesis ch. 4): the
configuration is in the log, changes are single-server with the new-term rule, learners
count in no majority, a removed leader steps down, a truncated change is undone, and a
snapshot or a restart keeps the configuration. The random fault schedules of the safety
search change memberships too (tests/sim/schedule.py); these are the scenarios one by one.
"""

from __future__ import annotations

import pytest

from raftmq.core.membership import ChangeKind, ConfChange, decode, encode, membership
from raftmq.core.types import Membership, Role
from raftmq.errors import ConfigError
from raftmq.testing import Simulation
from tests.sim.harness import AGREEMENT_BUDGET, applied_by, check_one_leader

NODES = ["n1", "n2", "n3", "n4", "n5"]


def _sim(seed: int = 1, voters: tuple[str, ...] = ("n1", "n2", "n3")) -> Simulation:
    """n1-n3 vote; n4 and n5 run outside the cluster until they are added."""
    return Simulation(NODES, seed=seed, voters=voters)


def _change(sim: Simulation, kind: ChangeKind, node_id: str) -> int:
    """Have the leader make one change and wait until every member applied it."""
    leader = check_one_leader(sim)
    proposed: list[int] = []

    def propose() -> bool:
        index = sim.change_membership(leader, ConfChange(kind, node_id))
        if index is not None:
            proposed.append(index)
        return bool(proposed)

    assert sim.run_until(propose, 100)  # the leader's no-op must commit first
    index = proposed[0]
    members = sim.core(leader).membership.members
    assert sim.run_until(
        lambda: all(sim.applied_index(n) >= index for n in members if sim.is_alive(n)),
        AGREEMENT_BUDGET,
    )
    return index


def _write(sim: Simulation, data: bytes, expected: int) -> int:
    leader = check_one_leader(sim)
    index = sim.propose(leader, data)
    assert index is not None
    assert sim.run_until(applied_by(sim, index, data, expected), AGREEMENT_BUDGET)
    return index


def _members(sim: Simulation, m: Membership) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``m``'s voters and learners, after checking that every member it pins is pinned
    to its current database (leaders pin members as they hear them)."""
    assert all(inc == sim.incarnation(node) for node, inc in m.incarnations), m
    return m.voters, m.learners


def test_a_configuration_is_encoded_whole_and_validated() -> None:
    m = membership(["n3", "n1"], ["n4"])
    assert m == Membership(("n1", "n3"), ("n4",))
    assert decode(encode(m)) == m
    for bad in (b"", b"[]", b'{"voters": []}', b'{"voters": [], "learners": []}'):
        with pytest.raises(ConfigError):
            decode(bad)
    with pytest.raises(ConfigError):
        membership(["n1"], ["n1"])  # voter and learner at once
    with pytest.raises(ConfigError):
        membership(["n 1"])


def test_single_server_changes_apply_or_say_why_not() -> None:
    m = membership(["n1", "n2", "n3"])
    assert ConfChange(ChangeKind.ADD_LEARNER, "n4").applied_to(m).learners == ("n4",)
    promoted = ConfChange(ChangeKind.ADD_VOTER, "n4").applied_to(
        ConfChange(ChangeKind.ADD_LEARNER, "n4").applied_to(m)
    )
    assert promoted == Membership(("n1", "n2", "n3", "n4"), ())
    assert ConfChange(ChangeKind.REMOVE, "n2").applied_to(m).voters == ("n1", "n3")
    for change in (
        ConfChange(ChangeKind.ADD_LEARNER, "n1"),  # already a member
        ConfChange(ChangeKind.ADD_VOTER, "n2"),  # already a voter
        ConfChange(ChangeKind.REMOVE, "n9"),  # not a member
    ):
        with pytest.raises(ConfigError):
            change.applied_to(m)
    with pytest.raises(ConfigError, match="last voter"):
        ConfChange(ChangeKind.REMOVE, "n1").applied_to(membership(["n1"]))


def test_a_learner_gets_the_log_and_counts_in_no_majority() -> None:
    sim = _sim(seed=2)
    _write(sim, b"before", 3)
    _change(sim, ChangeKind.ADD_LEARNER, "n4")
    index = _write(sim, b"with a learner", 4)
    assert sim.applied("n4")[-1] == (index, b"with a learner")  # it caught up from 1
    leader = check_one_leader(sim)
    assert _members(sim, sim.core(leader).membership) == (("n1", "n2", "n3"), ("n4",))
    # Only the leader and the learner are connected: nothing commits (1 of 3 voters).
    voters = [n for n in ("n1", "n2", "n3") if n != leader]
    for n in voters:
        sim.disconnect(n)
    pending = sim.propose(leader, b"needs a voter")
    assert pending is not None
    sim.run(40)
    assert sim.commit_index(leader) < pending
    assert sim.role("n4") is Role.FOLLOWER  # a learner never campaigns


def test_a_promoted_learner_votes_and_counts() -> None:
    sim = _sim(seed=3)
    _change(sim, ChangeKind.ADD_LEARNER, "n4")
    _change(sim, ChangeKind.ADD_VOTER, "n4")
    leader = check_one_leader(sim)
    assert _members(sim, sim.core(leader).membership) == (("n1", "n2", "n3", "n4"), ())
    # 4 voters: a majority is 3. Leader + n4 + one more commit; leader + n4 alone do not.
    others = [n for n in ("n1", "n2", "n3") if n != leader]
    sim.disconnect(others[0])
    _write(sim, b"three of four", 3)
    sim.disconnect(others[1])
    pending = sim.propose(leader, b"two of four")
    assert pending is not None
    sim.run(40)
    assert sim.commit_index(leader) < pending


def test_one_change_at_a_time_and_only_after_the_leader_committed_in_its_term() -> None:
    sim = _sim(seed=4)
    leader = check_one_leader(sim)
    sim.run(5)
    core = sim.core(leader)
    core.propose_conf_change(ConfChange(ChangeKind.ADD_LEARNER, "n4"))
    assert core.config_pending
    with pytest.raises(ConfigError, match="not committed yet"):
        core.propose_conf_change(ConfChange(ChangeKind.ADD_LEARNER, "n5"))
    # A new leader must first commit an entry of its own term (its no-op).
    sim.crash(leader)
    new = check_one_leader(sim, [n for n in ("n1", "n2", "n3") if n != leader])
    fresh = sim.core(new)
    if fresh.commit_index < fresh.last_index:  # the no-op is not committed yet
        with pytest.raises(ConfigError, match="of this leader's term"):
            fresh.propose_conf_change(ConfChange(ChangeKind.ADD_LEARNER, "n5"))
    assert sim.run_until(
        lambda: sim.change_membership(new, ConfChange(ChangeKind.ADD_LEARNER, "n5")) is not None,
        100,
    )


def test_a_removed_leader_steps_down_once_the_change_commits_and_never_campaigns() -> None:
    sim = _sim(seed=5)
    leader = check_one_leader(sim)
    sim.run(5)
    index = sim.change_membership(leader, ConfChange(ChangeKind.REMOVE, leader))
    assert index is not None
    rest = [n for n in ("n1", "n2", "n3") if n != leader]
    assert sim.run_until(lambda: sim.role(leader) is not Role.LEADER, AGREEMENT_BUDGET)
    assert sim.commit_index(leader) >= index
    new = check_one_leader(sim, rest)
    assert sim.core(new).membership.voters == tuple(rest)
    sim.run(200)  # many election timeouts: the removed node never starts an election
    assert sim.core(leader).role is Role.FOLLOWER
    _write(sim, b"two voters now", 2)


def test_a_change_that_is_truncated_is_undone() -> None:
    """Five voters. The leader appends a change that reaches one follower only and
    dies; the three others elect a leader without it and overwrite it; the follower's
    configuration goes back to what it was before."""
    sim = Simulation(NODES, seed=6)
    leader = check_one_leader(sim)
    sim.run(5)
    follower, *others = [n for n in NODES if n != leader]
    for n in others:
        sim.disconnect(n)
    index = sim.change_membership(leader, ConfChange(ChangeKind.REMOVE, others[0]))
    assert index is not None
    sim.run(3)
    changed = tuple(sorted(n for n in NODES if n != others[0]))
    assert sim.core(follower).membership.voters == changed
    assert sim.commit_index(leader) < index  # 2 of 4: not committed
    sim.crash(leader)
    sim.disconnect(follower)
    for n in others:
        sim.connect(n)
    _write(sim, b"without the change", 3)
    assert sim.core(follower).membership.voters == changed
    sim.connect(follower)
    _write(sim, b"everyone", 4)
    assert sim.core(follower).membership.voters == tuple(NODES)
    assert all(sim.core(n).membership.voters == tuple(NODES) for n in others)


def test_the_configuration_survives_snapshots_and_restarts() -> None:
    # No trailing entries: a snapshot compacts the whole log, so n5 must catch up
    # through InstallSnapshot, which carries the configuration.
    sim = Simulation(NODES, seed=7, voters=("n1", "n2", "n3"), trailing_entries=0)
    _change(sim, ChangeKind.ADD_LEARNER, "n4")
    _change(sim, ChangeKind.ADD_VOTER, "n4")
    _change(sim, ChangeKind.REMOVE, "n2")
    expected = Membership(("n1", "n3", "n4"), ())
    for node_id in ("n1", "n3", "n4"):
        sim.take_snapshot(node_id)
        assert sim.core(node_id).snapshot is not None
        assert sim.core(node_id).snapshot.voters == expected.voters  # type: ignore[union-attr]
    _write(sim, b"after the snapshots", 3)
    for node_id in ("n1", "n3", "n4"):
        sim.crash(node_id)
        sim.restart(node_id)
        assert _members(sim, sim.core(node_id).membership) == (expected.voters, ())
    _change(sim, ChangeKind.ADD_LEARNER, "n5")  # n5 catches up from a snapshot
    _write(sim, b"n5 too", 4)
    assert sim.core("n5").snapshot is not None  # installed from the leader's
    assert _members(sim, sim.core("n5").membership) == (expected.voters, ("n5",))
    sim.crash("n5")
    sim.restart("n5")
    m = sim.core("n5").membership
    assert _members(sim, m) == (expected.voters, ("n5",))
    assert {"n1", "n3", "n4"} <= {node for node, _ in m.incarnations}


def test_a_removed_member_learns_it_and_the_leader_then_forgets_it() -> None:
    """The leader keeps sending a removed member the log until it holds the change
    committed (so the node can say it was removed and stop), then drops it."""
    sim = _sim(seed=8)
    leader = check_one_leader(sim)
    victim = next(n for n in ("n1", "n2", "n3") if n != leader)
    index = _change(sim, ChangeKind.REMOVE, victim)
    assert sim.run_until(lambda: sim.commit_index(victim) >= index, AGREEMENT_BUDGET)
    assert victim not in sim.core(victim).membership.members
    assert sim.run_until(lambda: victim not in sim.core(leader).status().progress, 50)
    sim.run(200)  # it never campaigns, and nobody sends it anything more
    assert sim.role(victim) is Role.FOLLOWER
    assert sim.commit_index(victim) == sim.applied_index(victim)
