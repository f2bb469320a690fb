"""ReadIndex in the core (thesis §6.4, raftmq.core.reads): a read is confirmed only after
this term committed an entry and a majority answered a read round started after the read
was asked; a deposed leader's reads fail; a follower refuses; forged round numbers are
ignored."""

from __future__ import annotations

import pytest

from raftmq.core import (
    AppendEntries,
    AppendEntriesReply,
    ReadIndexReply,
    ReadIndexRequest,
    ReadState,
    reads,
)
from raftmq.errors import NotLeader
from tests.core.harness import Network, flush, single


def _states(net: Network, nid: str) -> list[ReadState]:
    return [state for rd in net.readies[nid] for state in rd.read_states]


def test_a_read_on_the_leader_gets_the_commit_index_after_a_majority_round() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    a = net.cores["a"]
    a.propose(b"x")
    net.deliver()
    commit = a.commit_index
    net.readies["a"].clear()
    net.cut_link("a", "b")
    net.cut_link("a", "c")
    a.read_index(7)
    net.deliver()
    assert _states(net, "a") == []  # nobody answered the round: not confirmed
    net.recover()
    net.cut_link("a", "c")
    net.tick_all(a.config.heartbeat_ticks)  # b answers the next heartbeat: a majority
    assert _states(net, "a") == [ReadState(7, commit)]


def test_a_read_waits_for_the_first_commit_of_the_leaders_term() -> None:
    net = Network(["a", "b", "c"])
    net.cores["a"].campaign()
    for _ in range(20):  # until a leads, before its no-op commits
        net.collect()
        batch, net.pending = net.pending, []
        for msg in batch:
            if isinstance(msg, AppendEntriesReply):
                continue  # no acks: nothing of this term commits
            net.cores[msg.recipient].step(msg)
        if net.cores["a"].role.value == "leader":
            break
    a = net.cores["a"]
    assert a.role.value == "leader" and a.commit_index == 0
    a.read_index(1)
    readies = flush(a)
    assert not [s for rd in readies for s in rd.read_states]
    net.pending.clear()
    net.tick_all(a.config.heartbeat_ticks)  # the no-op commits, then the round runs
    net.deliver()
    states = _states(net, "a")
    assert states == [ReadState(1, a.commit_index)] and a.commit_index >= 1


def test_a_single_voter_confirms_at_once() -> None:
    core = single("a", ("a",))
    core.campaign()
    flush(core)
    core.read_index(3)
    states = [s for rd in flush(core) for s in rd.read_states]
    assert states == [ReadState(3, core.commit_index)]


def test_a_follower_forwards_its_read_to_the_leader_and_gets_its_index() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    a = net.cores["a"]
    a.propose(b"x")
    net.deliver()
    net.cores["b"].read_index(4)
    net.deliver()
    assert _states(net, "b") == [ReadState(4, a.commit_index)]
    assert _states(net, "a") == []  # the leader's own reads are not the follower's


def test_a_node_without_a_leader_refuses_with_no_hint() -> None:
    net = Network(["a", "b", "c"])
    with pytest.raises(NotLeader) as caught:
        net.cores["b"].read_index(1)
    assert caught.value.leader_hint is None


def test_a_forwarded_read_fails_when_the_leader_changes_and_a_forged_answer_is_ignored() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    b = net.cores["b"]
    net.cut_link("a", "b")  # the request never arrives
    b.read_index(8)
    net.deliver()
    b.step(ReadIndexReply(term=b.term, sender="c", recipient="b", request_id=8, index=99))
    net.deliver()
    assert _states(net, "b") == []  # c does not lead b: its answer is dropped
    net.recover()
    net.isolate("a")
    election = b.config.election_ticks
    for _ in range(6 * election):
        net.tick_all()
        if set(net.leaders()) - {"a"}:
            break
    assert ReadState(8, None) in _states(net, "b")


def test_a_leader_deposed_before_confirmation_fails_its_reads() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    net.cores["a"].read_index(5)
    election = net.cores["b"].config.election_ticks
    for _ in range(6 * election):  # b and c elect a new leader meanwhile
        net.tick_all()
        if set(net.leaders()) - {"a"}:
            break
    assert set(net.leaders()) - {"a"}
    assert _states(net, "a") == []  # a still leads its old term, unconfirmed
    net.recover()
    net.tick_all(net.cores["b"].config.heartbeat_ticks)
    assert net.cores["a"].role.value == "follower"
    assert _states(net, "a") == [ReadState(5, None)]


def test_an_answer_to_a_round_started_before_the_read_does_not_confirm_it() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")  # the no-op of a's term is committed; every answer was of round 0
    core = net.cores["a"]
    core.read_index(9)
    rd = flush(core)
    rounds = {m.read_seq for r in rd for m in r.messages if isinstance(m, AppendEntries)}
    assert rounds == {1}
    core.step(_ack("b", core.term, core.last_index, 0))  # an old answer: not round 1
    assert not [s for r in flush(core) for s in r.read_states]
    core.step(_ack("c", core.term, core.last_index, 5))  # a round never started: forged
    assert not [s for r in flush(core) for s in r.read_states]
    core.step(_ack("c", core.term, core.last_index, 1))
    assert [s for r in flush(core) for s in r.read_states] == [ReadState(9, core.commit_index)]


def test_a_follower_echoes_the_round_in_every_reply() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    a = net.cores["a"]
    a.read_index(1)
    a.read_index(2)  # one round for both
    net.sent.clear()
    net.deliver()
    replies = [m for m in net.sent if isinstance(m, AppendEntriesReply)]
    assert replies and {m.read_seq for m in replies} == {1}
    assert [s.request_id for s in _states(net, "a")] == [1, 2]


def _ack(sender: str, term: int, match: int, read_seq: int) -> AppendEntriesReply:
    return AppendEntriesReply(
        term=term,
        sender=sender,
        recipient="a",
        success=True,
        match_index=match,
        read_seq=read_seq,
    )


def test_a_flood_of_forwarded_reads_is_bounded_on_a_leader_without_a_majority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hostile input: requests from a member pile up while the leader cannot confirm
    them; past MAX_WAITING they are dropped (their askers time out) and the leader's own
    reads are refused with NotLeader, instead of growing without bound."""
    monkeypatch.setattr(reads, "MAX_WAITING", 5)
    net = Network(["a", "b", "c"])
    net.elect("a")
    a = net.cores["a"]
    net.isolate("c")
    net.filter = lambda m: m.recipient == "b" and isinstance(m, AppendEntries)
    for k in range(1, 9):
        a.step(ReadIndexRequest(term=a.term, sender="c", recipient="a", request_id=k))
    net.deliver()
    assert _states(net, "a") == []  # b hears nothing: nothing confirmed
    with pytest.raises(NotLeader, match="too many reads"):
        a.read_index(99)
    net.recover()
    net.tick_all(a.config.heartbeat_ticks)
    replies = [m for m in net.sent if isinstance(m, ReadIndexReply)]
    assert sorted(m.request_id for m in replies) == [1, 2, 3, 4, 5]  # the rest dropped
