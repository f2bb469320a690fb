"""Snapshots in the core (§7; thesis ch. 5): compaction, InstallSnapshot in chunks, the
SNAPSHOT state of Progress, and a follower that installs a snapshot and continues."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from pydantic import ValidationError

from raftmq.core import (
    MESSAGE_ADAPTER,
    AppendEntries,
    Entry,
    HardState,
    InitialState,
    InstallSnapshot,
    InstallSnapshotReply,
    LogReadResult,
    Message,
    RaftConfig,
    RaftCore,
    Role,
    Snapshot,
)
from raftmq.core.messages import MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_CHUNK, MAX_VOTERS
from raftmq.core.progress import Progress, ProgressState
from raftmq.errors import ConfigError

IDS = ("a", "b", "c")


def _chunk(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "type": "install_snapshot",
        "term": 3,
        "sender": "a",
        "recipient": "b",
        "last_index": 10,
        "last_term": 2,
        "voters": ["a", "b", "c"],
        "size": 8,
        "offset": 0,
        "data": "YWJjZA==",  # b"abcd", base64 as on the wire
        "done": False,
        "leader_commit": 10,
    }
    fields.update(overrides)
    return fields


# --------------------------------------------------------------------- message bounds


def test_install_snapshot_round_trips_through_json() -> None:
    """A valid chunk decodes to what was sent (the transport decodes by type)."""
    msg = MESSAGE_ADAPTER.validate_python(_chunk())
    assert isinstance(msg, InstallSnapshot)
    assert msg.data == b"abcd"
    assert MESSAGE_ADAPTER.validate_json(MESSAGE_ADAPTER.dump_json(msg)) == msg


@pytest.mark.parametrize(
    "hostile",
    [
        {"last_index": 0},  # a snapshot of nothing
        {"last_index": 2**63},  # past the largest index
        {"last_term": 0},
        {"last_term": 4},  # newer than the leader's term
        {"term": 2**63 - 1},  # no room to increment
        {"leader_commit": 9},  # covers uncommitted entries
        {"offset": -1},
        {"size": MAX_SNAPSHOT_BYTES + 1},
        {"offset": 6},  # 6 + 4 bytes past size 8
        {"done": True},  # done on a chunk that does not end the state
        {"offset": 4, "done": False},  # the chunk that ends it without done
        {"data": "", "offset": 0},  # an empty chunk of a non-empty snapshot
        {"voters": []},
        {"voters": ["a", "a"]},
        {"voters": ["a", "b c"]},  # not a node id
        {"voters": [f"n{i}" for i in range(MAX_VOTERS + 1)]},
        {"data": "!!!"},  # not base64
    ],
)
def test_hostile_install_snapshot_is_rejected_at_decode(hostile: dict[str, object]) -> None:
    """Every number is bounded and the chunk must fit its snapshot, so nothing the core does
    with an accepted one can fail later."""
    with pytest.raises(ValidationError):
        MESSAGE_ADAPTER.validate_python(_chunk(**hostile))


def test_a_chunk_larger_than_the_bound_is_rejected() -> None:
    """At most MAX_SNAPSHOT_CHUNK bytes per message."""
    big = b"x" * (MAX_SNAPSHOT_CHUNK + 1)
    with pytest.raises(ValidationError):
        InstallSnapshot(
            term=3,
            sender="a",
            recipient="b",
            last_index=10,
            last_term=2,
            voters=IDS,
            size=len(big),
            offset=0,
            data=big,
            done=True,
            leader_commit=10,
        )


@pytest.mark.parametrize(
    "hostile",
    [{"last_index": 0}, {"last_term": 0}, {"offset": MAX_SNAPSHOT_BYTES + 1}, {"offset": -5}],
)
def test_hostile_install_snapshot_reply_is_rejected(hostile: dict[str, object]) -> None:
    """The reply's index, term and offset are bounded too."""
    fields: dict[str, object] = {
        "type": "install_snapshot_reply",
        "term": 3,
        "sender": "b",
        "recipient": "a",
        "last_index": 10,
        "last_term": 2,
        "offset": 4,
    }
    fields.update(hostile)
    with pytest.raises(ValidationError):
        MESSAGE_ADAPTER.validate_python(fields)


