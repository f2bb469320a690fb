"""A deterministic, in-process Raft cluster for tests: :class:`Simulation`.

Time is virtual. One *tick* is one call of ``RaftCore.tick()`` on every live node;
:meth:`Simulation.run` advances it. With the default :class:`~raftmq.core.RaftConfig`
an election timeout is 10-19 ticks (randomized in ``[election_ticks, 2 *
election_ticks)``) and a leader heartbeats every 2 ticks. A real node ticks every
``tick_interval`` seconds (0.05 s by default), so one simulated tick stands for 50 ms
and the defaults mean a 0.5-1.0 s election timeout and a 0.1 s heartbeat.

Within a tick the simulation runs the cluster to quiescence: every node's ``Ready``
is handled exactly as a real driver would — persist (hard state, truncation, entries)
-> send -> apply -> serve storage reads through ``step_read`` -> ``advance`` — and
every message due by then is delivered, until nothing is left to do. Messages with a
delay (see :class:`~raftmq.testing.network.Network`) arrive in a later tick.

Each node keeps a synchronous in-memory "persisted" record (:class:`PersistedState`);
:meth:`Simulation.crash` throws away the core and every undelivered message to or from
the node, and :meth:`Simulation.restart` rebuilds the core from that record alone.

A single ``random.Random(seed)`` drives the network and seeds every core, so the
same seed and the same calls produce the same run, bit for bit.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from raftmq.core.config import RaftConfig
from raftmq.core.raft import RaftCore
from raftmq.core.types import (
    Entry,
    EntryKind,
    HardState,
    InitialState,
    LogRead,
    LogReadResult,
    Role,
)
from raftmq.errors import NotLeader
from raftmq.testing.checkers import SafetyChecker
from raftmq.testing.network import Network

MAX_DELIVERIES_PER_TICK = 1_000_000
"""A tick that delivers more messages than this is a livelock: the simulation raises."""


class SimulationError(RuntimeError):
    """The simulated cluster misbehaved in a way that is not a safety violation (livelock)."""


@dataclasses.dataclass(slots=True)
class PersistedState:
    """What one node has made durable; a restart sees this and nothing else.

    Invariant: ``log[i - 1].index == i``; ``applied`` entries are ``log``'s first
    ``len(applied)`` committed entries as they were when applied.
    """

    hard_state: HardState = dataclasses.field(default_factory=HardState)  # term/vote/commit
    log: list[Entry] = dataclasses.field(default_factory=list)  # the whole log, index 1 first
    applied: list[Entry] = dataclasses.field(default_factory=list)  # state machine, in order

    def initial_state(self, tail: int | None) -> InitialState:
        """The :class:`InitialState` a driver would load; ``tail`` caps the cached suffix."""
        log = self.log
        runs: list[tuple[int, int]] = []
        last_term = -1
        for entry in log:
            if entry.term != last_term:
                runs.append((entry.index, entry.term))
                last_term = entry.term
        cached = log if tail is None else log[max(0, len(log) - tail) :]
        return InitialState(
            hard_state=self.hard_state,
            first_index=1,
            last_index=len(log),
            term_runs=tuple(runs),
            tail=tuple(cached),
            applied=len(self.applied),
        )

    def read(self, request: LogRead) -> tuple[Entry, ...]:
        """Serve a storage read: ``lo..hi`` bounded by bytes, at least one entry if any."""
        lo, hi = max(request.lo, 1), min(request.hi, len(self.log))
        out: list[Entry] = []
        size = 0
        for index in range(lo, hi + 1):
            entry = self.log[index - 1]
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
        **config_overrides: Any,
    ) -> None:
        if not node_ids or len(set(node_ids)) != len(node_ids):
            raise ValueError(f"node ids must be distinct and non-empty: {node_ids!r}")
        self.node_ids: tuple[str, ...] = tuple(node_ids)  # fixed iteration order
        self.seed = seed  # the run's seed
        self.rng = random.Random(seed)  # the only source of randomness in the run
        self.network = Network(self.node_ids, self.rng)  # the simulated wire
        self.checker: SafetyChecker | None = SafetyChecker() if check else None
        self.restart_tail = restart_tail  # tail handed to restarted cores; None = whole log
        self.now = 0  # ticks elapsed
        self.configs: dict[str, RaftConfig] = {
            node_id: dataclasses.replace(
                RaftConfig(node_id=node_id, voters=self.node_ids), **config_overrides
            ).validate()
            for node_id in self.node_ids
        }
        self.persisted: dict[str, PersistedState] = {n: PersistedState() for n in self.node_ids}
        self._cores: dict[str, RaftCore | None] = {
            n: RaftCore(self.configs[n], None, seed=self.rng.getrandbits(63)) for n in self.node_ids
        }

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

    def applied(self, node_id: str) -> list[tuple[int, bytes]]:
        """``(index, data)`` of the NORMAL entries ``node_id`` applied, in apply order."""
        return [
            (e.index, e.data) for e in self.persisted[node_id].applied if e.kind is EntryKind.NORMAL
        ]

    def applied_index(self, node_id: str) -> int:
        """Highest index ``node_id`` applied (NOOP entries included)."""
        return len(self.persisted[node_id].applied)

    def log(self, node_id: str) -> list[Entry]:
        """A copy of ``node_id``'s persisted log."""
        return list(self.persisted[node_id].log)

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
        """Stop ``node_id`` abruptly: its core and every undelivered message to or from it
        are lost; what it persisted stays."""
        if self._cores[node_id] is None:
            return
        self._cores[node_id] = None
        self.network.discard(node_id)
        if self.checker is not None:
            self.checker.observe_crash(node_id)

    def restart(self, node_id: str) -> None:
        """Start a crashed ``node_id`` again from its persisted record only."""
        if self._cores[node_id] is not None:
            raise RuntimeError(f"node {node_id!r} is running; crash it first")
        initial = self.persisted[node_id].initial_state(self.restart_tail)
        core = RaftCore(self.configs[node_id], initial, seed=self.rng.getrandbits(63))
        self._cores[node_id] = core

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

    def step(self) -> None:
        """Advance one tick: tick every live node, then run the cluster to quiescence."""
        self.settle()
        self.now += 1
        for core in self._cores.values():
            if core is not None:
                core.tick()
        self.settle()
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

    def _handle_ready(self, node_id: str, core: RaftCore) -> None:
        """Do what a real driver does with one Ready: persist, send, apply, read, advance."""
        ready = core.ready()
        record = self.persisted[node_id]
        checker = self.checker
        # 1. persist, as one transaction
        if ready.hard_state is not None:
            record.hard_state = ready.hard_state
        log = record.log
        if ready.truncate_from is not None:
            del log[ready.truncate_from - 1 :]
        if ready.entries:
            first = ready.entries[0].index
            if first != len(log) + 1:
                raise SimulationError(
                    f"node {node_id!r} asked to append from index {first} onto a log ending at "
                    f"{len(log)} (truncate_from={ready.truncate_from}, seed {self.seed})"
                )
            log.extend(ready.entries)
        if checker is not None:
            if ready.truncate_from is not None or ready.entries:
                checker.observe_log_change(node_id, log, ready.truncate_from, len(ready.entries))
            if ready.hard_state is not None:
                hard = ready.hard_state
                checker.observe_commit(node_id, hard.term, hard.commit, log)
        # 2. send, only now that it is durable
        now = self.now
        send = self.network.send
        for msg in ready.messages:
            send(msg, now)
        # 3. apply
        if ready.committed_entries:
            if checker is not None:
                for entry in ready.committed_entries:
                    checker.observe_apply(node_id, entry)
            elif ready.committed_entries[0].index != len(record.applied) + 1:
                raise SimulationError(
                    f"node {node_id!r} applies from {ready.committed_entries[0].index} "
                    f"after {len(record.applied)} (seed {self.seed})"
                )
            record.applied.extend(ready.committed_entries)
        # 4. serve storage reads
        for request in ready.reads:
            core.step_read(LogReadResult(read=request, entries=record.read(request)))
        core.advance(ready)
        if checker is not None:
            if ready.soft_state is not None and ready.soft_state.role is Role.LEADER:
                checker.observe_leader(node_id, ready.soft_state.term)
            checker.observe_live_commit(node_id, core.commit_index)

    def _check_tick(self, checker: SafetyChecker) -> None:
        for node_id, core in self._cores.items():
            if core is None:
                continue
            checker.observe_live_commit(node_id, core.commit_index)
            if core.role is Role.LEADER:
                checker.observe_leader(node_id, core.term)
                checker.check_leader(node_id, core.term, self.persisted[node_id].log)
