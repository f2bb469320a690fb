"""Who may start an election past a live leader: TimeoutNow and transfer votes.

Thesis §3.10 (leadership transfer: the leader sends TimeoutNow to an up-to-date
target, which campaigns at once) and §9.6 (with check-quorum, a node that heard from
its leader within the election timeout ignores vote requests; transfer votes must get
past that). Everything here is also a message off the broker, so a TimeoutNow and a
transfer vote count only when the leader of the term, as the receiver knows it, asked
for them; terms are bounded so that no message can exhaust them (§5.1: terms are
"consecutive integers" and must always be incrementable).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from raftmq.core import (
    MESSAGE_ADAPTER,
    AppendEntries,
    HardState,
    RequestVote,
    Role,
    TimeoutNow,
)
from raftmq.core.types import MAX_TERM
from tests.core.harness import Network, entry, flush, log_state, sent, single


def leader_changes(net: Network) -> list[tuple[int, str | None]]:
    """Every (term, leader) a node reported becoming leader in, in order, from the trace."""
    out: list[tuple[int, str | None]] = []
    for nid in net.ids:
        for rd in net.readies[nid]:
            ss = rd.soft_state
            if ss is not None and ss.role is Role.LEADER:
                out.append((ss.term, nid))
    return sorted(out, key=lambda pair: pair[0])


def forged_vote(sender: str, recipient: str, net: Network, *, term_ahead: int = 1) -> RequestVote:
    """A transfer vote request as a member would send it, with a log as good as any."""
    best = max(net.cores.values(), key=lambda c: (c.last_term(), c.last_index))
    return RequestVote(
        term=net.cores[recipient].term + term_ahead,
        sender=sender,
        recipient=recipient,
        last_log_index=best.last_index,
        last_log_term=best.last_term(),
        transfer=True,
    )


def test_ten_forged_transfer_messages_change_no_leader() -> None:
    """Thesis §3.10 / §9.6: TimeoutNow and transfer votes from a member that is not the
    leader (c) are ignored, so they cannot force elections. Before, ten such messages
    (TimeoutNow to a follower, transfer votes to everyone) gave ten leader changes."""
    net = Network(["a", "b", "c", "d", "e"])
    net.elect("a")
    net.tick_all(2)
    before = leader_changes(net)
    for round_ in range(10):
        leader = max(net.ids, key=lambda n: (net.cores[n].role is Role.LEADER, n == "a"))
        follower = next(n for n in net.ids if n not in (leader, "c"))
        if round_ % 2 == 0:
            term = net.cores[follower].term
            net.cores[follower].step(TimeoutNow(term=term, sender="c", recipient=follower))
        else:
            for nid in net.ids:
                if nid != "c":
                    net.cores[nid].step(forged_vote("c", nid, net))
        net.deliver()
        net.tick_all(2)
    assert leader_changes(net) == before == [(1, "a")]
    assert {core.term for core in net.cores.values()} == {1}
    assert net.leaders() == ["a"]


def test_timeout_now_only_from_the_leader_of_our_term() -> None:
    """Thesis §3.10: a follower campaigns on TimeoutNow only when its sender is the leader
    it follows in the message's term; one from the future changes no term either."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    b = net.cores["b"]
    b.step(TimeoutNow(term=1, sender="c", recipient="b"))
    b.step(TimeoutNow(term=7, sender="c", recipient="b"))
    b.step(TimeoutNow(term=7, sender="a", recipient="b"))
    assert (b.role, b.term, b.leader_id) == (Role.FOLLOWER, 1, "a")
    assert not [m for m in sent(flush(b)) if isinstance(m, RequestVote)]
    b.step(TimeoutNow(term=1, sender="a", recipient="b"))  # the real leader: b campaigns
    assert (b.role, b.term) == (Role.CANDIDATE, 2)


def test_transfer_vote_passes_the_lease_only_for_the_named_transferee() -> None:
    """Thesis §3.10 with §9.6: a follower in lease grants a transfer vote for term + 1
    only to the node its leader named in a TimeoutNow, and only for that term."""
    net = Network(["a", "b", "c", "d", "e"])
    net.elect("a")
    b = net.cores["b"]
    b.step(TimeoutNow(term=1, sender="a", recipient="b", transferee="c"))
    assert b.role is Role.FOLLOWER  # a notice, not an order to campaign
    b.step(forged_vote("d", "b", net))  # not the named one
    b.step(forged_vote("c", "b", net, term_ahead=2))  # not the next term
    assert (b.term, b.voted_for, b.leader_id) == (1, "a", "a")
    b.step(forged_vote("c", "b", net))
    assert (b.term, b.voted_for) == (2, "c")


