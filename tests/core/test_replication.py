"""Paper tests for log replication and commitment (§5.3, §5.4.2, Fig. 7, Fig. 8)."""

from __future__ import annotations

from raftmq.core import (
    AppendEntries,
    AppendEntriesReply,
    HardState,
    RequestVoteReply,
    Role,
)
from raftmq.core.raft import RaftCore
from tests.core.harness import Network, entry, flush, log_state, sent, single, with_disk


def append(
    prev_index: int,
    prev_term: int,
    entries: list[tuple[int, int]],
    commit: int,
    term: int = 5,
) -> AppendEntries:
    return AppendEntries(
        term=term,
        sender="b",
        recipient="a",
        prev_log_index=prev_index,
        prev_log_term=prev_term,
        entries=tuple(entry(i, t) for i, t in entries),
        leader_commit=commit,
    )


def replies(core: RaftCore) -> list[AppendEntriesReply]:
    return [m for m in sent(flush(core)) if isinstance(m, AppendEntriesReply)]


def terms(core: RaftCore) -> list[int]:
    return [core.log_term(i) for i in range(1, core.last_index + 1)]


def make_leader(core: RaftCore) -> None:
    """Win an election by hand: pre-vote and vote grants from b."""
    core.campaign()
    term = core.term + 1
    core.step(
        RequestVoteReply(term=term, sender="b", recipient=core.id, granted=True, pre_vote=True)
    )
    core.step(RequestVoteReply(term=term, sender="b", recipient=core.id, granted=True))
    assert core.role is Role.LEADER


def test_leader_commits_once_a_majority_stores_the_entry() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers"; not before."""
    net = Network(["a", "b", "c", "d", "e"])
    net.elect("a")
    leader = net.cores["a"]
    for nid in ("c", "d", "e"):
        net.isolate(nid)
    index = leader.propose(b"x")
    net.deliver()
    assert leader.commit_index < index  # a and b: 2 of 5
    net.down.discard("c")
    net.tick_all(8)  # c lost the append: the leader notices the stalled pipeline and probes
    assert leader.commit_index == index  # a, b, c: a majority
    assert net.applied_data("a") == [b"x"]


def test_leader_only_commits_entries_of_its_current_term() -> None:
    """§5.4.2 / Fig. 8: "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by counting";
    older entries become committed indirectly (Log Matching)."""
    core = single("a", initial=log_state([(1, 1), (2, 2)], term=3))
    make_leader(core)
    assert (core.term, core.last_index, core.log_term(3)) == (4, 3, 4)  # no-op of term 4
    flush(core)
    # b (and so a majority) holds index 2, an entry of term 2: not committed by counting
    core.step(AppendEntriesReply(term=4, sender="b", recipient="a", success=True, match_index=2))
    core.step(AppendEntriesReply(term=4, sender="c", recipient="a", success=True, match_index=2))
    assert core.commit_index == 0
    # once the term-4 entry is on a majority, everything up to it is committed
    core.step(AppendEntriesReply(term=4, sender="b", recipient="a", success=True, match_index=3))
    assert core.commit_index == 3


def test_match_index_never_moves_backwards() -> None:
    """§5.3 Fig. 2: matchIndex "increases monotonically"; a stale, reordered success reply
    with a lower index changes nothing."""
    core = single("a", initial=log_state([(1, 1), (2, 1)], term=1))
    make_leader(core)
    flush(core)
    core.step(AppendEntriesReply(term=2, sender="b", recipient="a", success=True, match_index=3))
    core.step(AppendEntriesReply(term=2, sender="b", recipient="a", success=True, match_index=1))
    assert core.status().progress["b"].match == 3
    assert core.commit_index == 3


def test_follower_commit_is_min_of_leader_commit_and_last_new_entry() -> None:
    """§5.3 Fig. 2 AppendEntries rule 5: "If leaderCommit > commitIndex, set commitIndex =
    min(leaderCommit, index of last new entry)" — entries past it may not match the leader."""
    core = single("a", initial=log_state([(1, 1), (2, 1), (3, 1)], term=1))
    core.step(append(1, 1, [(2, 1)], commit=3))
    assert core.commit_index == 2  # index 3 is held but not vouched for by this message
    core.step(append(0, 0, [(1, 1), (2, 1), (3, 1)], commit=1))
    assert core.commit_index == 2  # commit never decreases
    core.step(append(3, 1, [], commit=3))
    assert core.commit_index == 3
    assert [m.match_index for m in replies(core)] == [2, 3, 3]