def test_config_bounds_the_chunk_size_and_trailing_entries() -> None:
    """A configured chunk always fits a message; trailing entries are not negative."""
    with pytest.raises(ConfigError):
        RaftConfig("a", IDS, snapshot_chunk_bytes=MAX_SNAPSHOT_CHUNK + 1).validate()
    with pytest.raises(ConfigError):
        RaftConfig("a", IDS, trailing_entries=-1).validate()


# --------------------------------------------------------------------- Progress


def test_progress_snapshot_transitions() -> None:
    """etcd's StateSnapshot: entering it names the snapshot and lets a reply name its index;
    probing again forgets it."""
    pr = Progress(next_index=5)
    snapshot = Snapshot(index=20, term=3, voters=IDS, data=b"state")
    pr.become_snapshot(snapshot)
    assert pr.state is ProgressState.SNAPSHOT
    assert pr.pending is snapshot
    assert pr.sent == 20
    assert (pr.snap_sent, pr.snap_acked, pr.snap_reported) == (0, 0, 0)
    assert pr.view().state == "snapshot"
    pr.match = 20
    pr.become_probe()
    assert pr.view().state == "probe"
    assert pr.pending is None
    assert pr.next == 21


# --------------------------------------------------------------------- a two-node cluster


@dataclass
class Node:
    """One core and what its driver made durable (a minimal driver of the Ready contract)."""

    core: RaftCore
    log: dict[int, Entry] = field(default_factory=dict)
    hard: HardState = field(default_factory=HardState)
    state: list[Entry] = field(default_factory=list)  # the state machine: applied entries
    snapshot: Snapshot | None = None
    installed: int = 0  # snapshots installed from a leader

    def handle(self) -> list[Message]:
        out: list[Message] = []
        core = self.core
        while core.has_ready():
            rd = core.ready()
            if rd.hard_state is not None:
                self.hard = rd.hard_state
            if rd.snapshot is not None:
                self.snapshot = rd.snapshot
                self.log = {}
                self.state = _decode(rd.snapshot.data)
                self.installed += 1
            if rd.truncate_from is not None:
                self.log = {i: e for i, e in self.log.items() if i < rd.truncate_from}
            for ent in rd.entries:
                self.log[ent.index] = ent
            out.extend(rd.messages)
            assert not rd.committed_entries or rd.committed_entries[0].index == len(self.state) + 1
            self.state.extend(rd.committed_entries)
            core.advance(rd)
            for read in rd.reads:
                ents = tuple(self.log[i] for i in range(read.lo, read.hi + 1) if i in self.log)
                core.step_read(LogReadResult(read, ents))
        return out

    def take_snapshot(self) -> Snapshot:
        index = self.core.applied_index
        snapshot = self.core.take_snapshot(index, _encode(self.state[:index]))
        self.snapshot = snapshot
        self.log = {i: e for i, e in self.log.items() if i >= self.core.first_index}
        return snapshot


def _encode(entries: list[Entry]) -> bytes:
    return b"|".join(f"{e.index}:{e.term}:{int(e.kind)}:{e.data.hex()}".encode() for e in entries)


def _decode(data: bytes) -> list[Entry]:
    out = []
    for part in data.split(b"|") if data else []:
        index, term, kind, payload = part.decode().split(":")
        out.append(
            Entry(index=int(index), term=int(term), kind=int(kind), data=bytes.fromhex(payload))
        )
    return out


Filter = Callable[[Message], list[Message]]
"""What the wire does to one message: [] drops it, [m, m] duplicates it."""


