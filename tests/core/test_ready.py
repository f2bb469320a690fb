"""The Ready/advance contract, restarts, proposals and leadership transfer."""

from __future__ import annotations

import random

import pytest

from raftmq.core import (
    AppendEntries,
    EntryKind,
    HardState,
    InitialState,
    RaftConfig,
    RaftCore,
    Role,
    SoftState,
    TimeoutNow,
)
from raftmq.errors import ConfigError, NotLeader
from tests.core.harness import Network, entry, flush, log_state, single


def test_ready_is_idempotent_until_advance() -> None:
    """etcd contract: ready() hands out everything pending; calling it again without
    advance() returns the same work; work produced after ready() stays for the next one."""
    core = single("a", ("a",))
    core.campaign()
    first = core.ready()
    assert core.ready() == first
    assert first.soft_state == SoftState(Role.LEADER, "a", 1)
    assert [e.kind for e in first.entries] == [EntryKind.NOOP]
    index = core.propose(b"late")  # produced between ready() and advance()
    core.advance(first)
    second = core.ready()
    assert [e.index for e in second.entries] == [index]
    # A sole voter commits what it saved: the no-op (saved with `first`), not `late` yet.
    assert [e.index for e in second.committed_entries] == [index - 1]
    core.advance(second)
    third = core.ready()
    assert not third.entries
    assert [e.index for e in third.committed_entries] == [index]
    core.advance(third)
    assert not core.has_ready()
    assert core.applied_index == index


def test_truncation_between_ready_and_advance_is_persisted_next() -> None:
    """§5.3 with the persist-before-send contract: entries handed out in a Ready and then
    truncated by a conflicting AppendEntries before advance() are truncated in storage by
    the next Ready."""
    core = single("a")

    def msg(entries: list[tuple[int, int]], term: int) -> AppendEntries:
        ents = tuple(entry(i, t) for i, t in entries)
        return AppendEntries(
            term=term,
            sender="b",
            recipient="a",
            prev_log_index=0,
            prev_log_term=0,
            entries=ents,
            leader_commit=0,
        )

    core.step(msg([(1, 1), (2, 1), (3, 1)], term=1))
    rd1 = core.ready()
    assert [e.index for e in rd1.entries] == [1, 2, 3]
    core.step(
        AppendEntries(
            term=2,
            sender="c",
            recipient="a",
            prev_log_index=1,
            prev_log_term=1,
            entries=(entry(2, 2),),
            leader_commit=0,
        )
    )
    core.advance(rd1)  # the driver persisted 1..3 of term 1
    rd2 = core.ready()
    assert rd2.truncate_from == 2
    assert [(e.index, e.term) for e in rd2.entries] == [(2, 2)]
    core.advance(rd2)
    assert not core.has_ready()


def test_restart_preserves_term_vote_and_log() -> None:
    """§5.1 Fig. 2: currentTerm, votedFor and log[] are persistent; a node rebuilt from
    InitialState alone has them, and committed entries survive a restart of every node."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    for n in range(5):
        net.cores["a"].propose(b"%d" % n)
    net.deliver()
    net.tick_all(2)
    before = {
        nid: (c.term, c.voted_for, c.last_index, c.commit_index) for nid, c in net.cores.items()
    }
    for nid in net.ids:
        net.restart(nid, tail=2)
    after = {
        nid: (c.term, c.voted_for, c.last_index, c.commit_index) for nid, c in net.cores.items()
    }
    assert after == before
    assert all(c.role is Role.FOLLOWER for c in net.cores.values())
    net.elect("b")
    net.cores["b"].propose(b"after")
    net.deliver()
    net.tick_all(2)
    for nid in net.ids:
        assert net.applied_data(nid) == [b"0", b"1", b"2", b"3", b"4", b"after"]


def test_initial_state_without_runs_is_rejected() -> None:
    """InitialState invariant: a non-empty log comes with term runs (or a full tail)."""
    with pytest.raises(ConfigError):
        RaftCore(
            RaftConfig(node_id="a", voters=("a", "b", "c")),
            InitialState(hard_state=HardState(term=1), last_index=5),
        )


def test_not_leader_carries_the_leader_hint() -> None:
    """§8: clients that reach a follower are redirected: NotLeader names the leader it
    knows (None while there is no known leader)."""
    net = Network(["a", "b", "c"])
    with pytest.raises(NotLeader) as none_known:
        net.cores["b"].propose(b"x")
    assert none_known.value.leader_hint is None
    net.elect("a")
    with pytest.raises(NotLeader) as known:
        net.cores["b"].propose_batch([b"x", b"y"])
    assert known.value.leader_hint == "a"


def test_leadership_transfer() -> None:
    """Thesis §3.10: the leader brings the target up to date, sends TimeoutNow, and the
    target wins the next term at once; proposals are refused meanwhile."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    for n in range(3):
        net.cores["a"].propose(b"%d" % n)
    net.deliver()
    net.recover()
    net.cores["a"].transfer_leadership("c")  # c lags: catch it up first
    with pytest.raises(NotLeader) as refused:
        net.cores["a"].propose(b"during")
    assert refused.value.leader_hint == "c"
    net.deliver()
    assert any(isinstance(m, TimeoutNow) for m in net.sent)
    assert net.leaders() == ["c"]
    assert net.cores["c"].term == 2
    assert net.cores["a"].role is Role.FOLLOWER and net.cores["a"].leader_id == "c"
    net.cores["c"].propose(b"new")
    net.deliver()
    net.tick_all(2)
    assert net.applied_data("a") == [b"0", b"1", b"2", b"new"]


def test_leadership_transfer_times_out() -> None:
    """Thesis §3.10: if the transfer does not complete within an election timeout the
    leader aborts it and accepts proposals again."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net.cores["a"].propose(b"x")
    net.deliver()
    net.cores["a"].transfer_leadership("c")
    net.tick_all(net.cores["a"].config.election_ticks)
    assert net.cores["a"].role is Role.LEADER
    assert net.cores["a"].propose(b"y") > 0


def test_same_seed_same_ready_sequence() -> None:
    """Determinism: same seed and same inputs give the same Readies, bit for bit."""

    def run(seed: int) -> list[object]:
        net = Network(["a", "b", "c"], seed=seed)
        rng = random.Random(99)
        net.filter = lambda _m: rng.random() < 0.2
        for step in range(300):
            net.tick_all(1)
            leaders = net.leaders()
            if leaders and step % 7 == 0:
                net.cores[leaders[0]].propose(b"%d" % step)
        return [rd for nid in net.ids for rd in net.readies[nid]]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_vote_replies_of_another_round_are_ignored() -> None:
    """§5.2: a candidate counts votes of its current term only (pre-vote answers are not
    real votes)."""
    from raftmq.core import RequestVoteReply

    core = single("a", initial=log_state([], term=2), pre_vote=False)
    core.campaign()
    core.step(RequestVoteReply(term=3, sender="b", recipient="a", granted=True, pre_vote=True))
    core.step(RequestVoteReply(term=2, sender="c", recipient="a", granted=True))
    assert core.role is Role.CANDIDATE
    core.step(RequestVoteReply(term=3, sender="c", recipient="a", granted=True))
    assert core.status().role is Role.LEADER
    flush(core)
