"""A graceful handover's two core pieces: whom a leader hands over to, and why each
election started (thesis §3.10 leadership transfer, §5.2 election timeout)."""

from __future__ import annotations

from raftmq.core import ElectionCause, Role
from tests.core.harness import Network


def _started(net: Network, nid: str) -> dict[ElectionCause, int]:
    return net.cores[nid].elections_started


def test_most_caught_up_peer_has_the_highest_match() -> None:
    """Thesis §3.10: the transfer target must be caught up before TimeoutNow, so the
    voter with the highest match index takes over soonest; c, cut off, lags."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.cut_link("a", "c")
    leader = net.cores["a"]
    for k in range(5):
        leader.propose(b"w%d" % k)
    net.deliver()
    status = leader.status()
    assert status.progress["b"].match > status.progress["c"].match
    assert leader.most_caught_up_peer() == "b"
    assert leader.most_caught_up_peer(exclude=["b"]) == "c"
    assert leader.most_caught_up_peer(exclude=["b", "c"]) is None


def test_most_caught_up_peer_ties_go_to_the_lowest_id() -> None:
    """Equal match indexes: the lowest id, so that the choice is deterministic."""
    net = Network(["a", "b", "c"])
    net.elect("c")
    net.cores["c"].propose(b"x")
    net.deliver()
    status = net.cores["c"].status()
    assert status.progress["a"].match == status.progress["b"].match == status.last_index
    assert net.cores["c"].most_caught_up_peer() == "a"


def test_only_a_leader_names_a_target() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    assert net.cores["b"].role is Role.FOLLOWER
    assert net.cores["b"].most_caught_up_peer() is None


def test_election_by_timeout_counts_as_timeout_once() -> None:
    """§5.2: a follower that hears nothing for its randomized timeout campaigns; with
    pre-vote (thesis §9.6) the pre-vote round and the election it leads to count once."""
    net = Network(["a", "b", "c"])
    net.tick("a", 2 * net.cores["a"].config.election_ticks)  # past any randomized timeout
    net.deliver()
    assert net.cores["a"].role is Role.LEADER
    assert _started(net, "a") == {ElectionCause.TIMEOUT: 1, ElectionCause.TRANSFER: 0}
    assert _started(net, "b") == _started(net, "c") == dict.fromkeys(ElectionCause, 0)


def test_election_on_timeout_now_counts_as_transfer() -> None:
    """Thesis §3.10: the target of a transfer campaigns on the leader's TimeoutNow; that
    election is the handover's, not a timeout's."""
    net = Network(["a", "b", "c"])
    net.elect("a")  # campaign() is counted under no cause
    net.cores["a"].transfer_leadership("b")
    net.deliver()
    assert net.leaders() == ["b"]
    assert _started(net, "b") == {ElectionCause.TIMEOUT: 0, ElectionCause.TRANSFER: 1}
    for nid in ("a", "c"):
        assert _started(net, nid) == dict.fromkeys(ElectionCause, 0)


def test_candidate_timing_out_again_counts_each_round() -> None:
    """§5.2: a candidate without a majority starts a new election at each timeout."""
    net = Network(["a", "b", "c"])
    net.isolate("a")
    timeout = net.cores["a"].config.election_ticks
    net.tick_all(3 * 2 * timeout)  # a times out at least three times, alone
    assert net.cores["a"].role is not Role.LEADER
    assert _started(net, "a")[ElectionCause.TIMEOUT] >= 3
    assert _started(net, "a")[ElectionCause.TRANSFER] == 0
