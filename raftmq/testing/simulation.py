"""A deterministic, in-process Raft cluster for tests: :class:`Simulation`.

Time is virtual. One *tick* is one call of ``RaftCore.tick()`` on every live node;
:meth:`Simulation.run` advances it. With the default :class:`~raftmq.core.RaftConfig`
an election timeout is 10-19 ticks (randomized in ``[election_ticks, 2 *
election_ticks)``) and a leader heartbeats every 2 ticks. A real node ticks every
``tick_interval`` seconds (0.05 s by default), so one simulated tick stands for 50 ms
and the defaults mean a 0.5-1.0 s election timeout and a 0.1 s heartbeat.

Within a tick the simulation runs the cluster to quiescence: every node's ``Ready`` is
handled by the driver production runs (:class:`~raftmq.node.driver.ReadyDriver`: the
leader's AppendEntries before its save, committed entries applied before the save when
they precede the new ones, the commit-only hard state deferred with the applied index,
every other message after the save, then ``advance`` and the storage reads), and every
message due by then is delivered, until nothing is left to do. At the end of each tick
every node saves its deferred bookkeeping (the node loop does so when it idles). Messages
with a delay (see :class:`~raftmq.testing.network.Network`) arrive in a later tick.

Each node keeps a synchronous in-memory "persisted" record (:class:`PersistedState`) and a
live state machine (the entries it applied). :meth:`Simulation.crash` throws away the
core, its driver (with the deferred bookkeeping), the live state machine beyond the
durable applied index, and the undelivered messages *to* the node; messages it already
sent stay on the network, as they would on a broker. :meth:`Simulation.crash_in_ready`
crashes a node in the middle of a Ready's plan (after some of its steps, before the
rest), and :meth:`Simulation.restart` rebuilds the core from the record alone.

Snapshots: :meth:`Simulation.take_snapshot` snapshots a node's state machine (the entries
it applied, encoded by :func:`encode_state`) at its applied index and compacts its log as
its core says (keeping ``trailing_entries``); a follower whose next index is compacted on
the leader gets the snapshot through InstallSnapshot, and its driver's ``PersistSnapshot``
and ``Restore`` steps install it. The checker verifies every snapshot taken or installed
covers committed entries only and equals the state replaying the log gives.

Reads: :meth:`Simulation.read` asks a node for a linearizable read (ReadIndex,
raftmq.core.reads); the simulation records the highest commit index any node had reached
when the read began -- every write a client could have been told about -- and when the
read is answered checks its read index is not below it (``SafetyViolation`` otherwise):
a read never misses a write acknowledged before it began. :attr:`Simulation.read_log`
keeps every read and its outcome.

A single ``random.Random(seed)`` drives the network and seeds every core, so the
same seed and the same calls produce the same run, bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from raftmq.core import membership
from raftmq.core.config import RaftConfig
from raftmq.core.membership import ConfChange
from raftmq.core.raft import RaftCore
from raftmq.core.types import (
    Entry,
    EntryKind,
    HardState,
    InitialState,
    LogRead,
    LogReadResult,
    Membership,
    Role,
    Snapshot,
)
from raftmq.errors import ConfigError, NotLeader
from raftmq.node.driver import Apply, Persist, PersistSnapshot, ReadyDriver, Restore, Send, Step
from raftmq.storage.port import PersistBatch
from raftmq.testing.checkers import SafetyChecker, SafetyViolation
from raftmq.testing.network import Network

DriverFactory = Callable[[tuple[int, str | None]], ReadyDriver]
"""Builds the driver of a node incarnation from its durable (term, voted_for)."""

MAX_DELIVERIES_PER_TICK = 1_000_000
"""A tick that delivers more messages than this is a livelock: the simulation raises."""


@dataclasses.dataclass
class ReadRecord:
    """One read asked of a simulated node and what became of it."""

    node_id: str  # the node asked
    asked: int  # tick it was asked at
    floor: int  # the highest commit index any node had reached then
    answered: int | None = None  # tick of the answer; None while there is none
    index: int | None = None  # the read index answered; None: failed (or not answered)


class SimulationError(RuntimeError):
    """The simulated cluster misbehaved in a way that is not a safety violation (livelock)."""


_ENTRY_HEAD = struct.Struct(">QQBI")  # index, term, kind, payload length


def encode_state(entries: Sequence[Entry]) -> bytes:
    """The bytes of a simulated state machine that applied ``entries`` (its snapshot)."""
    head = _ENTRY_HEAD.pack
    return b"".join(head(e.index, e.term, e.kind, len(e.data)) + e.data for e in entries)


def decode_state(data: bytes) -> list[Entry]:
    """The state machine :func:`encode_state` encoded (its applied entries, in order)."""
    out: list[Entry] = []
    pos, size, unpack = 0, _ENTRY_HEAD.size, _ENTRY_HEAD.unpack_from
    while pos < len(data):
        index, term, kind, length = unpack(data, pos)
        pos += size
        out.append(
            Entry(index=index, term=term, kind=EntryKind(kind), data=data[pos : pos + length])
        )
        pos += length
    return out


@dataclasses.dataclass(slots=True)
class PersistedState:
    """What one node has made durable; a restart sees this and nothing else.

    Invariant: ``log[i - first].index == i``; ``applied`` entries are the committed entries
    1..len(applied) as they were when applied (a snapshot's among them); ``snapshot.index
    >= first - 1`` and ``prev_term`` is the term at ``first - 1``.
    """

    hard_state: HardState = dataclasses.field(default_factory=HardState)  # term/vote/commit
    log: list[Entry] = dataclasses.field(default_factory=list)  # the log from index `first`
    # the state machine up to the saved applied index, in order
    applied: list[Entry] = dataclasses.field(default_factory=list)
    snapshot: Snapshot | None = None  # the latest snapshot taken or installed
    first: int = 1  # first index held in `log` (entries before it are compacted)
    prev_term: int = 0  # term of the entry at first - 1 (0 when first == 1)
    incarnation: str = ""  # this record's database id (a wiped node gets another)

    @property
    def last_index(self) -> int:
        """Index of the last entry held (first - 1 when the log is empty)."""
        return self.first - 1 + len(self.log)

    @property
    def base(self) -> tuple[int, int]:
        """(index, term) just before the first entry held (the checkers' ``base``)."""
        return self.first - 1, self.prev_term

    def compact(
        self, snapshot: Snapshot, first: int, prev_term: int, machine: Sequence[Entry]
    ) -> None:
        """Keep ``snapshot`` (of ``machine``'s first ``snapshot.index`` entries) and drop the
        entries before ``first``, all at once."""
        self.snapshot = snapshot
        if snapshot.index > len(self.applied):
            self.applied = list(machine[: snapshot.index])
        if first > self.first:
            del self.log[: first - self.first]
            self.first, self.prev_term = first, prev_term

    def install(self, snapshot: Snapshot, state: list[Entry], batch: PersistBatch) -> None:
        """Replace the log and the state machine by ``snapshot``, then save ``batch``, all
        at once."""
        if batch.hard_state is not None:
            self.hard_state = batch.hard_state
        self.snapshot = snapshot
        self.log = []
        self.first, self.prev_term = snapshot.index + 1, snapshot.term
        self.applied = state
        rest = dataclasses.replace(batch, hard_state=None, applied=None)
        self.save(rest, state)

    def save(self, batch: PersistBatch, machine: Sequence[Entry]) -> None:
        """Make ``batch`` durable, all of it at once; ``machine`` is the node's live state
        machine, whose first ``batch.applied`` entries become durable with it."""
        if batch.hard_state is not None:
            self.hard_state = batch.hard_state
        log = self.log
        if batch.truncate_from is not None:
            if batch.truncate_from < self.first:
                raise SimulationError(f"truncate from {batch.truncate_from}, before {self.first}")
            del log[batch.truncate_from - self.first :]
        if batch.entries:
            if batch.entries[0].index != self.last_index + 1:
                raise SimulationError(
                    f"append from index {batch.entries[0].index} onto a log ending at "
                    f"{self.last_index} (truncate_from={batch.truncate_from})"
                )
            log.extend(batch.entries)
        if batch.applied is not None and batch.applied > len(self.applied):
            self.applied.extend(machine[len(self.applied) : batch.applied])

    def initial_state(self, tail: int | None) -> InitialState:
        """The :class:`InitialState` a driver would load; ``tail`` caps the cached suffix."""
        log = self.log
        runs: list[tuple[int, int]] = []
        last_term = -1
        if self.first > 1:
            runs.append((self.first - 1, self.prev_term))
            last_term = self.prev_term
        for entry in log:
            if entry.term != last_term:
                runs.append((entry.index, entry.term))
                last_term = entry.term
        cached = log if tail is None else log[max(0, len(log) - tail) :]
        base = self.snapshot.index if self.snapshot is not None else 0
        configs = tuple(e for e in log if e.kind == EntryKind.CONFIG and e.index > base)
        return InitialState(
            hard_state=self.hard_state,
            first_index=self.first,
            last_index=self.last_index,
            term_runs=tuple(runs),
            tail=tuple(cached),
            applied=len(self.applied),
            snapshot=self.snapshot,
            config_entries=configs,
            incarnation=self.incarnation,
        )

    def membership(self, seed: Membership) -> Membership:
        """The configuration in force in this record: its last configuration entry's,
        else its snapshot's, else ``seed``."""
        for entry in reversed(self.log):
            if entry.kind == EntryKind.CONFIG:
                return membership.decode(entry.data)
        return self.snapshot.membership if self.snapshot is not None else seed

    def read(self, request: LogRead) -> tuple[Entry, ...]:
        """Serve a storage read: ``lo..hi`` bounded by bytes, at least one entry if any."""
        lo, hi = max(request.lo, self.first), min(request.hi, self.last_index)
        out: list[Entry] = []
        size = 0
        for index in range(lo, hi + 1):
            entry = self.log[index - self.first]
            size += len(entry.data)
            if out and size > request.max_bytes:
                break
            out.append(entry)
        return tuple(out)


class Simulation:
    """A cluster of :class:`~raftmq.core.RaftCore` nodes on a simulated network.

    ``config_overrides`` are :class:`~raftmq.core.RaftConfig` fields applied to every
    node (``election_ticks``, ``pre_vote``, ``check_quorum``, ``max_cached_entries`` ...).
    ``check=True`` runs the :class:`~raftmq.testing.checkers.SafetyChecker` on every
    Ready and after every tick. ``restart_tail`` bounds how many trailing log entries a
    restarted core gets in ``InitialState.tail`` (None: the whole log), so that it must
    read older ones back through ``LogRead``.
    """

    def __init__(
        self,
        node_ids: Sequence[str],
        seed: int = 0,
        *,
        check: bool = True,
        restart_tail: int | None = None,
        driver: DriverFactory = ReadyDriver,
        voters: Sequence[str] | None = None,
        **config_overrides: Any,
    ) -> None:
        if not node_ids or len(set(node_ids)) != len(node_ids):
            raise ValueError(f"node ids must be distinct and non-empty: {node_ids!r}")
        self.node_ids: tuple[str, ...] = tuple(node_ids)  # fixed iteration order
        # The voters the cluster starts with (every node unless told): the others wait,
        # outside the cluster, until a configuration change adds them.
        seed_voters = tuple(voters) if voters is not None else self.node_ids
        if not seed_voters or not set(seed_voters) <= set(self.node_ids):
            raise ValueError(f"voters must be some of the nodes: {voters!r}")
        self.seed = seed  # the run's seed
        self.rng = random.Random(seed)  # the only source of randomness in the run
        self.network = Network(self.node_ids, self.rng)  # the simulated wire
        self.checker: SafetyChecker | None = SafetyChecker(encode_state) if check else None
        self.restart_tail = restart_tail  # tail handed to restarted cores; None = whole log
        self.now = 0  # ticks elapsed
        self.configs: dict[str, RaftConfig] = {
            node_id: dataclasses.replace(
                RaftConfig(node_id=node_id, voters=seed_voters), **config_overrides
            ).validate()
            for node_id in self.node_ids
        }
        self._wipes = dict.fromkeys(self.node_ids, 0)  # per node: databases lost so far
        self.persisted: dict[str, PersistedState] = {
            n: PersistedState(incarnation=self._incarnation(n)) for n in self.node_ids
        }
        self._cores: dict[str, RaftCore | None] = {
            n: RaftCore(
                self.configs[n],
                self.persisted[n].initial_state(None),
                seed=self.rng.getrandbits(63),
            )
            for n in self.node_ids
        }
        self._new_driver = driver
        # per node: the Ready order of its running incarnation, and its live state machine
        self._drivers = {n: driver((0, None)) for n in self.node_ids}
        self._machines: dict[str, list[Entry]] = {n: [] for n in self.node_ids}
        self._crash_armed: dict[str, None] = {}  # ordered set: crash in the next Ready's plan
        self._read_ids = itertools.count(1)
        self.read_log: dict[int, ReadRecord] = {}  # every read asked, by request id
        self.max_commit = 0  # the highest commit index any node reached

    # -- inspection -----------------------------------------------------------------------
    def core(self, node_id: str) -> RaftCore:
        """The running core of ``node_id``; raises ``LookupError`` while it is crashed."""
        core = self._cores[node_id]
        if core is None:
            raise LookupError(f"node {node_id!r} is crashed")
        return core

    def is_alive(self, node_id: str) -> bool:
        """True unless ``node_id`` is crashed."""
        return self._cores[node_id] is not None

    def alive(self) -> list[str]:
        """Ids of the nodes that are not crashed, in cluster order."""
        return [n for n in self.node_ids if self._cores[n] is not None]

    def leader(self) -> str | None:
        """A leader of the highest term among live, connected nodes (None if there is none)."""
        best: str | None = None
        best_term = -1
        for node_id in self.node_ids:
            core = self._cores[node_id]
            if core is None or not self.network.is_connected(node_id):
                continue
            if core.role is Role.LEADER and core.term > best_term:
                best, best_term = node_id, core.term
        return best

    def leaders(self) -> list[str]:
        """Every live node that believes it leads (stale leaders included)."""
        return [n for n in self.alive() if self.core(n).role is Role.LEADER]

    def role(self, node_id: str) -> Role | None:
        """Role of ``node_id``, or None while it is crashed."""
        core = self._cores[node_id]
        return None if core is None else core.role

    def term(self, node_id: str) -> int:
        """Current term of ``node_id`` (its persisted term while it is crashed)."""
        core = self._cores[node_id]
        return self.persisted[node_id].hard_state.term if core is None else core.term

    def commit_index(self, node_id: str) -> int:
        """Commit index of ``node_id`` (its persisted commit while it is crashed)."""
        core = self._cores[node_id]
        return self.persisted[node_id].hard_state.commit if core is None else core.commit_index

    def applied_entries(self, node_id: str) -> list[Entry]:
        """The entries in ``node_id``'s state machine, in apply order (NOOPs included): what
        its running incarnation applied, or what was saved while it is crashed."""
        return list(self._machines[node_id])

    def applied(self, node_id: str) -> list[tuple[int, bytes]]:
        """``(index, data)`` of the NORMAL entries ``node_id`` applied, in apply order."""
        return [(e.index, e.data) for e in self._machines[node_id] if e.kind is EntryKind.NORMAL]

    def applied_index(self, node_id: str) -> int:
        """Highest index ``node_id`` applied (NOOP entries included)."""
        return len(self._machines[node_id])

    def log(self, node_id: str) -> list[Entry]:
        """A copy of ``node_id``'s persisted log (from its first index held, 1 until it
        compacts or installs a snapshot)."""
        return list(self.persisted[node_id].log)

    def last_index(self, node_id: str) -> int:
        """Index of the last entry ``node_id`` persisted."""
        return self.persisted[node_id].last_index

    # -- snapshots ----------------------------------------------------------------------------
    def take_snapshot(self, node_id: str) -> Snapshot | None:
        """Snapshot the state machine of running ``node_id`` at its applied index and compact
        its log (in memory and in its record, at once); None when crashed or nothing new
        was applied since its last snapshot."""
        core = self._cores[node_id]
        if core is None:
            return None
        index = core.applied_index
        current = core.snapshot
        if index == 0 or (current is not None and index <= current.index):
            return None
        machine = self._machines[node_id]
        data = encode_state(machine[:index])
        snapshot = core.take_snapshot(index, data)
        first = core.first_index
        self.persisted[node_id].compact(snapshot, first, core.log_term(first - 1), machine)
        if self.checker is not None:
            self.checker.observe_snapshot(node_id, snapshot.index, snapshot.term, data)
        return snapshot

    # -- faults -----------------------------------------------------------------------------
    def disconnect(self, node_id: str) -> None:
        """Cut ``node_id`` off the network (it keeps running)."""
        self.network.disconnect(node_id)

    def connect(self, node_id: str) -> None:
        """Put ``node_id`` back on the network."""
        self.network.connect(node_id)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network into groups that cannot reach each other (see Network.partition)."""
        self.network.partition(*groups)

    def heal(self) -> None:
        """Remove every partition and reconnect every node."""
        self.network.heal()

    def crash(self, node_id: str) -> None:
        """Stop ``node_id`` abruptly: its core, its driver's deferred bookkeeping, what its
        state machine applied beyond the saved applied index and every undelivered message
        to it are lost; what it persisted and the messages it sent stay."""
        self._crash_armed.pop(node_id, None)
        if self._cores[node_id] is None:
            return
        self._cores[node_id] = None
        durable = self.persisted[node_id].applied
        self._machines[node_id] = list(durable)
        self.network.discard(node_id, sent_by_it=False)
        if self.checker is not None:
            self.checker.observe_crash(node_id, resume_applied=len(durable))

    def wipe(self, node_id: str) -> None:
        """Crash ``node_id`` and lose its database (a replaced disk): its next restart
        starts from nothing, under another incarnation id, with the seed configuration."""
        self.crash(node_id)
        self._wipes[node_id] += 1
        self.persisted[node_id] = PersistedState(incarnation=self._incarnation(node_id))
        self._machines[node_id] = []
        if self.checker is not None:
            self.checker.observe_wipe(node_id)

    def incarnation(self, node_id: str) -> str:
        """The incarnation id of ``node_id``'s current database."""
        return self.persisted[node_id].incarnation

    def persisted_membership(self, node_id: str) -> Membership:
        """The configuration in force in ``node_id``'s persisted record."""
        config = self.configs[node_id]
        return self.persisted[node_id].membership(membership.membership(config.voters))

    def _incarnation(self, node_id: str) -> str:
        # Deterministic, and drawn from no stream: a seed's run is the same with wipes.
        key = f"{self.seed}:{node_id}:{self._wipes[node_id]}".encode()
        return hashlib.blake2b(key, digest_size=16).hexdigest()

    def crash_in_ready(self, node_id: str) -> None:
        """Crash ``node_id`` in the middle of its next Ready that has a middle: after a
        random number of its plan's steps (at least one), before the rest (at least one
        besides ``advance``). A crash or restart before then cancels it."""
        if self._cores[node_id] is not None:
            self._crash_armed[node_id] = None

    def cancel_crashes_in_ready(self) -> None:
        """Forget every crash armed by :meth:`crash_in_ready` that has not happened."""
        self._crash_armed.clear()

    def restart(self, node_id: str) -> None:
        """Start a crashed ``node_id`` again from its persisted record only."""
        if self._cores[node_id] is not None:
            raise RuntimeError(f"node {node_id!r} is running; crash it first")
        record = self.persisted[node_id]
        initial = record.initial_state(self.restart_tail)
        core = RaftCore(self.configs[node_id], initial, seed=self.rng.getrandbits(63))
        self._cores[node_id] = core
        self._drivers[node_id] = self._new_driver(
            (record.hard_state.term, record.hard_state.voted_for)
        )

    # -- driving ------------------------------------------------------------------------------
    def propose(self, node_id: str, data: bytes) -> int | None:
        """Propose ``data`` on ``node_id``: its log index if that node leads, else None."""
        core = self._cores[node_id]
        if core is None:
            return None
        try:
            return core.propose(data)
        except NotLeader:
            return None

    def propose_batch(self, node_id: str, items: Sequence[bytes]) -> int | None:
        """Propose many entries on ``node_id``: the first one's index if it leads, else None."""
        core = self._cores[node_id]
        if core is None:
            return None
        try:
            return core.propose_batch(items)
        except NotLeader:
            return None

    def change_membership(self, node_id: str, change: ConfChange) -> int | None:
        """Propose ``change`` on ``node_id``: the configuration entry's index if that node
        leads and may change the configuration now, else None."""
        core = self._cores[node_id]
        if core is None:
            return None
        try:
            return core.propose_conf_change(change)
        except (NotLeader, ConfigError):
            return None

    def read(self, node_id: str) -> int | None:
        """Ask ``node_id`` for a linearizable read: its request id (the outcome shows in
        :attr:`read_log`), or None when the node is down or knows no leader."""
        core = self._cores[node_id]
        if core is None:
            return None
        request_id = next(self._read_ids)
        try:
            core.read_index(request_id)
        except NotLeader:
            return None
        self.read_log[request_id] = ReadRecord(node_id, self.now, self.max_commit)
        return request_id

    def step(self) -> None:
        """Advance one tick: tick every live node, then run the cluster to quiescence."""
        self.settle()
        self.now += 1
        for core in self._cores.values():
            if core is not None:
                core.tick()
        self.settle()
        self._flush_deferred()
        if self.checker is not None:
            self._check_tick(self.checker)

    def run(self, ticks: int) -> None:
        """Advance ``ticks`` ticks."""
        for _ in range(ticks):
            self.step()

    def run_until(self, predicate: Callable[[], bool], max_ticks: int) -> bool:
        """Advance tick by tick until ``predicate()`` holds (checked first, then after each
        tick); return whether it did within ``max_ticks`` ticks."""
        self.settle()
        if predicate():
            return True
        for _ in range(max_ticks):
            self.step()
            if predicate():
                return True
        return False

    def settle(self) -> None:
        """Without ticking, handle every pending Ready and deliver every message due now."""
        cores = self._cores
        network = self.network
        delivered = 0
        while True:
            busy = False
            for node_id, core in cores.items():
                if core is not None and core.has_ready():
                    self._handle_ready(node_id, core)
                    busy = True
            due = network.pop_due(self.now)
            if not due and not busy:
                return
            for msg in due:
                target = cores.get(msg.recipient)
                if target is not None:
                    target.step(msg)
            delivered += len(due)
            if delivered > MAX_DELIVERIES_PER_TICK:
                raise SimulationError(
                    f"livelock: more than {MAX_DELIVERIES_PER_TICK} messages in tick {self.now} "
                    f"(seed {self.seed})"
                )

    def _read_answered(self, node_id: str, request_id: int, index: int | None) -> None:
        read = self.read_log.get(request_id)
        if read is None or read.node_id != node_id or read.answered is not None:
            return
        read.answered, read.index = self.now, index
        if index is not None and index < read.floor:
            raise SafetyViolation(
                f"stale read: read {request_id} on {node_id} (asked at tick {read.asked}) "
                f"got read index {index}, but index {read.floor} was committed before it "
                f"began (seed {self.seed})"
            )

    def _handle_ready(self, node_id: str, core: RaftCore) -> None:
        """Carry out one Ready in the order of the node's driver (raftmq.node.driver)."""
        ready = core.ready()
        steps = self._drivers[node_id].plan(ready)
        crash_at = self._crash_point(node_id, steps)
        for done, step in enumerate(steps):
            if done == crash_at:
                self.crash(node_id)
                return
            if isinstance(step, Send):
                for msg in step.messages:
                    self.network.send(msg, self.now)
            elif isinstance(step, Apply):
                self._apply(node_id, core, step)
            elif isinstance(step, Persist):
                self._save(node_id, self._drivers[node_id].to_save(step))
            elif isinstance(step, PersistSnapshot):
                self._install(node_id, step)
            elif isinstance(step, Restore):
                self._restore(node_id, step.snapshot)
            else:
                core.advance(ready)
                record = self.persisted[node_id]
                for request in ready.reads:
                    core.step_read(LogReadResult(read=request, entries=record.read(request)))
                for state in ready.read_states:
                    self._read_answered(node_id, state.request_id, state.index)
        self.max_commit = max(self.max_commit, core.commit_index)
        checker = self.checker
        if checker is not None:
            if ready.soft_state is not None and ready.soft_state.role is Role.LEADER:
                checker.observe_leader(node_id, ready.soft_state.term)
            checker.observe_live_commit(node_id, core.commit_index)

    def _crash_point(self, node_id: str, steps: list[Step]) -> int | None:
        """The step before which an armed crash strikes, or None (not armed, no middle)."""
        if node_id not in self._crash_armed or len(steps) < 3:
            return None
        del self._crash_armed[node_id]
        return self.rng.randrange(1, len(steps) - 1)

    def _apply(self, node_id: str, core: RaftCore, step: Apply) -> None:
        machine = self._machines[node_id]
        checker = self.checker
        if checker is not None:
            # Its commit index covers these entries: tell the checker (they may be applied
            # before the commit is saved), with the durable log that must hold them.
            last = step.entries[-1].index
            record = self.persisted[node_id]
            checker.observe_commit(
                node_id, core.term, last, record.log, persisted=False, base=record.base
            )
            for entry in step.entries:
                checker.observe_apply(node_id, entry)
        elif step.entries[0].index != len(machine) + 1:
            raise SimulationError(
                f"node {node_id!r} applies from {step.entries[0].index} "
                f"after {len(machine)} (seed {self.seed})"
            )
        machine.extend(step.entries)
        bookkeeping = PersistBatch(hard_state=step.hard_state, applied=step.entries[-1].index)
        self._drivers[node_id].defer(bookkeeping)

    def _install(self, node_id: str, step: PersistSnapshot) -> None:
        batch = self._drivers[node_id].to_save(step)
        record = self.persisted[node_id]
        snapshot = step.snapshot
        checker = self.checker
        if checker is not None:
            checker.observe_snapshot(node_id, snapshot.index, snapshot.term, snapshot.data)
        record.install(snapshot, decode_state(snapshot.data), batch)
        if checker is not None:
            checker.observe_log_change(node_id, record.log, None, len(batch.entries), record.base)
            if batch.hard_state is not None:
                hard = batch.hard_state
                checker.observe_commit(
                    node_id, hard.term, hard.commit, record.log, base=record.base
                )

    def _restore(self, node_id: str, snapshot: Snapshot) -> None:
        machine = decode_state(snapshot.data)
        self._machines[node_id] = machine
        if self.checker is not None:
            state = encode_state(machine)
            self.checker.observe_restore(node_id, snapshot.index, snapshot.term, state)

    def _save(self, node_id: str, batch: PersistBatch | None) -> None:
        if batch is None or batch.is_empty():
            return
        record = self.persisted[node_id]
        try:
            record.save(batch, self._machines[node_id])
        except SimulationError as exc:
            raise SimulationError(f"node {node_id!r}: {exc} (seed {self.seed})") from exc
        checker = self.checker
        if checker is not None:
            if batch.truncate_from is not None or batch.entries:
                checker.observe_log_change(
                    node_id, record.log, batch.truncate_from, len(batch.entries), record.base
                )
            if batch.hard_state is not None:
                hard = batch.hard_state
                checker.observe_commit(
                    node_id, hard.term, hard.commit, record.log, base=record.base
                )

    def _flush_deferred(self) -> None:
        """Save every running node's deferred bookkeeping (the node loop does when idle)."""
        for node_id, core in self._cores.items():
            if core is not None:
                self._save(node_id, self._drivers[node_id].take_deferred())

    def _check_tick(self, checker: SafetyChecker) -> None:
        for node_id, core in self._cores.items():
            if core is None:
                continue
            checker.observe_live_commit(node_id, core.commit_index)
            if core.role is Role.LEADER:
                checker.observe_leader(node_id, core.term)
                record = self.persisted[node_id]
                checker.check_leader(node_id, core.term, record.log, record.base)