def test_conflicting_suffix_is_truncated() -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it" — and persist that."""
    core = single("a", initial=log_state([(1, 1), (2, 1), (3, 2), (4, 2)], term=2))
    core.step(append(2, 1, [(3, 3)], commit=0))
    rd = core.ready()
    assert rd.truncate_from == 3
    assert [(e.index, e.term) for e in rd.entries] == [(3, 3)]
    core.advance(rd)
    assert terms(core) == [1, 1, 3]
    assert [
        (m.success, m.match_index) for m in rd.messages if isinstance(m, AppendEntriesReply)
    ] == [(True, 3)]


def test_redelivered_prefix_does_not_truncate() -> None:
    """§5.3: only a *conflicting* entry causes deletion: a delayed or duplicated
    AppendEntries whose entries are all held must not cut off later entries."""
    core = single("a", initial=log_state([(1, 1), (2, 1), (3, 1), (4, 1)], term=1))
    core.step(append(1, 1, [(2, 1), (3, 1)], commit=0, term=1))
    rd = core.ready()
    assert rd.truncate_from is None and rd.entries == ()
    core.advance(rd)
    assert terms(core) == [1, 1, 1, 1]
    assert [
        (m.success, m.match_index) for m in rd.messages if isinstance(m, AppendEntriesReply)
    ] == [(True, 3)]


def test_consistency_check_rejects_with_conflict_hint() -> None:
    """§5.3: the follower refuses entries when it has no entry at prevLogIndex with
    prevLogTerm, and (end of §5.3) reports the conflicting term and its first index."""
    core = single("a", initial=log_state([(1, 1), (2, 2), (3, 2), (4, 2)], term=2))
    core.step(append(4, 3, [(5, 3)], commit=0))
    core.step(append(7, 3, [(8, 3)], commit=0))
    got = [(r.success, r.reject_index, r.conflict_term, r.conflict_index) for r in replies(core)]
    assert got == [(False, 4, 2, 2), (False, 7, 0, 5)]
    assert core.last_index == 4


FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "fa": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "fb": [1, 1, 1, 4],
    "fc": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "fd": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "fe": [1, 1, 1, 4, 4, 4, 4],
    "ff": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def test_figure7_divergent_followers_converge() -> None:
    """Fig. 7 / §5.3: whatever the followers' logs (missing entries (a)-(b), extra
    uncommitted entries (c)-(d), both (e)-(f)), the leader of term 8 forces them to
    duplicate its own log."""
    ids = ["ldr", *FIG7_FOLLOWERS]
    net = Network(ids)
    logs = {"ldr": FIG7_LEADER, **FIG7_FOLLOWERS}
    for nid, ts in logs.items():
        ents = [entry(i, t, f"{i}@{t}".encode()) for i, t in enumerate(ts, start=1)]
        with_disk(net, nid, ents, HardState(term=ts[-1] if nid != "ldr" else 7))
    net.elect("ldr")
    assert net.leaders() == ["ldr"]
    assert net.cores["ldr"].term == 8
    net.tick_all(6)
    want = net.log_of("ldr")
    assert [t for _, t, _ in want] == [*FIG7_LEADER, 8]
    for nid in FIG7_FOLLOWERS:
        assert net.log_of(nid) == want, nid
        assert net.cores[nid].commit_index == 11


def test_fast_backtracking_skips_a_term_per_round_trip() -> None:
    """§5.3 (end): with the conflicting term and its first index in the rejection, "one
    AppendEntries RPC will be required for each term with conflicting entries, rather
    than one RPC per entry"."""
    net = Network(["a", "b", "c"])
    leader_log = [entry(1, 1)] + [entry(i, 4) for i in range(2, 102)]
    follower_log = [entry(1, 1)] + [entry(i, 2) for i in range(2, 52)]
    follower_log += [entry(i, 3) for i in range(52, 102)]
    with_disk(net, "a", leader_log, HardState(term=4))
    with_disk(net, "c", leader_log, HardState(term=4))
    with_disk(net, "b", follower_log, HardState(term=4))
    net.elect("a")
    net.tick_all(4)
    rejects = [m for m in net.sent if isinstance(m, AppendEntriesReply) and not m.success]
    assert len([m for m in rejects if m.sender == "b"]) == 2  # terms 3 and 2, not 100 entries
    assert net.log_of("b") == net.log_of("a")


def test_fast_backtracking_uses_leader_entries_of_conflict_term() -> None:
    """§5.3 hint, leader side: if the leader has entries of the follower's conflicting term
    it resumes right after its own last entry of that term (one rejection in total)."""
    net = Network(["a", "b", "c"])
    leader_log = [entry(1, 1)] + [entry(i, 2) for i in range(2, 12)]
    leader_log += [entry(i, 4) for i in range(12, 22)]
    follower_log = [entry(1, 1)] + [entry(i, 2) for i in range(2, 32)]
    with_disk(net, "a", leader_log, HardState(term=4))
    with_disk(net, "c", leader_log, HardState(term=4))
    with_disk(net, "b", follower_log, HardState(term=4))
    net.elect("a")
    net.tick_all(4)
    rejects = [m for m in net.sent if isinstance(m, AppendEntriesReply) and not m.success]
    assert [(m.conflict_term, m.conflict_index) for m in rejects if m.sender == "b"] == [(2, 2)]
    assert net.log_of("b") == net.log_of("a")