class Pair:
    """A leader ``a`` and followers ``b`` and ``c`` wired by a hand-driven message pool."""

    def __init__(self, **config: object) -> None:
        self.config = {"pre_vote": False, "check_quorum": False, **config}
        self.nodes = {nid: Node(self._core(nid, None)) for nid in IDS}
        self.wire: Filter = lambda m: [m]
        self.seen: list[Message] = []

    def _core(self, nid: str, initial: InitialState | None) -> RaftCore:
        cfg = RaftConfig(node_id=nid, voters=IDS, **self.config)  # type: ignore[arg-type]
        return RaftCore(cfg, initial, seed=IDS.index(nid) + 1)

    def deliver(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            pool = [m for n in self.nodes.values() for m in n.handle()]
            if not pool:
                return
            for msg in pool:
                self.seen.append(msg)
                for copy in self.wire(msg):
                    self.nodes[copy.recipient].core.step(copy)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for node in self.nodes.values():
                node.core.tick()
            self.deliver()

    def restart(self, nid: str) -> None:
        node = self.nodes[nid]
        first = node.snapshot.index + 1 if node.snapshot is not None else 1
        if node.log:
            first = min(node.log)
        last = max(node.log) if node.log else first - 1
        runs: list[tuple[int, int]] = []
        for i in range(first, last + 1):
            if not runs or runs[-1][1] != node.log[i].term:
                runs.append((i, node.log[i].term))
        if first > 1 and node.snapshot is not None and first <= node.snapshot.index:
            runs.insert(0, (first - 1, node.core.log_term(first - 1)))
        initial = InitialState(
            hard_state=node.hard,
            first_index=first,
            last_index=last,
            term_runs=tuple(runs),
            tail=tuple(node.log[i] for i in range(first, last + 1)),
            applied=len(node.state),
            snapshot=node.snapshot,
        )
        node.core = self._core(nid, initial)

    def elect_a(self) -> None:
        self.nodes["a"].core.campaign()
        self.deliver()
        assert self.nodes["a"].core.role is Role.LEADER

    def propose(self, count: int) -> None:
        for i in range(count):
            self.nodes["a"].core.propose(f"w{i}".encode())
        self.deliver()


def test_leader_falls_back_to_a_snapshot_when_the_next_index_is_compacted() -> None:
    """§7: a leader that discarded the entries a follower needs sends its snapshot instead
    (Progress moves to SNAPSHOT), then replicates the entries after it."""
    pair = _lagging_pair(snapshot_chunk_bytes=16)
    a, b = pair.nodes["a"], pair.nodes["b"]
    snapshot = a.snapshot
    assert snapshot is not None
    assert a.core.first_index == snapshot.index + 1
    assert a.core.log_term(snapshot.index) == snapshot.term
    assert a.core.log_term(snapshot.index - 1) == 0  # compacted
    with pytest.raises(ValueError, match="applied"):
        a.core.take_snapshot(a.core.applied_index + 1, b"")
    # b's answers are lost: the leader stays in SNAPSHOT, sending chunks
    pair.wire = lambda m: [] if m.sender == "b" else [m]
    pair.tick(4)
    assert a.core.status().progress["b"].state == "snapshot"
    chunks = [m for m in pair.seen if isinstance(m, InstallSnapshot)]
    assert chunks, "the leader never sent its snapshot"
    assert all(len(m.data) <= 16 for m in chunks)
    assert all(m.last_index == snapshot.index and m.leader_commit >= m.last_index for m in chunks)
    pair.wire = lambda m: [m]
    pair.tick(10)
    status = a.core.status()
    assert b.installed == 1
    assert status.progress["b"].state == "replicate"
    assert status.progress["b"].match == a.core.last_index
    # the follower continues from snapshot.index + 1 and applies what follows
    assert b.core.first_index == snapshot.index + 1
    pair.propose(3)
    pair.tick(2)
    assert [e.data for e in b.state] == [e.data for e in a.state]
    assert b.core.applied_index == a.core.applied_index == a.core.last_index


def _lagging_pair(**config: object) -> Pair:
    """a leads (with c) a compacted log of 13 applied entries; b was cut off all along and
    is now back."""
    pair = Pair(trailing_entries=0, **config)
    pair.wire = lambda m: [] if "b" in (m.sender, m.recipient) else [m]
    pair.elect_a()
    pair.propose(12)
    pair.tick(2)
    a = pair.nodes["a"]
    assert a.core.applied_index == a.core.last_index == 13
    assert pair.nodes["b"].core.last_index == 0
    a.take_snapshot()
    pair.wire = lambda m: [m]
    return pair


def test_follower_installs_a_chunked_snapshot_despite_duplicates_and_reordering() -> None:
    """Duplicated and reordered chunks are harmless: the follower keeps the bytes it has in
    a row, says where it is, and installs exactly the leader's state (§7)."""
    pair = _lagging_pair(snapshot_chunk_bytes=5, max_inflight=4)
    held: list[Message] = []

    def shuffle(m: Message) -> list[Message]:
        if isinstance(m, InstallSnapshot):
            held.append(m)
            if len(held) >= 3:
                out = [held.pop(), held.pop(0), m]  # a late one, an early one, a duplicate
                return out
            return []
        return [m]

    pair.wire = shuffle
    pair.tick(40)
    pair.wire = lambda m: [m]
    pair.tick(10)
    a, b = pair.nodes["a"], pair.nodes["b"]
    assert b.installed == 1
    assert b.snapshot == a.snapshot
    assert b.state == a.state
    pair.propose(3)
    pair.tick(2)
    assert b.state == a.state and len(b.state) == a.core.last_index


def test_a_follower_restart_mid_transfer_restarts_it_and_a_lost_chunk_is_resent() -> None:
    """A follower that restarts loses the bytes it held (volatile) and answers 0; the leader
    starts over after a stall. A lost chunk is resent from where the follower says it is."""
    pair = _lagging_pair(snapshot_chunk_bytes=8, max_inflight=2)
    sent: list[InstallSnapshot] = []

    def lose_the_third(m: Message) -> list[Message]:
        if isinstance(m, InstallSnapshot):
            sent.append(m)
            if len(sent) == 3:
                return []
        return [m]

    pair.wire = lose_the_third
    a, b = pair.nodes["a"], pair.nodes["b"]
    for _ in range(3):
        a.core.tick()
        pair.deliver()
    assert b.installed == 0 and sent
    pair.restart("b")
    pair.wire = lambda m: [m]
    pair.tick(30)
    b = pair.nodes["b"]
    assert b.installed == 1
    assert b.state == a.state
    offsets = [m.offset for m in pair.seen if isinstance(m, InstallSnapshot)]
    assert offsets.count(sent[2].offset) >= 2, "the lost chunk was never resent"
    replies = [m for m in pair.seen if isinstance(m, InstallSnapshotReply) and not m.done]
    assert any(r.offset == 0 for r in replies), "the restarted follower never said 0"


def test_a_snapshot_whose_last_entry_the_follower_holds_keeps_its_log() -> None:
    """§7: "If existing log entry has same index and term as snapshot's last included entry,
    retain log entries following it": the follower only learns the commit."""
    pair = Pair()
    pair.elect_a()
    pair.propose(5)
    pair.tick(2)
    a, b = pair.nodes["a"], pair.nodes["b"]
    snapshot = a.take_snapshot()
    chunk = InstallSnapshot(
        term=a.core.term,
        sender="a",
        recipient="b",
        last_index=snapshot.index - 1,
        last_term=a.core.log_term(snapshot.index - 1),
        voters=IDS,
        size=1,
        offset=0,
        data=b"x",
        done=True,
        leader_commit=snapshot.index,
    )
    b.core.step(chunk)
    out = b.handle()
    assert b.installed == 0
    assert b.core.last_index == a.core.last_index
    assert any(isinstance(m, InstallSnapshotReply) and m.done for m in out)


def test_restart_from_a_snapshot_and_trailing_entries() -> None:
    """The core rebuilt from (snapshot, log after first_index - 1) knows the term at every
    index it holds, and at the one before its first (the snapshot's or a compacted entry's)."""
    snap = Snapshot(index=10, term=2, voters=IDS, data=b"s")
    ents = [Entry(index=i, term=3) for i in range(11, 14)]
    initial = InitialState(
        hard_state=HardState(term=3, commit=12),
        first_index=11,
        last_index=13,
        term_runs=((11, 3),),
        tail=tuple(ents),
        applied=10,
        snapshot=snap,
    )
    core = RaftCore(RaftConfig("b", IDS), initial)
    assert (core.first_index, core.last_index, core.last_term()) == (11, 13, 3)
    assert core.log_term(10) == 2 and core.log_term(9) == 0 and core.log_term(0) == 0
    assert [e.index for e in core.ready().committed_entries] == [11, 12]
    # an empty log after the snapshot: its last term is the snapshot's
    bare = RaftCore(
        RaftConfig("b", IDS),
        InitialState(HardState(term=3, commit=10), 11, 10, (), (), 10, snap),
    )
    assert (bare.last_index, bare.last_term()) == (10, 2)
    with pytest.raises(ConfigError):  # no term for index 10: no snapshot, no run
        RaftCore(RaftConfig("b", IDS), InitialState(HardState(term=3), 11, 13, ((11, 3),)))


def test_append_entries_below_the_first_index_are_matched_not_rejected() -> None:
    """Entries up to the snapshot are committed here, so a leader's older AppendEntries (a
    late one) matches them: the follower skips to its first index."""
    snap = Snapshot(index=10, term=2, voters=IDS, data=b"s")
    initial = InitialState(HardState(term=3, commit=10), 11, 10, (), (), 10, snap)
    core = RaftCore(RaftConfig("b", IDS), initial)
    ents = tuple(Entry(index=i, term=2 if i <= 10 else 3) for i in range(9, 13))
    core.step(
        AppendEntries(
            term=3,
            sender="a",
            recipient="b",
            prev_log_index=8,
            prev_log_term=2,
            entries=ents,
            leader_commit=12,
        )
    )
    rd = core.ready()
    assert [e.index for e in rd.entries] == [11, 12]
    replies = [m for m in rd.messages if m.type == "append_entries_reply"]
    assert replies and replies[0].success and replies[0].match_index == 12


def test_the_bytes_in_flight_of_a_transfer_are_bounded_whatever_max_inflight_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding (benchmarks/retention.py): max_inflight (64) 1 MiB chunks were queued at
    once, more than a follower decodes before Raft messages expire on the broker, and a
    100 MB state moved at 1-2 MB/s. The window is SNAPSHOT_WINDOW_BYTES (one chunk at
    least), and it still moves as the follower acknowledges."""
    from raftmq.core import snapshots

    monkeypatch.setattr(snapshots, "SNAPSHOT_WINDOW_BYTES", 10)  # two 5-byte chunks
    pair = _lagging_pair(snapshot_chunk_bytes=5, max_inflight=64)
    a, b = pair.nodes["a"], pair.nodes["b"]
    assert a.snapshot is not None and len(a.snapshot.data) > 4 * 5
    pair.wire = lambda m: [] if m.sender == "b" else [m]  # b's answers are lost
    pair.tick(6)
    chunks = [m for m in pair.seen if isinstance(m, InstallSnapshot)]
    assert chunks and {m.offset for m in chunks} == {0, 5}  # two chunks (resent), not 64
    pair.wire = lambda m: [m]
    pair.tick(12)
    assert b.installed == 1 and b.core.first_index == a.snapshot.index + 1