def test_transfer_notice_expires_after_an_election_timeout() -> None:
    """Thesis §3.10: the leader gives a transfer one election timeout; a follower keeps
    the leader's notice no longer, so a stalled transferee cannot use it later."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    b = net.cores["b"]
    b.step(TimeoutNow(term=1, sender="a", recipient="b", transferee="c"))
    for _ in range(b.config.election_ticks):
        b.tick()
        net.cores["a"].tick()
        net.deliver()  # heartbeats keep b in lease
    b.step(forged_vote("c", "b", net))
    assert (b.term, b.leader_id) == (1, "a")


def test_leadership_transfer_in_five_nodes_passes_every_lease() -> None:
    """Thesis §3.10: with five nodes the transferee needs followers' votes too; the
    leader's notice lets them pass their lease, and c wins term 2 with no extra tick."""
    net = Network(["a", "b", "c", "d", "e"])
    net.elect("a")
    net.tick_all(2)
    net.cores["a"].transfer_leadership("c")
    net.deliver()
    assert net.leaders() == ["c"]
    assert {core.term for core in net.cores.values()} == {2}
    notices = [m for m in net.sent if isinstance(m, TimeoutNow)]
    assert sorted(m.recipient for m in notices) == ["b", "c", "d", "e"]
    assert all(m.transferee == "c" for m in notices)


def test_max_term_vote_is_rejected_at_decode() -> None:
    """§5.1 terms must stay incrementable: a RequestVote with transfer=true and term
    2^63 - 1 (the finding: stored everywhere, the next election overflowed) does not
    validate; 2^63 - 2 is the highest term a message may carry."""
    body = {
        "type": "request_vote",
        "sender": "c",
        "recipient": "b",
        "last_log_index": 3,
        "last_log_term": 1,
        "transfer": True,
    }
    for term in (2**63 - 1, 2**63, -1):
        with pytest.raises(ValidationError):
            MESSAGE_ADAPTER.validate_python({**body, "term": term})
    assert MESSAGE_ADAPTER.validate_python({**body, "term": MAX_TERM}).term == 2**63 - 2


@pytest.mark.parametrize("check_quorum", [True, False])
def test_core_never_produces_a_term_past_max(check_quorum: bool) -> None:
    """§5.1/§5.2: at the highest term a message may carry, a node adopts it (it is
    valid) but never campaigns past it: no Ready or message ever holds a term >= 2^63 - 1."""
    net = Network(["a", "b", "c"], check_quorum=check_quorum)
    net.elect("a")
    vote = forged_vote("c", "b", net)
    net.cores["b"].step(vote.model_copy(update={"term": MAX_TERM, "transfer": False}))
    net.cores["a"].step(vote.model_copy(update={"term": MAX_TERM, "recipient": "a"}))
    net.tick_all(100)
    terms = [
        term
        for nid in net.ids
        for rd in net.readies[nid]
        for term in (
            *(m.term for m in rd.messages),
            *((rd.hard_state.term,) if rd.hard_state is not None else ()),
            *((rd.soft_state.term,) if rd.soft_state is not None else ()),
        )
    ]
    assert max(terms) <= MAX_TERM < 2**63 - 1
    assert all(core.term <= MAX_TERM for core in net.cores.values())


def test_node_at_max_term_does_not_campaign() -> None:
    """§5.2 "a follower increments its current term": impossible at the highest term, so
    the node stays a follower instead of overflowing its term."""
    core = single("a", initial=log_state([(1, 1)], term=MAX_TERM), election_ticks=3)
    for _ in range(20):
        core.tick()
    assert (core.role, core.term) == (Role.FOLLOWER, MAX_TERM)
    rds = flush(core)
    assert not sent(rds)
    assert all(rd.hard_state is None or rd.hard_state.term == MAX_TERM for rd in rds)


def test_append_entries_from_a_second_leader_of_the_term_is_dropped() -> None:
    """§5.2 Election Safety: "at most one leader can be elected in a given term". A
    follower that knows the leader of its term drops AppendEntries from anyone else, so a
    forged one cannot make it hold (and later apply) an entry the leader never sent."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    b = net.cores["b"]
    log_before = net.log_of("b")
    forged = AppendEntries(
        term=1,
        sender="c",
        recipient="b",
        prev_log_index=b.last_index,
        prev_log_term=b.last_term(),
        entries=(entry(b.last_index + 1, 1, b"forged"),),
        leader_commit=b.last_index + 1,
    )
    b.step(forged)
    net.deliver()
    assert net.log_of("b") == log_before
    assert b.leader_id == "a"
    assert b"forged" not in net.applied_data("b")


def test_restart_keeps_the_bound() -> None:
    """§5.1: a node restarted from a hard state at the highest term stays within it."""
    core = single(
        "a",
        initial=log_state([(1, 1)], term=MAX_TERM - 1),
        election_ticks=3,
        check_quorum=False,
        pre_vote=False,
    )
    for _ in range(50):
        core.tick()
    hard = [rd.hard_state for rd in flush(core) if rd.hard_state is not None]
    assert core.term == MAX_TERM
    assert all(isinstance(h, HardState) and h.term <= MAX_TERM for h in hard)
