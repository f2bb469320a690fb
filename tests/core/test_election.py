"""Paper tests for leader election (§5.2, §5.4.1, thesis §9.6 pre-vote and check-quorum)."""

from __future__ import annotations

import logging

import pytest

from raftmq.core import (
    AppendEntries,
    AppendEntriesReply,
    RequestVote,
    RequestVoteReply,
    Role,
)
from tests.core.harness import Network, flush, log_state, sent, single


def vote_request(
    sender: str, term: int, last_index: int = 0, last_term: int = 0, **kw: bool
) -> RequestVote:
    return RequestVote(
        term=term,
        sender=sender,
        recipient="a",
        last_log_index=last_index,
        last_log_term=last_term,
        **kw,
    )


def test_election_in_one_round() -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term" — one pre-vote round plus one vote round."""
    net = Network(["a", "b", "c", "d", "e"])
    net.isolate("d")
    net.isolate("e")
    net.elect("a")
    assert net.leaders() == ["a"]
    assert net.cores["a"].term == 1
    requests = [m for m in net.sent if isinstance(m, RequestVote)]
    # two reachable voters, asked once with a pre-vote and once for real
    assert sorted((m.recipient, m.pre_vote) for m in requests) == [
        ("b", False),
        ("b", True),
        ("c", False),
        ("c", True),
    ]
    for nid in ("b", "c"):
        assert net.cores[nid].role is Role.FOLLOWER
        assert net.cores[nid].leader_id == "a"


def test_no_leader_without_majority() -> None:
    """§5.2: without votes from a majority the candidate cannot win (no pre-vote to pass either)."""
    net = Network(["a", "b", "c", "d", "e"])
    for nid in ("c", "d", "e"):
        net.isolate(nid)
    net.elect("a")
    assert net.leaders() == []
    assert net.cores["a"].term == 0  # the pre-vote round failed, so the term never moved


def test_single_node_elects_itself_and_commits() -> None:
    """§5.2 with one voter: a majority of one; it commits its own entries alone (§5.3)."""
    core = single("a", ("a",))
    for _ in range(2 * core.config.election_ticks):
        core.tick()
    assert core.role is Role.LEADER
    index = core.propose(b"solo")
    flush(core)
    assert core.commit_index == index
    assert core.applied_index == index


def test_follower_grants_one_vote_per_term() -> None:
    """§5.2: "each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis"; a re-sent request from the same candidate is granted again."""
    core = single("a", pre_vote=False, check_quorum=False)
    core.step(vote_request("b", 1))
    core.step(vote_request("c", 1))
    core.step(vote_request("b", 1))
    replies = [m for m in sent(flush(core)) if isinstance(m, RequestVoteReply)]
    assert [(m.recipient, m.granted) for m in replies] == [("b", True), ("c", False), ("b", True)]
    assert core.voted_for == "b"


