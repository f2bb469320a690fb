"""The node runtime: one asyncio task owns a RaftCore and drives it with a Storage and a
Transport, obeying *persist before send*.

Loop, per wake-up (a message, a write, or a tick)::

    tick the core for every elapsed tick_interval
    step every queued message; propose every queued write as one batch
    while the core has a Ready:
        transport.send(AppendEntries)     # leader only, term and vote already durable
        storage.save(hard state + truncation + entries + deferred bookkeeping)  # ONE txn
        transport.send(other messages)    # votes and replies only after the save returned
        apply committed entries (on_commit, in index order; node.applier); defer the applied index
        core.advance(ready); serve storage reads the core asked for
    once per tick, when idle: save the deferred bookkeeping (applied index, sessions, ...)

The leader's early AppendEntries follow the thesis (§10.2.1: a leader may write its log
in parallel with replicating it); it is safe because replies are stepped only after the
save returned, so the leader never counts its own entries before they are durable.

No lock guards Raft state: only the loop task touches the core. Other coroutines
(`write`, `status`) hand work to the loop through queues and futures.

On-commit contract: ``on_commit`` sees every committed write once, in index order, on
every node (not the fan-out watermark entries, nor duplicates of a write). The applied
index is saved with the next log save or at the next idle tick (within one tick_interval),
so a crash *between* callbacks and that save repeats them after restart; each carries its
log ``index`` so a state machine can skip what it already holds (the CLI's
``--applied-log`` does exactly that, and stays exactly-once across SIGKILL).

Client sessions (raftmq.node.sessions) are decided at apply time (raftmq.node.applier) and persisted
with the applied index in one transaction: a duplicate write gets no callback and its
pending write resolves with the original index and ``duplicate=True``. ``services``
(ingest, fan-out, replay; see raftmq.runtime) start after the loop and stop before it;
``role_observers`` see every soft-state change, ``apply_observers`` every applied batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic

from raftmq.core.config import RaftConfig
from raftmq.core.messages import AppendEntries, Message
from raftmq.core.raft import RaftCore
from raftmq.core.ready import Ready
from raftmq.core.types import Entry, HardState, LogReadResult, Role, SoftState
from raftmq.errors import NodeStopped, NotLeader, StorageError, WriteRejected
from raftmq.node.applier import Applier
from raftmq.node.requests import RequestServer
from raftmq.node.sessions import (
    DEFAULT_MAX_SESSION_GAP,
    DEFAULT_SESSION_EXPIRY_ENTRIES,
    Original,
    SessionTable,
)
from raftmq.node.types import OnCommit, OnRecord, Service, ServiceHost, T
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import Record
from raftmq.protocol.requests import NodeStatus
from raftmq.protocol.watermark import encode_watermark
from raftmq.storage.port import PersistBatch, Storage
from raftmq.transport.port import Transport

__all__ = ["Node"]

logger = logging.getLogger("raftmq.node.node")

_MAX_QUEUED_MESSAGES = 100_000  # inbound Raft messages buffered while the loop is busy
_MAX_CATCHUP_TICKS = 3  # ticks replayed at once after a stall (never a burst of elections)
_STORAGE_RETRY = (0.05, 2.0)  # first and maximal back-off between failed saves, seconds


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
    ) -> None:
        self.config = config.validate()
        self._storage = storage
        self._transport = transport
        self.tick_interval = tick_interval
        self.write_timeout = write_timeout
        self.max_write_bytes = max_write_bytes
        self._seed = seed
        self.allow_fault_injection = allow_fault_injection  # serve "isolate"/"rejoin" requests
        self._core: RaftCore | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._inbox: deque[Message] = deque()
        self._proposals: deque[tuple[bytes, asyncio.Future[Commit]]] = deque()
        self._pending: dict[int, tuple[int, asyncio.Future[Commit]]] = {}  # index -> (term, fut)
        self._stopping = False
        self._durable_vote: tuple[int, str | None] = (0, None)  # (term, vote) known saved
        self._isolated = False  # fault injection: inbound Raft messages are discarded
        self._storage_ok = True
        self._last_leader_contact: float | None = None
        # Bookkeeping not yet saved (applied index, sessions, watermark, a commit-only hard
        # state): it rides with the next save of entries, or is flushed when the loop idles.
        self._deferred: PersistBatch | None = None
        self._role_observers: list[Callable[[SoftState], None]] = []  # on soft state changes
        # after each applied batch, with its entries (persisted, applied)
        self._apply_observers: list[Callable[[tuple[Entry, ...]], None]] = []
        self._services: list[Service] = []  # started/stopped with the node, in order
        self._counters: dict[str, int] = {
            "inbox_overflow": 0,
            "apply_errors": 0,
            "apply_decode_errors": 0,
            "storage_retries": 0,
        }
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
        """Open storage, rebuild the core from it, connect the transport and run."""
        if self._task is not None:
            raise RuntimeError("node already started")
        await self._storage.open()
        initial = await self._storage.initial_state()
        await self._applier.restore(self._storage, initial)
        self._core = RaftCore(self.config, initial, seed=self._seed)
        self._durable_vote = (initial.hard_state.term, initial.hard_state.voted_for)
        logger.info(
            "%s: starting in term %s (last index %s, commit %s, applied %s)",
            self.node_id,
            initial.hard_state.term,
            initial.last_index,
            initial.hard_state.commit,
            initial.applied,
        )
        await self._transport.start(self._on_message, RequestServer(_Host(self)))
        self._task = asyncio.create_task(self._run(), name=f"raftmq-node-{self.node_id}")
        for service in self._services:
            await service.start()

    async def stop(self) -> None:
        """Stop the loop, fail pending writes with NodeStopped, close transport and storage."""
        if self._stopping:
            return
        for service in reversed(self._services):
            await service.stop()  # ingest returns its unacked writes while we still run
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail_pending(NodeStopped(f"node {self.node_id} stopped"))
        await self._transport.stop()
        await self._storage.close()
        logger.info("%s: stopped", self.node_id)

    # ------------------------------------------------------------------- public

    @property
    def _running_core(self) -> RaftCore:
        if self._core is None:
            raise NodeStopped("node not started")
        return self._core

    @property
    def is_leader(self) -> bool:
        """True while this node leads."""
        return self._core is not None and self._core.role is Role.LEADER

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
    def leader_id(self) -> str | None:
        """The known leader of the current term, if any."""
        return self._core.leader_id if self._core is not None else None

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
        WriteRejected for size). Records submitted without an await in between go into
        ONE proposal batch, in submission order (the ingest path relies on it). The
        future never times out by itself: the caller bounds its wait."""
        return self._submit_payload(record.encode())

    def _submit_payload(self, payload: bytes) -> asyncio.Future[Commit]:
        if self._stopping or self._task is None:
            raise NodeStopped(f"node {self.node_id} is not running")
        core = self._running_core
        if core.role is not Role.LEADER:
            raise NotLeader(core.leader_id)
        if len(payload) > self.max_write_bytes:
            raise WriteRejected(
                f"write of {len(payload)} bytes exceeds max_write_bytes={self.max_write_bytes}"
            )
        future: asyncio.Future[Commit] = asyncio.get_running_loop().create_future()
        self._proposals.append((payload, future))
        self._wake.set()
        return future

    async def _propose_watermark(self, index: int) -> Commit:
        if self._stopping or self._task is None:
            raise NodeStopped(f"node {self.node_id} is not running")
        if self._running_core.role is not Role.LEADER:
            raise NotLeader(self._running_core.leader_id)
        future: asyncio.Future[Commit] = asyncio.get_running_loop().create_future()
        self._proposals.append((encode_watermark(index), future))
        self._wake.set()
        return await asyncio.wait_for(future, self.write_timeout)

    def _save_fanout_watermark(self, index: int) -> None:
        # The loop is the only writer of storage (adapters cache log bounds per save).
        applier = self._applier
        applier.fanout_watermark = max(applier.fanout_watermark, index)
        self._defer(PersistBatch(fanout_watermark=applier.fanout_watermark))
        self._wake.set()

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
        core = self._running_core
        loop = asyncio.get_running_loop()
        if core.role is Role.LEADER:
            contact: float | None = 0.0
        elif self._last_leader_contact is None:
            contact = None
        else:
            contact = round(loop.time() - self._last_leader_contact, 3)
        return NodeStatus(
            cluster=self._transport.cluster,
            node_id=self.node_id,
            role=core.role,
            term=core.term,
            leader_id=core.leader_id,
            commit=core.commit_index,
            applied=self._applier.applied,
            last_index=core.last_index,
            voters=list(self.config.voters),
            last_contact=contact,
            storage_ok=self._storage_ok,
            counters=dict(self._counters),
            transport=self._transport.stats.snapshot(),
        )

    async def transfer_leadership(self, to: str) -> None:
        """Ask the leader to hand leadership to ``to`` (returns once requested)."""
        self._running_core.transfer_leadership(to)
        self._wake.set()

    # ----------------------------------------------------------- transport hooks

    def _on_message(self, message: Message) -> None:
        if self._isolated:
            return
        if len(self._inbox) >= _MAX_QUEUED_MESSAGES:
            self._inbox.popleft()  # oldest first: Raft tolerates loss, not unbounded memory
            self._counters["inbox_overflow"] += 1
        self._inbox.append(message)
        self._wake.set()

    # --------------------------------------------------------------------- loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_interval
        try:
            while not self._stopping:
                delay = next_tick - loop.time()
                if delay > 0 and not (self._inbox or self._proposals):
                    self._wake.clear()
                    # asyncio.timeout, not wait_for: no task per wait (this runs per message)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                if self._stopping:
                    break
                now = loop.time()
                ticked = now >= next_tick
                if ticked:
                    elapsed = int((now - next_tick) / self.tick_interval) + 1
                    for _ in range(min(elapsed, _MAX_CATCHUP_TICKS)):
                        self._running_core.tick()
                    next_tick += elapsed * self.tick_interval
                self._step_inbox(now)
                self._propose_queued()
                await self._handle_ready()
                if ticked:
                    await self._flush_deferred()
            if self._deferred is not None:  # stopping: save what was applied
                batch, self._deferred = self._deferred, None
                await self._persist(batch)
        except Exception:
            logger.exception("%s: node loop failed; stopping", self.node_id)
            self._fail_pending(NodeStopped(f"node {self.node_id} loop failed"))
            self._stopping = True
            raise

    def _step_inbox(self, now: float) -> None:
        core = self._running_core
        while self._inbox:
            message = self._inbox.popleft()
            core.step(message)
            if isinstance(message, AppendEntries) and message.sender == core.leader_id:
                self._last_leader_contact = now

    def _propose_queued(self) -> None:
        if not self._proposals:
            return
        batch = [(p, f) for p, f in self._proposals if not f.done()]
        self._proposals.clear()
        if not batch:
            return
        core = self._running_core
        try:
            first = core.propose_batch([payload for payload, _ in batch])
        except NotLeader as exc:
            for _, future in batch:
                future.set_exception(NotLeader(exc.leader_hint))
            return
        for offset, (_, future) in enumerate(batch):
            self._pending[first + offset] = (core.term, future)

    async def _handle_ready(self) -> None:
        core = self._running_core
        while core.has_ready() and not self._stopping:
            ready = core.ready()
            if ready.soft_state is not None:
                soft = ready.soft_state
                logger.info(
                    "%s: %s in term %s (leader: %s)",
                    self.node_id,
                    soft.role.value,
                    soft.term,
                    soft.leader_id or "unknown",
                )
                for observer in self._role_observers:
                    observer(soft)
            # Term and vote must be durable before any message leaves; a change of the
            # commit index alone need not be (commit is a fact held by a majority's logs,
            # Fig. 2 calls it volatile), so it is saved with the applied index below.
            hard = ready.hard_state
            votes_durable = hard is None or (hard.term, hard.voted_for) == self._durable_vote
            defer_hard = hard is not None and votes_durable and bool(ready.committed_entries)
            early: list[Message] = []
            late: list[Message] = list(ready.messages)
            if votes_durable and ready.truncate_from is None:
                # Thesis §10.2.1: the leader may write its log in parallel with replicating
                # it. Safe here because replies are only stepped after this save returns,
                # so the leader never counts its own entries before they are durable.
                early = [m for m in late if isinstance(m, AppendEntries)]
                late = [m for m in late if not isinstance(m, AppendEntries)]
            if early:
                self._transport.send(early)
            # Entries committed before this Ready's new entries are durable already (the
            # leader steps no reply before its save returned; a follower's commit never
            # covers entries it has not saved): apply them before the save, so that a
            # commit does not wait for the save of newer entries, and their bookkeeping
            # rides with this very save.
            committed = ready.committed_entries
            apply_first = bool(committed) and ready.truncate_from is None
            if apply_first and ready.entries:
                apply_first = committed[-1].index < ready.entries[0].index
            if apply_first:
                await self._apply_committed(ready, hard if defer_hard else None)
            batch = PersistBatch(
                hard_state=None if defer_hard else hard,
                truncate_from=ready.truncate_from,
                entries=ready.entries,
            )
            if not batch.is_empty() and self._deferred is not None:
                batch, self._deferred = self._deferred.followed_by(batch), None
            await self._persist(batch)
            if hard is not None:
                self._durable_vote = (hard.term, hard.voted_for)
            if late:
                self._transport.send(late)
            if committed and not apply_first:
                await self._apply_committed(ready, hard if defer_hard else None)
            core.advance(ready)
            await self._serve_reads(ready)

    async def _apply_committed(self, ready: Ready, hard: HardState | None) -> None:
        """Apply ``ready``'s committed entries (raftmq.node.applier); defer their bookkeeping (and
        ``hard``, a commit-only hard state) to the next save."""
        # Saved with the next entries, or when the loop idles: a crash before that
        # repeats these callbacks after restart (the on-commit contract).
        self._defer(await self._applier.apply(ready.committed_entries, hard))
        for apply_observer in self._apply_observers:
            apply_observer(ready.committed_entries)

    def _defer(self, batch: PersistBatch) -> None:
        self._deferred = batch if self._deferred is None else self._deferred.followed_by(batch)

    async def _flush_deferred(self) -> None:
        # Once per tick, and only when no work is waiting: under traffic the bookkeeping
        # rides with the next save of entries; flushing at every idle moment would put an
        # extra transaction in front of the next write that arrives during it.
        if self._deferred is not None and not (self._inbox or self._proposals):
            batch, self._deferred = self._deferred, None
            await self._persist(batch)

    async def _persist(self, batch: PersistBatch) -> None:
        if batch.is_empty():
            return
        delay = _STORAGE_RETRY[0]
        while True:
            try:
                await self._storage.save(batch)
            except StorageError as exc:
                # Nothing that depends on this batch has left the node: retrying is safe.
                self._counters["storage_retries"] += 1
                if self._storage_ok:
                    logger.error("%s: storage save failed, retrying: %s", self.node_id, exc)
                self._storage_ok = False
                if self._stopping:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _STORAGE_RETRY[1])
                continue
            if not self._storage_ok:
                logger.info("%s: storage is back", self.node_id)
                self._storage_ok = True
            return

    async def _serve_reads(self, ready: Ready) -> None:
        for read in ready.reads:
            entries = await self._storage.entries(read.lo, read.hi, read.max_bytes)
            self._running_core.step_read(LogReadResult(read=read, entries=tuple(entries)))

    def _fail_pending(self, error: Exception) -> None:
        for _, future in self._proposals:
            if not future.done():
                future.set_exception(error)
        self._proposals.clear()
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()


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
        return self._node.config.voters

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
        return node._applier.sessions.original(producer_id, seq, node._running_core.last_index + 1)

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
        return await self._node.write_record(record)

    async def transfer_leadership(self, to: str) -> None:
        await self._node.transfer_leadership(to)

    def set_isolated(self, isolated: bool) -> None:
        self._node._isolated = isolated
