"""Randomized message orders never violate Raft's safety properties (§5.2, §5.4, Fig. 3).

Hypothesis drives a 3-node cluster with arbitrary interleavings of ticks, deliveries
(in any order), drops, duplicates, proposals and crash/restarts; after every step the
Fig. 3 properties are checked: Election Safety, Log Matching, Leader Completeness and
State Machine Safety, plus monotonic commit. Each node's Readies are carried out in
production's order (raftmq.node.driver), the commit-only hard state deferred as there.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.core import Entry, LogRead, LogReadResult, Message, Role
from raftmq.node.driver import Apply, Persist, ReadyDriver, Send
from raftmq.storage.port import PersistBatch
from tests.core.harness import Disk, Network

IDS = ("a", "b", "c")

action = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from(IDS), st.integers(1, 12)),
    st.tuples(st.just("deliver"), st.integers(0, 1000), st.integers(1, 6)),
    st.tuples(st.just("drop"), st.integers(0, 1000), st.just(1)),
    st.tuples(st.just("dup"), st.integers(0, 1000), st.just(1)),
    st.tuples(st.just("propose"), st.sampled_from(IDS), st.integers(1, 3)),
    st.tuples(st.just("restart"), st.sampled_from(IDS), st.integers(0, 4)),
)


class DrivenNetwork(Network):
    """The harness network with every Ready carried out by production's driver: the
    deferred bookkeeping (a commit-only hard state) is saved with the node's next save and
    lost when it restarts first."""

    def __init__(self, ids: tuple[str, ...], **config: Any) -> None:
        super().__init__(ids, **config)
        self.drivers = {nid: ReadyDriver((0, None)) for nid in self.ids}

    def restart(self, nid: str, tail: int | None = None, *, keep_messages: bool = False) -> Any:
        core = super().restart(nid, tail, keep_messages=keep_messages)
        hard = self.disks[nid].hard_state
        self.drivers[nid] = ReadyDriver((hard.term, hard.voted_for))
        return core

    def drain(self, nid: str) -> list[Message]:
        core, disk, driver = self.cores[nid], self.disks[nid], self.drivers[nid]
        out: list[Message] = []
        while core.has_ready():
            rd = core.ready()
            for step in driver.plan(rd):
                if isinstance(step, Send):
                    out.extend(step.messages)
                elif isinstance(step, Apply):
                    disk.applied.extend(step.entries)  # the applied list is saved at once
                    driver.defer(PersistBatch(hard_state=step.hard_state))
                elif isinstance(step, Persist):
                    _save(disk, driver.to_save(step))
                else:
                    core.advance(rd)
                    for read in rd.reads:
                        core.step_read(LogReadResult(read, _read(disk, read)))
        return out


def _save(disk: Disk, batch: PersistBatch) -> None:
    if batch.hard_state is not None:
        disk.hard_state = batch.hard_state
    for idx in [i for i in disk.entries if batch.truncate_from and i >= batch.truncate_from]:
        del disk.entries[idx]
    for ent in batch.entries:
        disk.entries[ent.index] = ent


def _read(disk: Disk, read: LogRead) -> tuple[Entry, ...]:
    ents: list[Entry] = []
    size = 0
    for idx in range(read.lo, read.hi + 1):
        ent = disk.entries.get(idx)
        if ent is None or (ents and size + len(ent.data) > read.max_bytes):
            break
        ents.append(ent)
        size += len(ent.data)
    return tuple(ents)


class Checker:
    """Fig. 3 properties over the whole history of one run."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.leader_of_term: dict[int, str] = {}
        self.commit_term: dict[tuple[int, int], int] = {}  # (index, term) -> term when seen applied
        self.commits = {nid: 0 for nid in IDS}

    def check(self) -> None:
        net = self.net
        max_term = max(c.term for c in net.cores.values())
        for nid, core in net.cores.items():
            if core.role is Role.LEADER:
                # Election Safety: at most one leader per term
                assert self.leader_of_term.setdefault(core.term, nid) == nid
            assert core.commit_index >= self.commits[nid], "commit went backwards"
            self.commits[nid] = core.commit_index
            assert core.applied_index <= core.commit_index <= core.last_index
        logs = {nid: net.log_of(nid) for nid in IDS}
        # Log Matching: same index and term => identical prefixes
        for x in IDS:
            for y in IDS:
                if x >= y:
                    continue
                lx, ly = logs[x], logs[y]
                common = min(len(lx), len(ly))
                for i in range(common - 1, -1, -1):
                    if lx[i][1] == ly[i][1]:
                        assert lx[: i + 1] == ly[: i + 1], f"log matching {x} {y} at {i + 1}"
                        break
        # State Machine Safety: applied sequences are prefixes of one another
        applied = {nid: [(e.index, e.term, e.data) for e in net.disks[nid].applied] for nid in IDS}
        longest = max(applied.values(), key=len)
        for seq in applied.values():
            assert seq == longest[: len(seq)], "state machine safety"
        for index, term, _ in longest:
            self.commit_term.setdefault((index, term), max_term)
        # Leader Completeness: leaders of later terms hold every committed entry
        for core in net.cores.values():
            if core.role is not Role.LEADER:
                continue
            for (index, term), seen in self.commit_term.items():
                if core.term > seen:
                    assert core.log_term(index) == term, "leader completeness"


FLAGS = st.sampled_from([(True, True), (False, False), (True, False), (False, True)])


@settings(max_examples=200, deadline=None)
@given(st.lists(action, min_size=20, max_size=250), st.integers(0, 3), FLAGS)
def test_random_schedules_are_safe(
    actions: list[tuple[str, object, int]], seed: int, flags: tuple[bool, bool]
) -> None:
    """Fig. 3: the safety properties hold for any message order, loss and duplication,
    with and without pre-vote and check-quorum."""
    pre_vote, check_quorum = flags
    net = DrivenNetwork(
        IDS,
        seed=seed,
        election_ticks=4,
        heartbeat_ticks=1,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        max_cached_entries=2,  # lagging followers are served through LogRead
        max_batch_entries=3,
    )
    checker = Checker(net)
    counter = 0
    for kind, arg, n in actions:
        net.collect()
        if kind == "tick":
            assert isinstance(arg, str)
            net.tick(arg, n)
        elif kind in ("deliver", "drop", "dup") and net.pending:
            assert isinstance(arg, int)
            for _ in range(n):
                if not net.pending:
                    break
                msg = net.pending[arg % len(net.pending)]
                if kind != "dup":
                    net.pending.remove(msg)
                if kind != "drop":
                    net.cores[msg.recipient].step(msg)
                net.collect()
        elif kind == "propose":
            assert isinstance(arg, str)
            core = net.cores[arg]
            if core.role is Role.LEADER:
                counter += 1
                core.propose_batch([b"%d" % (counter * 10 + k) for k in range(n)])
        elif kind == "restart":
            assert isinstance(arg, str)
            net.restart(arg, tail=n, keep_messages=True)
            checker.commits[arg] = net.cores[arg].commit_index
        net.collect()
        checker.check()