def test_vote_decisions_are_logged_at_debug_with_their_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`raftmq node --log-level DEBUG` shows why a node voted as it did."""
    core = single("a", pre_vote=False, check_quorum=False)
    with caplog.at_level(logging.DEBUG, logger="raftmq.core"):
        core.step(vote_request("b", 1))
        core.step(vote_request("c", 1))
    assert [r.getMessage() for r in caplog.records if "vote" in r.getMessage()] == [
        "a: granting vote to b for term 1",
        "a: refusing vote to c for term 1: voted for b",
    ]


def test_vote_is_persisted_in_the_ready_that_carries_the_grant() -> None:
    """§5.1/Fig. 2: votedFor is persistent state, updated on stable storage before
    responding to RPCs: the grant and the new hard state travel in the same Ready."""
    core = single("a", pre_vote=False, check_quorum=False)
    core.step(vote_request("b", 3))
    rd = core.ready()
    assert rd.hard_state is not None
    assert (rd.hard_state.term, rd.hard_state.voted_for) == (3, "b")
    assert [(type(m), m.granted) for m in rd.messages if isinstance(m, RequestVoteReply)] == [
        (RequestVoteReply, True)
    ]
    # a restart from what that Ready persisted still refuses another candidate of term 3
    from raftmq.core import InitialState

    again = single("a", initial=InitialState(hard_state=rd.hard_state), pre_vote=False)
    again.step(vote_request("c", 3))
    assert [m.granted for m in sent(flush(again)) if isinstance(m, RequestVoteReply)] == [False]


@pytest.mark.parametrize(
    ("last_term", "last_index", "granted"),
    [
        (1, 1, False),  # lower last term
        (1, 5, False),  # lower last term, longer log
        (2, 1, False),  # same last term, shorter log
        (2, 2, True),  # identical
        (2, 3, True),  # same last term, longer
        (3, 1, True),  # higher last term, shorter log
    ],
)
def test_vote_requires_up_to_date_log(last_term: int, last_index: int, granted: bool) -> None:
    """§5.4.1: "If the logs have last entries with different terms, then the log with the
    later term is more up-to-date. If the logs end with the same term, then whichever log
    is longer is more up-to-date." A voter denies its vote to a less up-to-date candidate."""
    core = single("a", initial=log_state([(1, 1), (2, 2)], term=2), pre_vote=False)
    core.step(vote_request("b", 3, last_index, last_term))
    replies = [m for m in sent(flush(core)) if isinstance(m, RequestVoteReply)]
    assert [m.granted for m in replies] == [granted]
    assert core.term == 3  # the higher term is adopted either way (§5.1)


def test_stale_term_requests_are_rejected_with_our_term() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request"; the reply carries the current term so the sender updates itself."""
    core = single("a", initial=log_state([(1, 1)], term=3))
    core.step(
        AppendEntries(
            term=2, sender="b", recipient="a", prev_log_index=1, prev_log_term=1, leader_commit=1
        )
    )
    core.step(vote_request("c", 2, 5, 2))
    msgs = sent(flush(core))
    assert [(type(m).__name__, m.term) for m in msgs] == [
        ("AppendEntriesReply", 3),
        ("RequestVoteReply", 3),
    ]
    assert all(not getattr(m, "success", False) and not getattr(m, "granted", False) for m in msgs)
    assert (core.term, core.leader_id, core.commit_index, core.voted_for) == (3, None, 0, None)


def test_stale_leader_steps_down_on_higher_term_reply() -> None:
    """§5.1: "If a server ... learns its current term is out of date, it immediately
    reverts to follower state"; stale vote replies of an older term are ignored."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    leader = net.cores["a"]
    leader.step(RequestVoteReply(term=0, sender="b", recipient="a", granted=True))
    assert leader.role is Role.LEADER
    leader.step(
        AppendEntriesReply(term=5, sender="b", recipient="a", success=False, reject_index=1)
    )
    assert (leader.role, leader.term, leader.leader_id) == (Role.FOLLOWER, 5, None)


def test_candidate_falls_back_on_append_entries_of_its_term() -> None:
    """§5.2: "If the AppendEntries RPC is from another server claiming to be leader and the
    leader's term is at least as large as the candidate's current term, the candidate
    recognizes the leader as legitimate and returns to follower state" (else it rejects)."""
    core = single("a", pre_vote=False)
    core.campaign()
    assert (core.role, core.term) == (Role.CANDIDATE, 1)
    flush(core)
    core.step(
        AppendEntries(
            term=0, sender="b", recipient="a", prev_log_index=0, prev_log_term=0, leader_commit=0
        )
    )
    assert core.role is Role.CANDIDATE
    core.step(
        AppendEntries(
            term=1, sender="b", recipient="a", prev_log_index=0, prev_log_term=0, leader_commit=0
        )
    )
    assert (core.role, core.term, core.leader_id) == (Role.FOLLOWER, 1, "b")
    replies = [m for m in sent(flush(core)) if isinstance(m, AppendEntriesReply)]
    # the stale one is rejected with our term, the valid one accepted
    assert [(m.term, m.success) for m in replies] == [(1, False), (1, True)]