def test_inflight_window_bounds_pipelining() -> None:
    """Thesis §10.2.1 pipelining: a follower in replicate state receives at most
    max_inflight unacknowledged AppendEntries; acks open the window again."""
    net = Network(["a", "b", "c"], max_inflight=4, max_batch_entries=1)
    net.elect("a")
    net.tick_all(2)
    leader = net.cores["a"]
    assert leader.status().progress["b"].state == "replicate"
    for n in range(20):
        leader.propose(b"%d" % n)
    to_b = [m for m in sent([leader.ready()]) if m.recipient == "b"]
    with_entries = [m for m in to_b if isinstance(m, AppendEntries) and m.entries]
    assert len(with_entries) == 4
    net.deliver()
    net.tick_all(2)
    assert leader.commit_index == leader.last_index
    assert net.applied_data("b") == [b"%d" % n for n in range(20)]


def test_batching_respects_entry_and_byte_limits() -> None:
    """Batches are bounded by max_batch_entries and max_batch_bytes (at least one entry
    always goes, even when it alone exceeds the byte limit)."""
    net = Network(["a", "b", "c"], max_batch_entries=10, max_batch_bytes=250)
    net.elect("a")
    net.tick_all(2)
    leader = net.cores["a"]
    leader.propose_batch([b"s" * 10] * 30)
    leader.propose_batch([b"m" * 100] * 10)
    leader.propose(b"L" * 1000)
    net.deliver()
    appends = [m for m in net.sent if isinstance(m, AppendEntries) and m.entries]
    for m in appends:
        assert len(m.entries) <= 10
        size = sum(len(e.data) for e in m.entries)
        assert size <= 250 or len(m.entries) == 1
    assert max(len(m.entries) for m in appends) == 10
    assert any(len(e.data) == 1000 for m in appends for e in m.entries)
    net.tick_all(2)
    assert net.log_of("b") == net.log_of("a")


def test_lagging_follower_is_served_from_storage_reads() -> None:
    """Memory rule: the core keeps only max_cached_entries applied entries; a follower far
    behind gets older entries through Ready.reads / step_read, then catches up (§5.3)."""
    net = Network(["a", "b", "c"], max_cached_entries=5, max_batch_entries=16)
    net.elect("a")
    net.isolate("c")
    leader = net.cores["a"]
    for n in range(100):
        leader.propose(b"%d" % n)
        net.deliver()
    net.tick_all(2)
    assert leader.applied_index == 101
    net.recover()
    net.tick_all(6)
    reads = [r for rd in net.readies["a"] for r in rd.reads]
    assert reads and all(r.peer == "c" and r.hi - r.lo < 16 for r in reads)
    assert net.log_of("c") == net.log_of("a")
    assert net.applied_data("c") == [b"%d" % n for n in range(100)]


def test_restart_with_short_tail_reads_committed_entries_to_apply() -> None:
    """After a restart InitialState.tail may not reach back to applied + 1: the core asks
    storage for the committed entries it must apply (LogRead with peer None)."""
    net = Network(["a", "b", "c"])
    ents = [entry(i, 1, b"%d" % i) for i in range(1, 41)]
    disk = net.disks["a"]
    disk.entries = {e.index: e for e in ents}
    disk.hard_state = HardState(term=1, commit=30)
    net.restart("a", tail=3)
    net.drain("a")
    reads = [r for rd in net.readies["a"] for r in rd.reads]
    assert reads and all(r.peer is None for r in reads)
    assert [e.index for e in disk.applied] == list(range(1, 31))


def test_probe_sends_one_message_per_heartbeat() -> None:
    """Probe state (etcd Progress): while a follower does not answer, the leader sends it
    one AppendEntries per heartbeat interval, not one per proposal."""
    net = Network(["a", "b", "c"], election_ticks=10, heartbeat_ticks=2)
    net.isolate("c")
    net.elect("a")
    leader = net.cores["a"]

    def appends_to_c() -> list[AppendEntries]:
        msgs = [m for rd in net.readies["a"] for m in rd.messages if m.recipient == "c"]
        return [m for m in msgs if isinstance(m, AppendEntries)]

    before = len(appends_to_c())
    for n in range(20):
        leader.propose(b"%d" % n)
        leader.tick()
        net.deliver()
    to_c = appends_to_c()
    assert before == 1  # the first probe at election time
    assert len(to_c) - before == 10  # 20 ticks / heartbeat of 2
    assert leader.status().progress["c"].state == "probe"
    assert leader.status().progress["b"].match == leader.last_index


