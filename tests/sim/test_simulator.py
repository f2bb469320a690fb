"""The simulator's own machinery: network faults and the safety checkers catching
violations fed to them on purpose."""

from __future__ import annotations

import random

import pytest

from raftmq.core.messages import AppendEntries
from raftmq.core.types import Entry, EntryKind
from raftmq.testing import (
    CommitRegressionViolation,
    ElectionSafetyViolation,
    LeaderCompletenessViolation,
    LogMatchingViolation,
    SafetyChecker,
    SafetyViolation,
    Simulation,
    StateMachineSafetyViolation,
)
from raftmq.testing.network import Network

IDS = ["a", "b", "c"]


def _msg(sender: str, recipient: str, term: int = 1) -> AppendEntries:
    return AppendEntries(
        term=term,
        sender=sender,
        recipient=recipient,
        prev_log_index=0,
        prev_log_term=0,
        leader_commit=0,
    )


def _entries(*terms: int, data: bytes = b"x") -> list[Entry]:
    return [Entry(index=i, term=t, data=data) for i, t in enumerate(terms, start=1)]


def test_network_delivers_in_order_without_faults() -> None:
    net = Network(IDS, random.Random(1))
    for term in range(1, 6):
        net.send(_msg("a", "b", term), now=0)
    assert [m.term for m in net.pop_due(0)] == [1, 2, 3, 4, 5]
    assert net.sent["append_entries"] == 5 and net.delivered["append_entries"] == 5


def test_network_delay_drop_duplicate() -> None:
    net = Network(IDS, random.Random(2))
    net.delay_ticks = (3, 3)
    net.send(_msg("a", "b"), now=0)
    assert net.pop_due(2) == [] and len(net.pop_due(3)) == 1
    net.delay_ticks = (0, 0)
    net.drop_rate = 1.0
    net.send(_msg("a", "b"), now=5)
    assert net.pop_due(5) == [] and net.dropped["append_entries"] == 1
    net.drop_rate = 0.0
    net.duplicate_rate = 1.0
    net.send(_msg("a", "b"), now=6)
    assert len(net.pop_due(6)) == 2
    with pytest.raises(ValueError):
        net.drop_rate = 1.5
    with pytest.raises(ValueError):
        net.delay_ticks = (3, 1)


def test_network_reorder_lets_later_messages_overtake() -> None:
    net = Network(IDS, random.Random(3))
    net.reorder = 0.5
    for term in range(1, 41):
        net.send(_msg("a", "b", term), now=0)
    order = [m.term for tick in range(5) for m in net.pop_due(tick)]
    assert sorted(order) == list(range(1, 41))
    assert order != sorted(order)


def test_network_partitions_and_disconnects() -> None:
    net = Network(IDS, random.Random(4))
    net.partition(["a"], ["b", "c"])
    assert not net.can_reach("a", "b") and net.can_reach("b", "c")
    net.send(_msg("b", "c"), now=0)
    net.partition(["a", "b"])  # c is now isolated alone: the in-flight message is lost
    assert net.pop_due(0) == [] and net.dropped["append_entries"] == 1
    net.heal()
    net.disconnect("c")
    assert not net.can_reach("a", "c") and net.can_reach("a", "b")
    net.connect("c")
    assert net.can_reach("c", "a")
    net.send(_msg("a", "c"), now=1)
    assert net.discard("c") == 1 and net.in_flight == 0


def test_election_safety_checker() -> None:
    checker = SafetyChecker()
    checker.observe_leader("a", 1)
    checker.observe_leader("a", 1)
    checker.observe_leader("b", 2)
    with pytest.raises(ElectionSafetyViolation, match="term 2"):
        checker.observe_leader("c", 2)


def test_log_matching_checker() -> None:
    checker = SafetyChecker()
    log_a = _entries(1, 1, 2)
    checker.observe_log_change("a", log_a, None, 3)
    log_b = _entries(1, 1, 2, data=b"y")  # same (index, term), other payload
    with pytest.raises(LogMatchingViolation):
        checker.observe_log_change("b", log_b, None, 3)
    # same (3, 2) after a different prefix term: log matching broken
    log_c = [*_entries(1, 2), Entry(index=3, term=2, data=b"x")]
    with pytest.raises(LogMatchingViolation):
        checker.observe_log_change("c", log_c, None, 3)
    with pytest.raises(LogMatchingViolation, match="contiguous"):
        checker.observe_log_change("d", [Entry(index=2, term=1)], None, 1)


