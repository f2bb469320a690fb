"""Incarnations (raftmq.core.membership): a member that lost its database is not that member.

Found as a user (issue MEMBERS): a node whose disk was replaced came back empty under
its old id and voted as if it had never voted; with a second process of the same id
this already overwrote committed entries. Each database now has an incarnation id, the
messages that promise something about a database carry it, and the configuration pins
each member's: a message from another database is dropped before it moves anything.
These tests feed cores the messages of a wiped member directly; the simulator's tests
(tests/sim/test_incarnations.py) run the same through whole clusters.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from raftmq.core import (
    AppendEntriesReply,
    InstallSnapshot,
    RaftCore,
    RequestVote,
    RequestVoteReply,
    Role,
)
from raftmq.core.membership import ChangeKind, ConfChange, decode, encode, membership
from raftmq.errors import ConfigError
from tests.core.harness import Network, incarnation

NEW = incarnation("a new disk")  # the database a wiped member comes back with


def _answer(
    core: RaftCore, sender: str, incarnation: str, *, match: int = 0, reject: int | None = None
) -> None:
    """Step an AppendEntriesReply from ``sender``'s database ``incarnation`` into
    ``core``: a success up to ``match``, or a rejection of ``reject``."""
    core.step(
        AppendEntriesReply(
            term=core.term,
            sender=sender,
            recipient=core.id,
            success=reject is None,
            match_index=match if reject is None else 0,
            reject_index=reject or 0,
            incarnation=incarnation,
        )
    )


def _pinned() -> Network:
    """a leads b and c; every member is pinned and the pins are committed everywhere."""
    net = Network(
        ["a", "b", "c"], incarnations=True, election_ticks=10, heartbeat_ticks=1, pre_vote=False
    )
    net.elect("a")
    net.tick_all(2)  # a heartbeat after its first commit: the pins
    for nid in net.ids:
        m = net.cores[nid].membership
        assert dict(m.incarnations) == {n: incarnation(n) for n in net.ids}
        assert net.cores[nid].commit_index == net.cores["a"].last_index
    return net


def test_the_leader_pins_every_member_it_heard_in_one_configuration_entry() -> None:
    net = _pinned()
    configs = [e for e in net.disks["a"].entries.values() if e.kind == 2]
    assert len(configs) == 1  # one entry for all three
    assert decode(configs[0].data).voters == ("a", "b", "c")  # no voter changed
    net.tick_all(20)
    assert len([e for e in net.disks["a"].entries.values() if e.kind == 2]) == 1  # once


def test_a_vote_from_another_database_is_not_counted() -> None:
    """The wiped voter has no vote on record, so it votes again in a term it voted in;
    the candidate drops that vote (it would make a second leader of the term)."""
    net = _pinned()
    b = net.cores["b"]
    net.isolate("a")
    net.isolate("c")
    b.campaign()  # pre-vote is off: a real election in term + 1
    term = b.term
    net.deliver()
    wiped_vote = RequestVoteReply(
        term=term, sender="c", recipient="b", granted=True, incarnation=NEW
    )
    b.step(wiped_vote)
    assert b.role is Role.CANDIDATE
    assert b.status().strangers == (("c", NEW),)
    b.step(wiped_vote.model_copy(update={"incarnation": incarnation("c")}))
    assert b.status().role is Role.LEADER  # the same vote from c's own database counts


def test_a_leader_forgets_what_a_wiped_follower_held_and_never_counts_it() -> None:
    net = _pinned()
    a = net.cores["a"]
    match_before = a.status().progress["c"].match
    assert match_before == a.last_index
    net.isolate("b")
    net.isolate("c")  # c's own database is gone: only its new one answers
    index = a.propose(b"needs b or c")
    net.deliver()
    # c answers from its new, empty database: it holds nothing, whatever it says.
    _answer(a, "c", NEW, match=index)
    assert a.status().progress["c"].match == 0  # what c's old database held is gone
    assert a.commit_index < index  # and its "acknowledgement" does not count
    assert a.strangers_dropped == 1
    assert a.status().strangers == (("c", NEW),)


def test_a_vote_request_from_another_database_moves_no_term() -> None:
    net = _pinned()
    b = net.cores["b"]
    term, vote = b.term, b.voted_for
    b.step(
        RequestVote(
            term=term + 5,
            sender="c",
            recipient="b",
            last_log_index=99,
            last_log_term=term,
            incarnation=NEW,
        )
    )
    assert (b.term, b.voted_for, b.has_ready()) == (term, vote, False)


def test_a_replaced_member_catching_up_votes_for_a_candidate_of_its_new_pin() -> None:
    """Found by the safety soak (seed 1002897): c was replaced and promoted, but its log
    stopped before the REPLACE entry, so the configuration it holds pins its old
    database. When c refused votes for that reason, a (leader) down left b -- whose
    configuration pins c's new database -- without a majority for good."""
    net = _pinned()
    a, b = net.cores["a"], net.cores["b"]
    c = net.wipe("c", NEW)
    assert c.membership.incarnations == ()  # the seed: it knows nothing yet
    net.tick_all(3)
    # The leader drops its answers: it probes with heartbeats and never sends it the log.
    assert net.cores["c"].last_index == 0
    assert a.status().strangers == (("c", NEW),)
    held = dict(net.disks["a"].entries)  # what c will have got of the log: up to here
    net.isolate("c")
    a.propose_conf_change(ConfChange(ChangeKind.REPLACE, "c"))
    net.deliver()
    a.propose_conf_change(ConfChange(ChangeKind.ADD_VOTER, "c"))
    net.deliver()
    assert dict(b.membership.incarnations)["c"] == NEW and "c" in b.membership.voters
    net.disks["c"].entries = held
    c = net.restart("c")
    assert c.status().strangers == (("c", NEW),)  # it knows its database is not c's yet
    net.isolate("a")
    net.recover_node("c")
    b.campaign()
    net.deliver()
    assert b.role is Role.LEADER  # with c's vote, counted: b pins c's new database
    assert net.cores["c"].status().strangers == ()  # and c now holds the REPLACE too


