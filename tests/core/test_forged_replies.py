"""Replies that answer nothing this node sent are dropped, never believed.

§5.3: the leader learns a follower's log only from its replies ("if successful: update
nextIndex and matchIndex for follower"; "if AppendEntries fails because of log
inconsistency: decrement nextIndex and retry"), and §5.2: a candidate counts votes
"for the same term". A reply off the broker that names an index the leader never sent,
or grants a term nobody asked for, is forged; like etcd-io/raft (which ignores
out-of-range acks) the core drops it, and the checks on decode (§5.1: terms and
indexes are bounded, batches are contiguous) stop malformed ones before the core.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from raftmq.core import (
    MESSAGE_ADAPTER,
    AppendEntries,
    AppendEntriesReply,
    RequestVoteReply,
    Role,
)
from tests.core.harness import Network, flush, log_state, sent, single


def forged_ack(sender: str, match: int, term: int = 1) -> AppendEntriesReply:
    return AppendEntriesReply(
        term=term, sender=sender, recipient="a", success=True, match_index=match
    )


def commit_after_proposal(net: Network, data: bytes) -> tuple[int, int]:
    """Propose on a, run a few heartbeats; return (proposed index, a's commit index)."""
    index = net.cores["a"].propose(data)
    net.deliver()
    net.tick_all(4)
    return index, net.cores["a"].commit_index


def test_two_forged_acks_beyond_the_log_do_not_stop_commits() -> None:
    """§5.3 (finding): two AppendEntriesReply with match_index 10^9 made the leader
    believe a majority held index 10^9; no entry of its term could ever commit after
    that. The leader now ignores acks beyond what it sent, and keeps committing."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    leader = net.cores["a"]
    leader.step(forged_ack("b", 10**9))
    leader.step(forged_ack("c", 10**9))
    progress = leader.status().progress
    assert all(view.match <= leader.last_index for view in progress.values())
    index, commit = commit_after_proposal(net, b"after")
    assert commit == index
    assert net.applied_data("b")[-1] == b"after"


def test_ack_beyond_what_was_sent_to_that_follower_is_ignored() -> None:
    """§5.3: matchIndex only grows to what the follower acknowledged of our own
    AppendEntries: while c is probed (one AppendEntries, unanswered) the leader sends it
    nothing more, so an ack of a later index of our log is forged."""
    net = Network(["a", "b", "c"])
    net.isolate("c")
    net.elect("a")
    for n in range(3):
        net.cores["a"].propose(b"%d" % n)
    net.deliver()
    leader = net.cores["a"]
    before = leader.status().progress["c"]
    assert before.state == "probe"
    leader.step(forged_ack("c", leader.last_index))
    assert leader.status().progress["c"] == before


def test_forged_rejection_beyond_the_log_moves_nothing() -> None:
    """§5.3 fast backtracking: a rejection for a prev_log_index never sent (with a hint
    far past the log) must not send next_index past the leader's log."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.tick_all(2)
    leader = net.cores["a"]
    before = leader.status().progress["b"]
    leader.step(
        AppendEntriesReply(
            term=1,
            sender="b",
            recipient="a",
            success=False,
            reject_index=10**9,
            conflict_term=0,
            conflict_index=10**9,
        )
    )
    after = leader.status().progress["b"]
    assert (after.next, after.match, after.state) == (before.next, before.match, before.state)
    assert after.next <= leader.last_index + 1


def test_success_from_a_higher_term_does_not_depose_the_leader() -> None:
    """§5.1: a follower's success carries the term of the request it answers, so a success
    of a higher term answers nothing; only a refusal carries a higher term honestly."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    leader = net.cores["a"]
    leader.step(forged_ack("b", 1, term=40))
    assert (leader.role, leader.term) == (Role.LEADER, 1)
    leader.step(
        AppendEntriesReply(term=40, sender="b", recipient="a", success=False, reject_index=1)
    )
    assert (leader.role, leader.term) == (Role.FOLLOWER, 40)


def test_vote_grant_for_a_term_never_asked_is_dropped() -> None:
    """§5.2: votes count "for the same term"; a grant of a higher term (a candidate only
    ever asked for its own) neither moves the term nor counts."""
    core = single("a", initial=log_state([], term=2), pre_vote=False)
    core.campaign()
    core.step(RequestVoteReply(term=9, sender="b", recipient="a", granted=True))
    assert (core.role, core.term) == (Role.CANDIDATE, 3)


def test_pre_vote_grant_for_another_term_does_not_count() -> None:
    """Thesis §9.6: a pre-vote is asked for term + 1 and granted with that term; a grant
    of any other term is forged and wins no pre-vote round."""
    core = single("a", initial=log_state([], term=2))
    core.campaign()
    assert core.role is Role.PRE_CANDIDATE
    core.step(RequestVoteReply(term=7, sender="b", recipient="a", granted=True, pre_vote=True))
    core.step(RequestVoteReply(term=2, sender="c", recipient="a", granted=True, pre_vote=True))
    assert (core.role, core.term) == (Role.PRE_CANDIDATE, 2)
    core.step(RequestVoteReply(term=3, sender="b", recipient="a", granted=True, pre_vote=True))
    assert (core.role, core.term) == (Role.CANDIDATE, 3)


def _append_body(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "type": "append_entries",
        "term": 3,
        "sender": "b",
        "recipient": "a",
        "prev_log_index": 1,
        "prev_log_term": 1,
        "entries": [],
        "leader_commit": 0,
    }
    body.update(fields)
    return body


@pytest.mark.parametrize(
    "fields",
    [
        {"entries": [{"index": 2, "term": 2}, {"index": 4, "term": 2}]},  # a gap
        {"entries": [{"index": 2, "term": 3}, {"index": 3, "term": 2}]},  # term goes back
        {"entries": [{"index": 2, "term": 4}]},  # newer than the leader's term
        {"entries": [{"index": 2, "term": 1, "kind": 7}]},  # no such kind
        {"prev_log_term": 0},  # index 1 always has a term
        {"prev_log_index": 2**63 - 1, "entries": [{"index": 2**63, "term": 1}]},
        {"sender": "b.c"},  # not a node id
        {"sender": "b" * 65},
        {"leader_commit": -1},
    ],
)
def test_malformed_append_entries_do_not_validate(fields: dict[str, object]) -> None:
    """§5.3: the follower's log code assumes a batch continues prev_log_index with terms
    that never decrease; one that does not (it used to raise in the follower's step and
    stop its loop) is a validation error at decode, i.e. a counted drop."""
    with pytest.raises(ValidationError):
        MESSAGE_ADAPTER.validate_python(_append_body(**fields))
    assert MESSAGE_ADAPTER.validate_python(_append_body()).type == "append_entries"


def test_candidate_log_newer_than_its_term_does_not_validate() -> None:
    """§5.4.1: a candidate's last log term is at most its term; anything else is forged."""
    vote = {"type": "request_vote", "sender": "b", "recipient": "a", "term": 2}
    with pytest.raises(ValidationError):
        MESSAGE_ADAPTER.validate_python({**vote, "last_log_index": 5, "last_log_term": 3})
    with pytest.raises(ValidationError):
        MESSAGE_ADAPTER.validate_python({**vote, "last_log_index": 5, "last_log_term": 0})
    ok = MESSAGE_ADAPTER.validate_python({**vote, "last_log_index": 5, "last_log_term": 2})
    assert ok.type == "request_vote"


def test_every_message_the_core_sends_validates() -> None:
    """The bounds above hold for what the core itself sends (elections, replication,
    transfer), so honest traffic is never dropped at decode."""
    net = Network(["a", "b", "c"], max_batch_entries=2)
    net.elect("a")
    for n in range(5):
        net.cores["a"].propose(b"%d" % n)
    net.deliver()
    net.cores["a"].transfer_leadership("b")
    net.deliver()
    net.tick_all(30)
    assert net.leaders() == ["b"]
    for msg in net.sent:
        assert MESSAGE_ADAPTER.validate_json(MESSAGE_ADAPTER.dump_json(msg)) == msg


def test_a_follower_that_refuses_its_own_acknowledged_prefix_is_probed_per_heartbeat() -> None:
    """A follower that lost entries it had acknowledged (or lies about them) rejects the
    probe at match + 1 again and again. The leader used to answer each such reject with
    the same probe at once: a reject/probe storm at network speed (found by a planted
    ordering bug in the simulator, where it never ended). It now asks again once per
    heartbeat."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    leader = net.cores["a"]
    index, commit = commit_after_proposal(net, b"x")
    assert commit == index
    match = leader.status().progress["b"].match

    def reject(at: int) -> AppendEntriesReply:
        return AppendEntriesReply(
            term=leader.term, sender="b", recipient="a", success=False, reject_index=at
        )

    def to_b() -> list[AppendEntries]:
        return [
            m for m in sent(flush(leader)) if isinstance(m, AppendEntries) and m.recipient == "b"
        ]

    leader.propose(b"y")  # sent to b (never delivered): b is asked about match + 1
    assert [m.prev_log_index for m in to_b()] == [match]
    leader.step(reject(match + 1))  # b refuses it: probe from match + 1
    assert [m.prev_log_index for m in to_b()] == [match]
    for _ in range(5):  # the same refusal: nothing is sent until a heartbeat
        leader.step(reject(match))
        assert to_b() == []
    probes: list[AppendEntries] = []
    for _ in range(net.cores["a"].config.heartbeat_ticks):
        leader.tick()
        probes += to_b()
    assert [m.prev_log_index for m in probes] == [match]  # one probe per heartbeat
    assert leader.role is Role.LEADER
