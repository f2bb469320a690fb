"""RaftCore.keepalives: the heartbeats a leader may send while its loop is held up.

Found in a full CI run and reproduced under disk load: a leader's save of 512 entries
took 922 ms, longer than the 0.5 s election timeout; it sent no heartbeat meanwhile (its
loop was waiting for the save), both followers timed out together and the burst of huge
batches went through eight terms. The node loop now sends ``keepalives()`` while one
of its turns lasts longer than a heartbeat interval (raftmq.node.loop); this file shows
that they change nothing in the leader, that they keep a follower's lease, and that
their answers are harmless.
"""

from __future__ import annotations

from raftmq.core import AppendEntries, AppendEntriesReply, Message, Role
from tests.core.harness import Network


def _cluster() -> Network:
    net = Network(["a", "b", "c"], election_ticks=10, heartbeat_ticks=2)
    net.elect("a")
    leader = net.cores["a"]
    for k in range(5):
        leader.propose(b"w%d" % k)
    net.deliver()
    assert leader.commit_index == leader.last_index
    return net


def test_keepalives_are_the_followers_heartbeats_and_change_nothing() -> None:
    net = _cluster()
    leader = net.cores["a"]
    before = leader.status()
    out = leader.keepalives()
    assert leader.status() == before
    assert not leader.has_ready()
    assert sorted(m.recipient for m in out) == ["b", "c"]
    for m in out:
        assert isinstance(m, AppendEntries)
        assert (m.term, m.sender, m.entries) == (leader.term, "a", ())
        assert m.prev_log_index == before.progress[m.recipient].match == leader.last_index
        assert m.prev_log_term == leader.log_term(m.prev_log_index)
        assert m.leader_commit == leader.commit_index


def test_a_follower_fed_keepalives_keeps_its_leader_through_many_timeouts() -> None:
    """The leader's loop is stuck (no tick, no Ready); only keepalives flow to b."""
    net = _cluster()
    leader, follower = net.cores["a"], net.cores["b"]
    term = leader.term
    for _ in range(60):  # three times the longest randomized election timeout
        follower.tick()
        for m in leader.keepalives():
            if m.recipient == "b":
                follower.step(m)
        net.drain("b")  # b persists and answers; the answers wait for a's loop
    assert (follower.role, follower.term, follower.leader_id) == (Role.FOLLOWER, term, "a")


def test_without_keepalives_the_follower_campaigns() -> None:
    """The same stall with nothing sent: b leaves its leader (what CI saw)."""
    net = _cluster()
    follower = net.cores["b"]
    for _ in range(60):
        follower.tick()
        net.drain("b")
    assert follower.role is not Role.FOLLOWER or follower.leader_id is None


def test_answers_to_keepalives_change_no_progress() -> None:
    net = _cluster()
    leader = net.cores["a"]
    before = leader.status()
    answers: list[Message] = []
    for m in leader.keepalives():
        net.cores[m.recipient].step(m)
        answers.extend(net.drain(m.recipient))
    assert answers and all(isinstance(a, AppendEntriesReply) and a.success for a in answers)
    for answer in answers:
        leader.step(answer)
    after = leader.status()
    assert (after.commit, after.last_index, after.term) == (
        before.commit,
        before.last_index,
        before.term,
    )
    assert {p: v.match for p, v in after.progress.items()} == {
        p: v.match for p, v in before.progress.items()
    }


def test_only_a_leader_sends_keepalives_and_only_to_replicating_followers() -> None:
    net = _cluster()
    assert net.cores["b"].keepalives() == []
    leader = net.cores["a"]
    # c is cut off with entries in flight: after two heartbeats without progress the
    # leader probes it, and c gets no keepalive until it answers a probe.
    net.isolate("c")
    leader.propose(b"more")
    net.deliver()
    for _ in range(3 * 2):
        leader.tick()
        net.deliver()
    assert leader.status().progress["c"].state == "probe"
    assert [m.recipient for m in leader.keepalives()] == ["b"]
