"""The node: the public API of one raftmq node (lifecycle, writes, status, callbacks)
around its loop task (:mod:`raftmq.node.loop`), which owns the RaftCore.

On-commit contract: ``on_commit`` sees every committed write once, in index order, on
every node (not the fan-out watermark entries, nor duplicates of a write). The applied
index is saved with the next log save or at the next idle tick (within one tick_interval),
so a crash *between* callbacks and that save repeats them after restart; each carries its
log ``index`` so a state machine can skip what it already holds (the CLI's
``--applied-log`` does exactly that, and stays exactly-once across SIGKILL).

Client sessions (raftmq.node.sessions) are decided at apply time (raftmq.node.applier)
and persisted with the applied index in one transaction: a duplicate write gets no
callback and its pending write resolves with the original index and ``duplicate=True``.
Snapshots (docs/core.md, "Snapshots in the node"): every ``snapshot_entries`` applied
entries the node snapshots raftmq's replicated state (sessions, watermark, applied index)
and, with the ``snapshot``/``restore`` hooks, the user's, then compacts its log. With hooks
the user's state is rebuilt at start (restore, then the callbacks again for the entries
applied after the snapshot) and replaced by ``restore`` when the leader installs a snapshot.
Without hooks the callbacks see only the entries this node applies itself: a snapshot the
leader installs skips the callbacks of every entry it covers (logged as a warning and
counted in ``callbacks_skipped``). A node never compacts past its own applied index, so
its callbacks always get what it applies; what a follower that was down longer than the
leader's ``trailing_entries`` (or retention) misses is the leader's log, not its own.
Retention (``retention``, raftmq.node.retention) compacts what replay no longer serves.

Services (ingest, fan-out, replay; see raftmq.runtime) start after the loop and stop
before it, and see the node only as a :class:`~raftmq.node.types.ServiceHost`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic

from raftmq.core.config import RaftConfig
from raftmq.core.membership import ConfChange
from raftmq.core.raft import RaftCore
from raftmq.core.types import CoreStatus, Entry, Membership, Role, SoftState
from raftmq.errors import ConfigError, NodeStopped, NotLeader, WriteRejected
from raftmq.node.applier import Applier, RestoreHook, SnapshotHook
from raftmq.node.handover import HANDOVER_ELECTION_TIMEOUTS, hand_over
from raftmq.node.identity import ClusterIdentity, identity_status, open_admitted
from raftmq.node.loop import NodeLoop
from raftmq.node.loopstats import LoopStats
from raftmq.node.requests import RequestServer
from raftmq.node.retention import Retention
from raftmq.node.sessions import (
    DEFAULT_MAX_SESSION_GAP,
    DEFAULT_SESSION_EXPIRY_ENTRIES,
    Original,
    SessionTable,
)
from raftmq.node.types import NODE_COUNTERS, OnCommit, OnRecord, Service, ServiceHost, T
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import Record
from raftmq.protocol.requests import FollowerProgress, NodeStatus
from raftmq.protocol.watermark import encode_watermark
from raftmq.storage.port import PersistBatch, Storage
from raftmq.transport.port import Transport

__all__ = ["DEFAULT_SNAPSHOT_ENTRIES", "Node"]

# Applied entries between two snapshots; 0: never. Off until retention gives replay an
# explicit "first available index" (issue 12, item 4): with compaction on, a subscriber
# from earliest only gets what the log still holds (docs/core.md, "Snapshots in the node").
DEFAULT_SNAPSHOT_ENTRIES = 0

logger = logging.getLogger("raftmq.node.node")


class Node(Generic[T]):
    """A raftmq node holding values of type ``T`` (a pydantic model).

    Use as ``async with Node(...) as node:`` or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        config: RaftConfig,
        storage: Storage,
        transport: Transport,
        model: type[T],
        on_commit: OnCommit[T] | None = None,
        on_record: OnRecord | None = None,
        tick_interval: float = 0.05,
        write_timeout: float = 30.0,
        max_write_bytes: int = 1 << 20,
        seed: int | None = None,
        allow_fault_injection: bool = False,
        session_expiry_entries: int = DEFAULT_SESSION_EXPIRY_ENTRIES,
        max_session_gap: int = DEFAULT_MAX_SESSION_GAP,
        identity: ClusterIdentity | None = None,
        snapshot: SnapshotHook | None = None,
        restore: RestoreHook | None = None,
        snapshot_entries: int = DEFAULT_SNAPSHOT_ENTRIES,
        retention: Retention | None = None,
        handover_timeout: float | None = None,
    ) -> None:
        self.config = config.validate()
        # How much log is kept for replay (raftmq.node.retention); None: all of it.
        self.retention = (retention or Retention()).check()
        if snapshot_entries < 0:
            raise ConfigError("snapshot_entries must not be negative (0 disables snapshots)")
        if (snapshot is None) != (restore is None):
            raise ConfigError("give both snapshot and restore hooks, or neither")
        self.snapshot_entries = snapshot_entries  # applied entries between snapshots
        if handover_timeout is not None and handover_timeout < 0:
            raise ConfigError("handover_timeout must not be negative (0 disables the handover)")
        # Seconds a stopping leader waits for another voter to take over; 0: no handover.
        self.handover_timeout = (
            handover_timeout
            if handover_timeout is not None
            else HANDOVER_ELECTION_TIMEOUTS * 2 * self.config.election_ticks * tick_interval
        )
        self._identity = identity  # admits the cluster id at start (None: the transport's)
        self._storage = storage
        self._transport = transport
        self.tick_interval = tick_interval
        self.write_timeout = write_timeout
        self.max_write_bytes = max_write_bytes
        self._seed = seed
        self.allow_fault_injection = allow_fault_injection  # serve "isolate"/"rejoin" requests
        # The cluster's write rules, run on every `write` request (set by runtime.py, which
        # owns the rules' layer); raises WriteRejected. None: records go in as they are.
        self.write_check: Callable[[Record], Record] | None = None
        # Set by runtime.py where the queue services run: the log is never compacted past
        # the fan-out watermark (fan-out reads its entries from storage). None: no bound.
        self.compaction_floor: Callable[[], int] | None = None
        self._loop: NodeLoop | None = None  # while started: the loop that owns the core
        self._task: asyncio.Task[None] | None = None  # the loop's task
        self._stopping = False
        self._pending: dict[int, tuple[int, asyncio.Future[Commit]]] = {}  # index -> (term, fut)
        self._role_observers: list[Callable[[SoftState], None]] = []  # on soft state changes
        # after each applied batch, with its entries (persisted, applied)
        self._apply_observers: list[Callable[[tuple[Entry, ...]], None]] = []
        self._services: list[Service] = []  # started/stopped with the node, in order
        self._counters: dict[str, int] = dict.fromkeys(NODE_COUNTERS, 0)
        # the apply path: callbacks, client sessions, fan-out watermark, write results
        self._applier = Applier(
            self.config.node_id,
            model,
            on_commit=on_commit,
            on_record=on_record,
            session_expiry_entries=session_expiry_entries,
            max_session_gap=max_session_gap,
            pending=self._pending,
            counters=self._counters,
            snapshot=snapshot,
            restore=restore,
        )

    # ----------------------------------------------------------------- lifecycle

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self.config.node_id

    async def __aenter__(self) -> Node[T]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open storage (admitted under the cluster's id), rebuild the core, connect, run."""
        if self._task is not None:
            raise RuntimeError("node already started")
        await open_admitted(self._storage, self._identity, self._transport)
        initial = await self._storage.initial_state()
        await self._applier.restore(self._storage, initial)
        loop = self._loop = NodeLoop(
            core=RaftCore(self.config, initial, seed=self._seed),
            storage=self._storage,
            transport=self._transport,
            applier=self._applier,
            pending=self._pending,
            counters=self._counters,
            durable_vote=(initial.hard_state.term, initial.hard_state.voted_for),
            tick_interval=self.tick_interval,
            snapshot_entries=self.snapshot_entries,
            retention=self.retention,
        )
        loop.role_observers = self._role_observers
        loop.apply_observers = self._apply_observers
        loop.compaction_floor = self.compaction_floor
        logger.info(
            "%s: starting in term %s (last index %s, commit %s, applied %s)",
            self.node_id,
            initial.hard_state.term,
            initial.last_index,
            initial.hard_state.commit,
            initial.applied,
        )
        await self._transport.start(loop.on_message, RequestServer(_Host(self)))
        self._task = asyncio.create_task(loop.run(), name=f"raftmq-node-{self.node_id}")
        for service in self._services:
            await service.start()

    async def stop(self) -> None:
        """Stop the services, hand leadership over (a leader of several voters, see
        :meth:`_hand_over`), stop the loop, fail pending writes with NodeStopped, close
        transport and storage.

        Raises NodeStopped (from the loop's error) when the loop had failed: a node whose
        loop died must not look as if it had stopped cleanly."""
        if self._stopping:
            return
        for service in reversed(self._services):
            await service.stop()  # ingest returns its unacked writes while we still run
        # After the services: the writes ingest returned wait in the queue for the new
        # leader's ingest, and the log stops growing, so the target catches up at once.
        await self._hand_over()
        self._stopping = True
        if self._loop is not None:
            self._loop.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._loop is not None:
            self._loop.fail_pending(NodeStopped(f"node {self.node_id} stopped"))
        await self._transport.stop()
        await self._storage.close()
        logger.info("%s: stopped", self.node_id)
        failure = self.failure
        if failure is not None:
            raise NodeStopped(f"node {self.node_id} loop failed: {failure}") from failure

    async def _hand_over(self) -> None:
        """Leading a cluster of several voters: hand leadership over before stopping
        (raftmq.node.handover), within ``handover_timeout`` seconds."""
        if self._loop is not None:
            await hand_over(
                self._loop,
                self._role_observers,
                timeout=self.handover_timeout,
                # The core drops a transfer after one election timeout; two ticks of slack.
                attempt=(self.config.election_ticks + 2) * self.tick_interval,
            )

    async def wait_removed(self) -> int:
        """Wait until a committed configuration removes this node; return the index of
        that configuration entry (`raftmq node` then stops: a removed node has nothing
        left to do)."""
        loop = self._running
        await loop.removed.wait()
        assert loop.removed_at is not None
        return loop.removed_at

    @property
    def failure(self) -> BaseException | None:
        """The error that ended the node's loop, or None while it runs (or stopped
        cleanly). A failed node applies and answers nothing more: stop it."""
        return self._loop.failure if self._loop is not None else None

    async def wait_failed(self) -> BaseException:
        """Wait until the node's loop fails; return its error. Raises NodeStopped when the
        loop ends without failing (the node was stopped)."""
        loop = self._running
        await loop.ended.wait()
        if loop.failure is None:
            raise NodeStopped(f"node {self.node_id} stopped")
        return loop.failure

    # ------------------------------------------------------------------- public

    @property
    def _running(self) -> NodeLoop:
        if self._loop is None:
            raise NodeStopped("node not started")
        return self._loop

    @property
    def is_leader(self) -> bool:
        """True while this node leads (never once its loop ended)."""
        loop = self._loop
        return loop is not None and not loop.stopping and loop.core.role is Role.LEADER

    @property
    def applied_index(self) -> int:
        """The last index applied (on-commit callbacks done); it runs ahead of
        ``core.applied_index``, which follows at the end of the loop turn."""
        return self._applier.applied

    @property
    def model(self) -> type[T]:
        """The type of the values this node holds (``on_commit`` receives them)."""
        return self._applier.model

    @property
    def on_commit(self) -> OnCommit[T] | None:
        """Called with each new committed write, on every node (raftmq.node.applier)."""
        return self._applier.on_commit

    @on_commit.setter
    def on_commit(self, callback: OnCommit[T] | None) -> None:
        self._applier.on_commit = callback

    @property
    def on_record(self) -> OnRecord | None:
        """Raw form of ``on_commit``: (index, term, record)."""
        return self._applier.on_record

    @on_record.setter
    def on_record(self, callback: OnRecord | None) -> None:
        self._applier.on_record = callback

    @property
    def sessions(self) -> SessionTable:
        """The replicated client sessions, decided at apply time (read them only)."""
        return self._applier.sessions

    def on_applied(
        self, observer: Callable[[tuple[Entry, ...]], None], *, first: bool = False
    ) -> None:
        """Call ``observer`` with each batch of applied entries, after their on-commit
        callbacks and before their applied index is saved (``first``: before the
        observers already added)."""
        if first:
            self._apply_observers.insert(0, observer)
        else:
            self._apply_observers.append(observer)

    @property
    def loop_stats(self) -> LoopStats | None:
        """The loop's own measurements for metrics (:mod:`raftmq.node.metrics`); None
        before start. Read them on the node's event loop."""
        return self._loop.stats if self._loop is not None else None

    @property
    def leader_id(self) -> str | None:
        """The known leader of the current term, if any."""
        return self._loop.core.leader_id if self._loop is not None else None

    async def wait_for_leader(self, timeout: float = 30.0) -> str:
        """The leader's id once this node knows one (this node's own when it leads);
        TimeoutError after ``timeout`` seconds, NodeStopped when the node is not running."""
        loop = self._running
        known = asyncio.Event()

        def observe(soft: SoftState) -> None:
            if soft.leader_id is not None:
                known.set()

        self._role_observers.append(observe)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if loop.stopping or self._stopping:
                        raise NodeStopped(f"node {self.node_id} is not running")
                    if (leader := loop.core.leader_id) is not None:
                        return leader
                    known.clear()
                    await known.wait()
        finally:
            self._role_observers.remove(observe)

    async def read_index(self, *, timeout: float | None = None) -> int:
        """A linearizable read barrier (thesis §6.4, ReadIndex with check-quorum): returns
        once this node's state machine reflects every write committed before the call --
        read your embedded state right after it. Returns the read index (the leader's
        commit index when a majority confirmed its leadership after the call); by then
        ``on_commit`` ran for every entry up to it here. On a follower the leader is
        asked (no write to the log either way).

        Raises NotLeader when no leader is known or leadership changed before the read
        was confirmed (ask again, after :meth:`wait_for_leader`), TimeoutError after
        ``timeout`` (default ``write_timeout``), NodeStopped when the node stops."""
        loop = self._running
        async with asyncio.timeout(self.write_timeout if timeout is None else timeout):
            index = await loop.request_read()
            await loop.wait_applied(index)
        return index

    async def write(self, value: T, *, timeout: float | None = None) -> Commit:
        """Replicate ``value``; return where it committed.

        Raises NotLeader (with the leader hint) on a follower, WriteRejected when the
        write is too large or lost its place (leadership changed before it committed),
        TimeoutError after ``timeout`` (default ``write_timeout``; the outcome is then
        unknown: it may still commit), NodeStopped when the node stops.
        """
        body = value.model_dump_json().encode()
        return await self.write_record(Record(body=body, content_type="application/json"), timeout)

    async def write_record(self, record: Record, timeout: float | None = None) -> Commit:
        """Like :meth:`write` for a raw :class:`Record`."""
        return await asyncio.wait_for(self.submit_record(record), timeout or self.write_timeout)

    def submit_record(self, record: Record) -> asyncio.Future[Commit]:
        """Queue ``record`` for the next proposal batch; return the future of its commit.

        Raises at once what :meth:`write` raises at once (NodeStopped, NotLeader,
        WriteRejected for size). Records are proposed in submission order; those submitted
        without an await in between go into one proposal batch, up to the loop's per-turn
        bound (512 writes or 1 MiB; the rest follow in the next turns). The future never
        times out by itself: the caller bounds its wait."""
        return self._submit_payload(record.encode())

    def _leading_loop(self) -> NodeLoop:
        """The loop, when this node runs and leads; else raise NodeStopped or NotLeader."""
        loop = self._loop
        if self._stopping or loop is None or loop.stopping:
            raise NodeStopped(f"node {self.node_id} is not running")
        if loop.core.role is not Role.LEADER:
            raise NotLeader(loop.core.leader_id)
        return loop

    def _submit_payload(self, payload: bytes) -> asyncio.Future[Commit]:
        loop = self._leading_loop()
        if len(payload) > self.max_write_bytes:
            raise WriteRejected(
                f"write of {len(payload)} bytes exceeds max_write_bytes={self.max_write_bytes}"
            )
        return loop.propose(payload)

    async def _propose_watermark(self, index: int) -> Commit:
        future = self._leading_loop().propose(encode_watermark(index))
        return await asyncio.wait_for(future, self.write_timeout)

    def _save_fanout_watermark(self, index: int) -> None:
        # The loop is the only writer of storage (adapters cache log bounds per save).
        applier = self._applier
        applier.fanout_watermark = max(applier.fanout_watermark, index)
        loop = self._running
        loop.defer(PersistBatch(fanout_watermark=applier.fanout_watermark))
        loop.wake.set()

    @property
    def service_host(self) -> ServiceHost:
        """This node as its leader services see it (:class:`raftmq.node.types.ServiceHost`)."""
        return _Host(self)

    def add_service(self, service: Service) -> None:
        """Run ``service`` beside the node: started after the loop starts (in the order
        added), stopped before it stops (in reverse order). Add before :meth:`start`."""
        self._services.append(service)

    def status(self) -> NodeStatus:
        """The node's current state."""
        node_loop = self._running
        core = node_loop.core
        if core.role is Role.LEADER:
            contact: float | None = 0.0
        elif node_loop.last_leader_contact is None:
            contact = None
        else:
            now = asyncio.get_running_loop().time()
            contact = round(now - node_loop.last_leader_contact, 3)
        failed = node_loop.failure is not None  # a dead loop never claims to lead
        core_status = core.status()
        return NodeStatus(
            cluster=self._transport.cluster,
            **identity_status(self._identity, self._transport),
            node_id=self.node_id,
            role=Role.FOLLOWER if failed else core.role,
            term=core.term,
            leader_id=None if failed else core.leader_id,
            commit=core.commit_index,
            applied=self._applier.applied,
            last_index=core.last_index,
            voters=list(core.membership.voters),
            learners=list(core.membership.learners),
            incarnation=core_status.incarnation or None,
            incarnations=dict(core.membership.incarnations),
            strangers=dict(core_status.strangers),
            last_contact=contact,
            storage_ok=node_loop.storage_ok,
            loop_ok=not failed,
            loop_error=repr(node_loop.failure)[:500] if failed else None,
            counters=self._counters | _election_counters(core),
            transport=self._transport.stats.snapshot(),
            followers=_followers(core, core_status)
            if core.role is Role.LEADER and not failed
            else None,
            first_index=node_loop.log_first_index,
        )

    @property
    def membership(self) -> Membership:
        """The configuration in force on this node (the latest in its log)."""
        return self._running.core.membership

    async def change_membership(
        self, change: ConfChange, *, timeout: float | None = None
    ) -> Membership:
        """Make one membership change on the leader (raftmq.core.membership: add a
        learner, add or promote a voter, remove a member) and wait until it commits;
        return the configuration then in force here. A change the leader cannot make
        yet (another one, its own pins among them, or its term's first entry is not
        committed) waits for it within ``timeout``. NotLeader (ask the leader it names),
        ConfigError (the change does not apply), WriteRejected (leadership changed and
        the change was lost: ask again), TimeoutError, NodeStopped."""
        future = self._running.request_conf_change(change)
        await asyncio.wait_for(future, self.write_timeout if timeout is None else timeout)
        return self.membership

    async def transfer_leadership(self, to: str) -> None:
        """Ask the leader to hand leadership to ``to``; returns once the loop started the
        transfer. Raises NotLeader, ConfigError (not a voter) or NodeStopped."""
        # Through the loop, like a proposal: only its task may touch the core.
        await self._running.request_transfer(to)


def _followers(core: RaftCore, status: CoreStatus) -> dict[str, FollowerProgress]:
    """The leader's view of each follower's log (from ``status``, the core's), as
    ``status`` shows it."""
    last = core.last_index
    return {
        peer: FollowerProgress(
            match=view.match,
            next=view.next,
            state=view.state,
            lag=max(0, last - view.match),
            active=view.recent_active,
        )
        for peer, view in sorted(status.progress.items())
    }


def _election_counters(core: RaftCore) -> dict[str, int]:
    """The core's elections by cause as node counters (``elections_timeout``, ...)."""
    counters = {f"elections_{cause.value}": n for cause, n in core.elections_started.items()}
    counters["strangers_dropped"] = core.strangers_dropped
    return counters


class _Host:
    """The node as its services and request server see it (:class:`ServiceHost` and
    :class:`raftmq.node.requests.RequestTarget`): the only way in besides the public API."""

    __slots__ = ("_node",)

    def __init__(self, node: Node[Any]) -> None:
        self._node = node

    @property
    def node_id(self) -> str:
        return self._node.node_id

    @property
    def cluster(self) -> str:
        return self._node._transport.cluster

    @property
    def is_leader(self) -> bool:
        return self._node.is_leader

    @property
    def leader_id(self) -> str | None:
        return self._node.leader_id

    @property
    def voters(self) -> tuple[str, ...]:
        loop = self._node._loop
        return loop.core.membership.voters if loop is not None else self._node.config.voters

    @property
    def applied_index(self) -> int:
        return self._node.applied_index

    @property
    def write_timeout(self) -> float:
        return self._node.write_timeout

    @property
    def max_write_bytes(self) -> int:
        return self._node.max_write_bytes

    @property
    def fanout_watermark(self) -> int:
        return self._node._applier.fanout_watermark

    @property
    def allow_fault_injection(self) -> bool:
        return self._node.allow_fault_injection

    def on_role_change(self, observer: Callable[[SoftState], None]) -> None:
        self._node._role_observers.append(observer)

    def on_applied(self, observer: Callable[[tuple[Entry, ...]], None]) -> None:
        self._node.on_applied(observer)

    def count(self, counter: str, n: int = 1) -> None:
        counters = self._node._counters
        counters[counter] = counters.get(counter, 0) + n

    def original(self, producer_id: str, seq: int) -> Original | None:
        node = self._node
        return node._applier.sessions.original(producer_id, seq, node._running.core.last_index + 1)

    def is_duplicate(self, index: int) -> bool:
        return self._node._applier.sessions.is_duplicate(index)

    def submit_payload(self, payload: bytes) -> asyncio.Future[Commit]:
        return self._node._submit_payload(payload)

    async def propose_watermark(self, index: int) -> Commit:
        return await self._node._propose_watermark(index)

    def advance_fanout_watermark(self, index: int) -> None:
        applier = self._node._applier
        applier.fanout_watermark = max(applier.fanout_watermark, index)

    def save_fanout_watermark(self, index: int) -> None:
        self._node._save_fanout_watermark(index)

    async def first_index(self) -> int:
        return await self._node._storage.first_index()

    async def committed_entries(
        self, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[Entry]:
        return await self._node._storage.entries(lo, hi, max_bytes)

    def status(self) -> NodeStatus:
        return self._node.status()

    async def write_record(self, record: Record) -> Commit:
        check = self._node.write_check
        return await self._node.write_record(record if check is None else check(record))

    async def change_membership(self, change: ConfChange) -> Membership:
        return await self._node.change_membership(change)

    async def transfer_leadership(self, to: str) -> None:
        await self._node.transfer_leadership(to)

    def set_isolated(self, isolated: bool) -> None:
        self._node._running.isolated = isolated