def test_commit_quorum_is_generic_over_the_voter_set() -> None:
    """§5.3 majority over the configured voter set (a configuration is data, §6): with 4
    voters a majority is 3, with 5 it is 3."""
    for ids, needed in ((["a", "b", "c", "d"], 3), (["a", "b", "c", "d", "e"], 3)):
        net = Network(ids)
        net.elect("a")
        leader = net.cores["a"]
        for nid in ids[needed:]:
            net.isolate(nid)
        net.isolate(ids[needed - 1])
        index = leader.propose(b"q")
        net.deliver()
        assert leader.commit_index < index
        net.down.discard(ids[needed - 1])
        net.tick_all(8)
        assert leader.commit_index == index


def test_misaddressed_messages_are_ignored() -> None:
    """Messages for another node change nothing."""
    core = single("a")
    before = core.status()
    core.step(append(0, 0, [(1, 7)], commit=1, term=7).model_copy(update={"recipient": "z"}))
    assert core.status() == before
    assert not core.has_ready()


def test_a_leader_outside_our_configuration_is_followed() -> None:
    """Thesis §4.2: our configuration may be behind the leader's (it added us, or others,
    in entries we have not received yet), so the leader of the highest term is followed
    whoever it is; only voters' answers count (raftmq.core.membership), and the transport
    admits only holders of the cluster key."""
    core = single("a")
    core.step(append(0, 0, [(1, 7)], commit=1, term=7).model_copy(update={"sender": "zz"}))
    assert (core.term, core.leader_id, core.last_index) == (7, "zz", 1)


def test_status_reports_progress_on_the_leader() -> None:
    """CoreStatus carries per-follower match/next/state on the leader only."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.tick_all(2)
    st = net.cores["a"].status()
    assert st.role is Role.LEADER and set(st.progress) == {"b", "c"}
    assert all(
        p.match == 1 and p.next == 2 and p.state == "replicate" for p in st.progress.values()
    )
    assert net.cores["b"].status().progress == {}


def test_figure8_old_term_entry_on_a_majority_can_still_be_overwritten() -> None:
    """Fig. 8 (a)-(d): an entry of an older term stored on a majority is *not* committed
    (a leader of a later term may overwrite it), which is why §5.4.2 commits only
    current-term entries by counting."""
    ids = ["s1", "s2", "s3", "s4", "s5"]
    net = Network(ids, pre_vote=False, check_quorum=False, max_batch_entries=1)
    net.elect("s1")  # term 1, no-op at index 1 committed everywhere
    net.tick_all(2)
    # (a) s1 replicates index 2 (term 1) to s2 only
    for nid in ("s3", "s4", "s5"):
        net.isolate(nid)
    net.cores["s1"].propose(b"fig8")
    net.deliver()
    # (b) s1 crashes; s5 wins term 2 with s3, s4 and stores its no-op at index 2 alone
    net.recover()
    net.restart("s1")
    net.isolate("s1")
    net.isolate("s2")
    net.filter = lambda m: m.sender == "s5" and isinstance(m, AppendEntries)
    net.elect("s5")
    assert net.cores["s5"].role is Role.LEADER and net.cores["s5"].log_term(2) == 2
    # (c) s5 crashes; s1 wins term 3 and copies index 2 (term 1) to s3
    net.recover()
    net.restart("s5")
    net.isolate("s5")
    net.isolate("s4")
    # s2 never receives s1's no-op (index 3): only s1 and s3 hold it, not a majority
    net.filter = lambda m: (
        isinstance(m, AppendEntries)
        and m.recipient == "s2"
        and any(e.index >= 3 for e in m.entries)
    )
    net.elect("s1")  # term 2: s3 already voted for s5 in term 2
    net.elect("s1")  # term 3
    s1 = net.cores["s1"]
    assert s1.role is Role.LEADER and s1.term == 3
    assert [net.cores[n].log_term(2) for n in ("s1", "s2", "s3")] == [1, 1, 1]  # a majority
    assert s1.commit_index == 1  # ... and still not committed
    # (d) s1 crashes; s5 (last term 2) wins with s2, s3, s4 and overwrites index 2
    net.recover()
    net.restart("s1")
    net.isolate("s1")
    for _ in range(3):
        net.elect("s5")
        if net.cores["s5"].role is Role.LEADER:
            break
    assert net.cores["s5"].role is Role.LEADER
    net.tick_all(4)
    for nid in ("s2", "s3", "s4"):
        assert net.cores[nid].log_term(2) == 2
        assert b"fig8" not in net.applied_data(nid)