def test_randomized_election_timeouts_spread() -> None:
    """§5.2: "election timeouts are chosen randomly from a fixed interval" so that split
    votes are rare: here [election_ticks, 2*election_ticks), different per seed."""
    timeouts = []
    for seed in range(60):
        core = single("a", seed=seed, election_ticks=10, heartbeat_ticks=2)
        ticks = 0
        while core.role is Role.FOLLOWER:
            core.tick()
            ticks += 1
        timeouts.append(ticks)
    assert all(10 <= t < 20 for t in timeouts)
    assert len(set(timeouts)) >= 6  # spread over the interval, not one fixed value
    assert min(timeouts) < 15 <= max(timeouts)


def test_simultaneous_candidates_one_wins() -> None:
    """§5.2: two candidates in the same term; each voter grants first-come-first-served,
    so at most one gets a majority (Election Safety)."""
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.cores["a"].campaign()
    net.cores["c"].campaign()
    net.deliver()
    assert net.leaders() == ["a"]
    assert {c.term for c in net.cores.values()} == {1}
    assert net.cores["c"].leader_id == "a"


def test_split_vote_resolved_by_randomized_timeouts() -> None:
    """§5.2: a split vote leaves no leader; "each candidate will time out and start a new
    election"; randomized timeouts make a single winner emerge."""
    net = Network(["a", "b", "c", "d"], pre_vote=False, check_quorum=False)
    net.cut_link("a", "d")
    net.cut_link("c", "b")
    net.cores["a"].campaign()
    net.cores["c"].campaign()
    net.deliver()
    assert net.leaders() == []  # 2 votes each out of 4: no majority
    net.recover()
    for _ in range(100):
        net.tick_all()
        if net.leaders():
            break
    assert len(net.leaders()) == 1
    leader = net.cores[net.leaders()[0]]
    assert leader.term >= 2


def test_dueling_candidates_without_pre_vote_disrupt_the_leader() -> None:
    """§9.6 (thesis), the problem pre-vote solves: a node cut off from the leader raises
    its term; when it comes back its RequestVote deposes the working leader."""
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.cut_link("a", "c")
    net.elect("a")
    net.cores["c"].campaign()  # b already voted for a in term 1: c cannot win
    net.deliver()
    net.recover()
    net.cores["c"].campaign()  # term 2: a steps down although it was healthy
    net.deliver()
    assert net.cores["a"].role is Role.FOLLOWER
    assert net.cores["a"].term == 2
    assert net.leaders() == []  # c's log was behind, so nobody won term 2 either


def test_dueling_candidates_with_pre_vote_keep_the_leader() -> None:
    """§9.6: with pre-vote, "a candidate must first learn that it could win an election";
    voters that hear from a leader refuse, so c never raises its term and a keeps leading."""
    net = Network(["a", "b", "c"])
    net.cut_link("a", "c")
    net.elect("a")
    net.cores["c"].campaign()
    net.deliver()
    # b refused the pre-vote with its term: c learns term 1 but never starts term 2
    assert (net.cores["c"].role, net.cores["c"].term) == (Role.FOLLOWER, 1)
    net.recover()
    net.cores["c"].campaign()
    net.deliver()
    net.tick_all(4)
    assert net.leaders() == ["a"]
    assert {c.term for c in net.cores.values()} == {1}
    assert net.cores["c"].leader_id == "a"