def test_commit_and_state_machine_checkers() -> None:
    checker = SafetyChecker()
    log = _entries(1, 1, 1)
    checker.observe_log_change("a", log, None, 3)
    checker.observe_commit("a", 1, 2, log)
    checker.observe_apply("a", log[0])
    with pytest.raises(StateMachineSafetyViolation, match="once each"):
        checker.observe_apply("a", log[0])  # applied twice
    with pytest.raises(StateMachineSafetyViolation, match="committed"):
        checker.observe_apply("b", Entry(index=1, term=1, data=b"other"))
    with pytest.raises(CommitRegressionViolation, match="truncated"):
        checker.observe_log_change("a", log[:1], 2, 0)
    with pytest.raises(CommitRegressionViolation, match="persisted commit"):
        checker.observe_commit("a", 1, 1, log)
    checker.observe_live_commit("a", 2)
    with pytest.raises(CommitRegressionViolation):
        checker.observe_live_commit("a", 1)
    checker.observe_crash("a")
    checker.observe_live_commit("a", 0)  # a new incarnation starts from its persisted state


def test_leader_completeness_checker() -> None:
    checker = SafetyChecker()
    log = _entries(1, 1)
    checker.observe_commit("a", 1, 2, log)
    checker.check_leader("b", 1, [])  # same term: not bound by commits of its own term
    checker.check_leader("c", 2, log)
    stale = [Entry(index=1, term=1, data=b"x"), Entry(index=2, term=1, kind=EntryKind.NOOP)]
    with pytest.raises(LeaderCompletenessViolation, match="index 2"):
        checker.check_leader("d", 3, stale)


def test_violations_are_assertion_errors() -> None:
    assert issubclass(SafetyViolation, AssertionError)


def test_simulation_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Simulation(["a", "a"])
    with pytest.raises(TypeError):
        Simulation(IDS, no_such_option=1)
    sim = Simulation(IDS, seed=1)
    with pytest.raises(KeyError):
        sim.disconnect("zz")
    with pytest.raises(RuntimeError):
        sim.restart("a")
    sim.crash("a")
    assert sim.role("a") is None and sim.propose("a", b"x") is None
    with pytest.raises(LookupError):
        sim.core("a")


def test_package_docstring_example() -> None:
    """The example in ``raftmq.testing``'s docstring works as written."""
    sim = Simulation(["n1", "n2", "n3"], seed=7)
    assert sim.run_until(lambda: sim.leader() is not None, max_ticks=200)
    leader = sim.leader()
    assert leader is not None
    assert sim.propose(leader, b"hello") == 2
    sim.run(ticks=10)
    for node_id in sim.node_ids:
        assert sim.applied(node_id) == [(2, b"hello")]
        # everything committed: the write, and the leader's pins (entry 3)
        assert sim.commit_index(node_id) == sim.last_index(node_id) == 3
        assert sim.term(node_id) == sim.term(leader)
    assert sim.network.sent["append_entries"] > 0


def test_crash_discards_in_flight_messages_and_restart_uses_persisted_state() -> None:
    """crash() loses the core and the undelivered messages to the node, while the ones it
    sent stay on the network (as on a broker); restart() sees only what was persisted
    (term, vote, log), so the node resumes with the same durable state."""
    sim = Simulation(IDS, seed=9)
    sim.network.delay_ticks = (3, 3)
    assert sim.run_until(lambda: sim.leader() is not None, 300)
    leader = sim.leader()
    assert leader is not None
    assert sim.propose(leader, b"v") is not None
    followers = [n for n in IDS if n != leader]
    before = {n: len(sim.log(n)) for n in followers}
    sim.settle()
    assert sim.network.pending(leader) > 0
    durable = sim.persisted[leader]
    term, log = durable.hard_state.term, list(durable.log)
    dropped = sum(sim.network.dropped.values())
    sim.crash(leader)
    assert sim.network.pending(leader) > 0, "what it sent is still in flight"
    assert sum(sim.network.dropped.values()) == dropped, "nothing was sent to it yet"
    sim.restart(leader)
    assert sim.term(leader) == term
    assert sim.core(leader).last_index == len(log)
    sim.run(4)
    # the leader's first AppendEntries (its NOOP) reach the followers after its crash
    assert all(len(sim.log(n)) > before[n] for n in followers), "delivered after the crash"
    assert sim.role(leader) is not None