def test_replace_makes_the_member_a_learner_pinned_to_the_database_it_answers_from() -> None:
    net = _pinned()
    a = net.cores["a"]
    _answer(a, "c", NEW, reject=a.last_index)
    index = a.propose_conf_change(ConfChange(ChangeKind.REPLACE, "c"))
    m = a.membership
    assert (m.voters, m.learners) == (("a", "b"), ("c",))
    assert dict(m.incarnations)["c"] == NEW
    assert a.status().strangers == ()  # c is that database now
    net.isolate("c")
    net.deliver()
    assert a.commit_index >= index  # a and b: a majority of the two voters left
    with pytest.raises(ConfigError, match="nothing to replace"):
        a.propose_conf_change(ConfChange(ChangeKind.REPLACE, "a"))


def test_replace_of_a_member_not_heard_unpins_it_until_it_answers() -> None:
    m = membership(["a", "b", "c"], [], [("a", "a" * 32), ("c", "c" * 32)])
    replaced = ConfChange(ChangeKind.REPLACE, "c").applied_to(m)
    assert (replaced.voters, replaced.learners, replaced.incarnations) == (
        ("a", "b"),
        ("c",),
        (("a", "a" * 32),),
    )
    with pytest.raises(ConfigError, match="last voter"):
        ConfChange(ChangeKind.REPLACE, "a").applied_to(membership(["a"]))
    with pytest.raises(ConfigError, match="not a member"):
        ConfChange(ChangeKind.REPLACE, "z").applied_to(m)
    # Other changes keep every pin of the members that stay.
    assert ConfChange(ChangeKind.ADD_LEARNER, "d").applied_to(m).incarnations == m.incarnations
    assert ConfChange(ChangeKind.REMOVE, "c").applied_to(m).incarnations == (("a", "a" * 32),)


def test_pins_are_encoded_and_bad_ones_refused() -> None:
    m = membership(["a", "b"], ["c"], [("c", "c" * 32)])
    assert decode(encode(m)) == m
    assert b"incarnations" not in encode(membership(["a"]))  # what older versions wrote
    for bad in (
        b'{"voters": ["a"], "learners": [], "incarnations": []}',
        b'{"voters": ["a"], "learners": [], "incarnations": {"z": "' + b"0" * 32 + b'"}}',
        b'{"voters": ["a"], "learners": [], "incarnations": {"a": "not hex"}}',
        b'{"voters": ["a"], "learners": [], "incarnations": {"a": 7}}',
    ):
        with pytest.raises(ConfigError):
            decode(bad)


def test_messages_refuse_malformed_incarnations() -> None:
    with pytest.raises(ValidationError):
        RequestVoteReply(term=1, sender="a", recipient="b", granted=True, incarnation="x" * 32)
    base = dict(
        term=1,
        sender="a",
        recipient="b",
        last_index=1,
        last_term=1,
        voters=("a", "b"),
        size=1,
        offset=0,
        data=b"s",
        done=True,
        leader_commit=1,
    )
    InstallSnapshot(**base, incarnations=(("a", "a" * 32),))
    for pins in ((("z", "a" * 32),), (("a", "a" * 32), ("a", "b" * 32)), (("a", "A" * 32),)):
        with pytest.raises(ValidationError):
            InstallSnapshot(**base, incarnations=pins)


def test_a_member_named_a_stranger_is_no_longer_one_when_its_own_database_answers() -> None:
    """Found by the safety search's forging member: a message without (or with another)
    incarnation named a healthy member a stranger for good in the leader's status."""
    net = _pinned()
    a = net.cores["a"]
    _answer(a, "b", "")
    assert a.status().strangers == (("b", ""),)
    net.tick_all(2)  # heartbeats: b answers from its own database
    assert a.status().strangers == ()
    assert a.status().progress["b"].match == a.last_index  # and is counted again


def test_leadership_is_never_handed_to_a_member_on_another_database() -> None:
    net = _pinned()
    a = net.cores["a"]
    _answer(a, "b", NEW, reject=0)
    assert a.most_caught_up_peer() == "c"
    assert a.most_caught_up_peer(exclude=("c",)) is None
    with pytest.raises(ConfigError, match="another database"):
        a.transfer_leadership("b")


def test_a_member_added_again_is_pinned_to_the_database_that_holds_the_new_configuration() -> None:
    """Found by the safety search (seed 1276): c was removed, its old database kept
    answering as a departing member, then it was wiped and added again; the leader
    pinned what it had heard before -- the lost database -- so the new one was a
    stranger from the start, and a later removal left two voters, one of them it."""
    net = _pinned()
    a = net.cores["a"]
    a.propose_conf_change(ConfChange(ChangeKind.REMOVE, "c"))
    net.deliver()  # c's old database acknowledges its removal
    net.tick_all(2)
    c = net.wipe("c", NEW)
    net.isolate("c")
    index = a.propose_conf_change(ConfChange(ChangeKind.ADD_VOTER, "c"))
    net.deliver()
    # A late answer of the lost database, from before the change that added c again:
    _answer(a, "c", incarnation("c"), match=index - 1)
    net.tick_all(4)
    assert "c" not in dict(a.membership.incarnations)  # not pinned to what is gone
    net.recover_node("c")
    net.tick_all(6)
    assert dict(a.membership.incarnations)["c"] == NEW
    assert a.status().strangers == () and c.commit_index == a.commit_index
