"""A tiny in-test router for driving RaftCore instances directly (etcd's ``network``).

No clocks and no sleeps: messages move only when a test calls :meth:`Network.deliver`,
time moves only when it calls ``tick``. Each node has a minimal in-memory "disk"
(hard state + entries) so that restarts rebuild a core from persisted state alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from raftmq.core import (
    Entry,
    HardState,
    InitialState,
    LogReadResult,
    Message,
    RaftConfig,
    RaftCore,
    Ready,
)


@dataclass
class Disk:
    """What one node has persisted (what survives a crash)."""

    hard_state: HardState = field(default_factory=HardState)  # last persisted hard state
    entries: dict[int, Entry] = field(default_factory=dict)  # index -> entry, contiguous from 1
    applied: list[Entry] = field(default_factory=list)  # entries applied, in order
    incarnation: str = ""  # this disk's database id (raftmq.core.membership)

    def last_index(self) -> int:
        """Highest persisted index (0 when empty)."""
        return max(self.entries, default=0)

    def save(self, rd: Ready) -> None:
        """Persist one Ready the way a driver must (hard state, truncate, append)."""
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.truncate_from is not None:
            for idx in [i for i in self.entries if i >= rd.truncate_from]:
                del self.entries[idx]
        for ent in rd.entries:
            for idx in [i for i in self.entries if i >= ent.index]:
                del self.entries[idx]
            self.entries[ent.index] = ent

    def initial(self, tail: int | None = None) -> InitialState:
        """The InitialState a restart loads; ``tail`` limits how many entries are cached."""
        last = self.last_index()
        runs: list[tuple[int, int]] = []
        for idx in range(1, last + 1):
            term = self.entries[idx].term
            if not runs or runs[-1][1] != term:
                runs.append((idx, term))
        lo = 1 if tail is None else max(1, last - tail + 1)
        applied = self.applied[-1].index if self.applied else 0
        return InitialState(
            hard_state=self.hard_state,
            first_index=1,
            last_index=last,
            term_runs=tuple(runs),
            tail=tuple(self.entries[i] for i in range(lo, last + 1)),
            applied=applied,
            config_entries=tuple(e for _, e in sorted(self.entries.items()) if e.kind == 2),
            incarnation=self.incarnation,
        )


class Network:
    """Cores plus a message pool; tests choose what is delivered, dropped or cut."""

    def __init__(
        self, ids: Iterable[str], *, seed: int = 1, incarnations: bool = False, **config: Any
    ) -> None:
        """``incarnations``: each disk has an incarnation id (so leaders pin members:
        a configuration entry appears after each leader's first commit); off, the
        cores run as with a store that keeps none, and logs hold what tests propose."""
        self.ids = tuple(ids)
        self.config = config
        self.seed = seed
        self.disks = {
            nid: Disk(incarnation=incarnation(nid) if incarnations else "") for nid in self.ids
        }
        self.cores = {nid: self._core(nid, None) for nid in self.ids}
        self.pending: list[Message] = []  # produced, not yet delivered
        self.cut: set[frozenset[str]] = set()  # links that drop everything
        self.down: set[str] = set()  # isolated nodes
        self.readies: dict[str, list[Ready]] = {nid: [] for nid in self.ids}  # trace
        self.sent: list[Message] = []  # every message delivered (for counting)
        self.filter: Callable[[Message], bool] | None = None  # extra drop rule

    def _core(self, nid: str, initial: InitialState | None) -> RaftCore:
        cfg = RaftConfig(node_id=nid, voters=self.ids, **self.config)
        if initial is None:
            initial = InitialState(incarnation=self.disks[nid].incarnation)
        return RaftCore(cfg, initial, seed=self.seed * 1000 + self.ids.index(nid))

    def wipe(self, nid: str, new_incarnation: str) -> RaftCore:
        """Crash ``nid`` and lose its disk: it restarts empty under ``new_incarnation``."""
        self.disks[nid] = Disk(incarnation=new_incarnation)
        return self.restart(nid)

    def restart(
        self, nid: str, tail: int | None = None, *, keep_messages: bool = False
    ) -> RaftCore:
        """Crash ``nid`` (losing everything unpersisted) and rebuild it from its disk."""
        if not keep_messages:
            self.pending = [m for m in self.pending if nid not in (m.sender, m.recipient)]
        self.cores[nid] = self._core(nid, self.disks[nid].initial(tail))
        return self.cores[nid]

    def drain(self, nid: str) -> list[Message]:
        """Run the driver loop of one node: persist, serve reads, apply, advance."""
        core = self.cores[nid]
        disk = self.disks[nid]
        out: list[Message] = []
        while core.has_ready():
            rd = core.ready()
            self.readies[nid].append(rd)
            disk.save(rd)
            out.extend(rd.messages)
            disk.applied.extend(rd.committed_entries)
            core.advance(rd)
            for read in rd.reads:
                ents: list[Entry] = []
                size = 0
                for idx in range(read.lo, read.hi + 1):
                    ent = disk.entries.get(idx)
                    if ent is None or (ents and size + len(ent.data) > read.max_bytes):
                        break
                    ents.append(ent)
                    size += len(ent.data)
                core.step_read(LogReadResult(read, tuple(ents)))
        return out

    def _blocked(self, msg: Message) -> bool:
        if msg.sender in self.down or msg.recipient in self.down:
            return True
        if frozenset((msg.sender, msg.recipient)) in self.cut:
            return True
        return self.filter is not None and self.filter(msg)

    def collect(self) -> None:
        """Drain every node into the pending pool."""
        for nid in self.ids:
            self.pending.extend(m for m in self.drain(nid) if not self._blocked(m))

    def deliver(self, max_rounds: int = 10_000) -> int:
        """Deliver until quiet (or ``max_rounds``); return the number of messages delivered."""
        count = 0
        for _ in range(max_rounds):
            self.collect()
            if not self.pending:
                return count
            batch, self.pending = self.pending, []
            for msg in batch:
                if self._blocked(msg):
                    continue
                self.sent.append(msg)
                self.cores[msg.recipient].step(msg)
                count += 1
        return count

    def tick(self, nid: str, n: int = 1) -> None:
        """Tick one node ``n`` times (no delivery)."""
        for _ in range(n):
            self.cores[nid].tick()

    def tick_all(self, n: int = 1, *, deliver: bool = True) -> None:
        """Tick every node ``n`` times (isolated ones too), delivering after each tick."""
        for _ in range(n):
            for nid in self.ids:
                self.cores[nid].tick()
            if deliver:
                self.deliver()

    def elect(self, nid: str) -> None:
        """Make ``nid`` campaign and deliver until quiet."""
        self.cores[nid].campaign()
        self.deliver()

    def isolate(self, nid: str) -> None:
        """Drop everything to and from ``nid``."""
        self.down.add(nid)

    def recover_node(self, nid: str) -> None:
        """Stop isolating ``nid``."""
        self.down.discard(nid)

    def recover(self) -> None:
        """Heal all cuts and isolations."""
        self.down.clear()
        self.cut.clear()
        self.filter = None

    def cut_link(self, a: str, b: str) -> None:
        """Drop everything between ``a`` and ``b``."""
        self.cut.add(frozenset((a, b)))

    def leaders(self) -> list[str]:
        """Ids of nodes that currently think they lead."""
        return [nid for nid, c in self.cores.items() if c.role.value == "leader"]

    def log_of(self, nid: str) -> list[tuple[int, int, bytes]]:
        """(index, term, data) of the node's persisted log."""
        disk = self.disks[nid]
        return [(i, disk.entries[i].term, disk.entries[i].data) for i in sorted(disk.entries)]

    def applied_data(self, nid: str) -> list[bytes]:
        """Payloads of NORMAL entries applied on ``nid``, in order."""
        return [e.data for e in self.disks[nid].applied if e.kind == 0]


def incarnation(name: str) -> str:
    """A well-formed incarnation id derived from ``name`` (deterministic)."""
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


def entry(index: int, term: int, data: bytes = b"") -> Entry:
    """A NORMAL entry."""
    return Entry(index=index, term=term, data=data)


def with_disk(net: Network, nid: str, entries: list[Entry], hard_state: HardState) -> None:
    """Give ``nid`` a persisted log and restart it from that."""
    disk = net.disks[nid]
    disk.entries = {e.index: e for e in entries}
    disk.hard_state = hard_state
    disk.applied = []
    net.restart(nid)


__all__ = ["Disk", "Network", "entry", "replace", "with_disk"]


def single(
    nid: str = "a",
    voters: tuple[str, ...] = ("a", "b", "c"),
    initial: InitialState | None = None,
    *,
    seed: int = 1,
    **config: Any,
) -> RaftCore:
    """One core on its own, to be stepped with hand-written messages."""
    return RaftCore(RaftConfig(node_id=nid, voters=voters, **config), initial, seed=seed)


def flush(core: RaftCore) -> list[Ready]:
    """Take and advance every pending Ready (no storage reads are served)."""
    out: list[Ready] = []
    while core.has_ready():
        rd = core.ready()
        out.append(rd)
        core.advance(rd)
    return out


def sent(readies: list[Ready]) -> list[Message]:
    """All messages of some Readies, in order."""
    return [m for rd in readies for m in rd.messages]


def log_state(entries: list[tuple[int, int]], term: int, vote: str | None = None) -> InitialState:
    """An InitialState holding NORMAL entries given as (index, term) pairs."""
    disk = Disk()
    disk.entries = {i: entry(i, t) for i, t in entries}
    disk.hard_state = HardState(term=term, voted_for=vote, commit=0)
    return disk.initial()