def test_partitioned_node_rejoins_without_deposing_leader() -> None:
    """§9.6: a server partitioned away keeps timing out, but pre-vote stops it from
    incrementing its term, so on rejoining it does not disrupt the cluster."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net.tick_all(100)
    assert net.cores["c"].term == 1
    net.recover()
    net.tick_all(10)
    assert net.leaders() == ["a"]
    assert net.cores["a"].term == 1
    assert net.cores["c"].role is Role.FOLLOWER and net.cores["c"].leader_id == "a"


def test_partitioned_node_without_pre_vote_raises_term() -> None:
    """Contrast for §9.6: without pre-vote the isolated node's term runs away and its
    return forces the leader out (a new election in a higher term)."""
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.elect("a")
    net.isolate("c")
    net.tick_all(100)
    assert net.cores["c"].term > 1
    net.recover()
    net.tick_all(60)
    leader = net.leaders()
    assert len(leader) == 1 and net.cores[leader[0]].term > 1


def test_check_quorum_leader_steps_down() -> None:
    """Thesis §6.2/§9.6 check-quorum: a leader that has not heard from a majority within
    an election timeout steps down (and stops accepting proposals)."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    net.isolate("c")
    e = net.cores["a"].config.election_ticks
    net.tick_all(2 * e)
    assert net.cores["a"].role is Role.FOLLOWER
    assert net.cores["a"].term == 1


def test_check_quorum_heartbeat_replies_keep_the_leader() -> None:
    """Check-quorum counts heartbeat replies as activity: an idle but connected leader
    keeps leading for ever."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")  # a majority (a, b) is still enough
    net.tick_all(10 * net.cores["a"].config.election_ticks)
    assert net.leaders() == ["a"]
    assert net.cores["a"].term == 1


def test_without_check_quorum_isolated_leader_stays() -> None:
    """Contrast: with check-quorum off the isolated leader never notices."""
    net = Network(["a", "b", "c"], check_quorum=False)
    net.elect("a")
    net.isolate("b")
    net.isolate("c")
    net.tick_all(50)
    assert net.cores["a"].role is Role.LEADER


def test_follower_in_lease_ignores_higher_term_vote() -> None:
    """Thesis §9.6 (check-quorum lease): a follower that heard from its leader within the
    election timeout ignores a RequestVote with a higher term; being marked a transfer
    does not change that unless its leader named the candidate (thesis §3.10)."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    b = net.cores["b"]
    b.step(RequestVote(term=5, sender="c", recipient="b", last_log_index=9, last_log_term=4))
    assert (b.term, b.leader_id) == (1, "a")
    b.step(
        RequestVote(
            term=2, sender="c", recipient="b", last_log_index=9, last_log_term=1, transfer=True
        )
    )
    assert (b.term, b.leader_id, b.voted_for) == (1, "a", "a")


def test_pre_vote_changes_no_state() -> None:
    """§9.6: granting a pre-vote changes neither the voter's term nor its vote."""
    core = single("a")
    core.step(vote_request("b", 4, 0, 0, pre_vote=True))
    rd = core.ready()
    assert rd.hard_state is None
    assert [
        (m.granted, m.term, m.pre_vote) for m in rd.messages if isinstance(m, RequestVoteReply)
    ] == [(True, 4, True)]
    assert (core.term, core.voted_for) == (0, None)


def test_pre_vote_without_check_quorum_has_no_lease() -> None:
    """Thesis §9.6: the lease ("within the minimum election timeout of hearing from a
    current leader") comes with check-quorum, as in etcd-io/raft. Without it a stale
    leader never steps down, so a follower that still hears it must not refuse pre-votes:
    here a leads only b (a-c, a-d cut, e down) and cannot commit; b, c, d are a healthy
    majority and must elect a leader. With the lease applied anyway, b ignored every
    pre-vote and no leader was ever elected."""
    net = Network(["a", "b", "c", "d", "e"], pre_vote=True, check_quorum=False)
    net.elect("a")
    net.isolate("e")
    net.cut_link("a", "c")
    net.cut_link("a", "d")
    for _ in range(20 * net.cores["a"].config.election_ticks):
        net.tick_all(1)
        if any(net.cores[n].role is Role.LEADER for n in ("b", "c", "d")):
            break
    leaders = [n for n in ("b", "c", "d") if net.cores[n].role is Role.LEADER]
    assert len(leaders) == 1
    net.tick_all(4)
    assert net.cores["a"].role is Role.FOLLOWER  # b's higher term reached the stale leader
