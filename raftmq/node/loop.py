"""The node loop: the one asyncio task that owns a node's RaftCore and drives it with a
Storage and a Transport, obeying *persist before send*.

Per wake-up (a message, a write, or a tick)::

    tick the core for every elapsed tick_interval
    step every queued message; propose the queued writes as one batch (bounded per turn)
    while the core has a Ready: run the steps raftmq.node.driver plans for it, e.g.
        transport.send(AppendEntries)     # leader only, term and vote already durable
        apply committed entries that precede the new ones (on_commit; node.applier)
        storage.save(hard state + truncation + entries + deferred bookkeeping)  # ONE txn
        transport.send(other messages)    # votes and replies only after the save returned
        core.advance(ready); serve storage reads the core asked for
        every snapshot_entries applied: take a snapshot (sessions, watermark, applied
        index, the user's hook), storage.save_snapshot, storage.compact(first_index - 1)
    about once a second, at a tick: when the log passed a retention bound (node.retention)
        take a snapshot if the point needs one, then compact up to the retention point
    a Ready with a snapshot from the leader: storage.install_snapshot (ONE txn, with the
        snapshot's sessions and watermark), restore the applier, then send and apply
    once per tick, when idle: save the deferred bookkeeping (applied index, sessions, ...)

A storage operation that fails with StorageError (the database went away) is retried with
back-off, reads as well as saves; nothing that depends on it happens meanwhile. A save is
idempotent, so retrying one whose commit landed but whose answer was lost is safe (the
adapters recognise the batch). Anything else -- a store that refuses the batch or is not
a raftmq database any more (StorageRefused, StoreMismatch), a bug -- ends the loop: it is
logged, pending writes fail with NodeStopped, and ``failure`` holds the error, so that the
node reports it (``status().loop_ok``, ``Node.wait_failed``) and the process exits.

The simulator runs the same driver, so the safety search tests this order (the rules
and why each is safe are in raftmq.node.driver).

No lock guards Raft state: only this task touches the core. Other coroutines (`write`,
`status`, leadership transfer) hand work to it through its queues (``inbox``,
``proposals``, ``transfers``) and futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from raftmq.core.membership import ConfChange
from raftmq.core.messages import AppendEntries, Message
from raftmq.core.raft import RaftCore
from raftmq.core.ready import Ready
from raftmq.core.types import Entry, LogReadResult, Role, SoftState
from raftmq.errors import (
    ConfigError,
    ConfigPending,
    NodeStopped,
    NotLeader,
    StorageError,
    StorageRefused,
    StoreMismatch,
)
from raftmq.node.applier import Applier
from raftmq.node.driver import Apply, Persist, PersistSnapshot, ReadyDriver, Restore, Send
from raftmq.node.loopstats import LoopStats, clock
from raftmq.node.retention import CHECK_INTERVAL, Retention
from raftmq.protocol.receipts import Commit
from raftmq.storage.port import PersistBatch, Storage
from raftmq.transport.port import Transport

logger = logging.getLogger("raftmq.node.loop")
R = TypeVar("R")
_K = TypeVar("_K")  # what a request queue holds beside each future
_R = TypeVar("_R")  # what its future resolves to

_MAX_QUEUED_MESSAGES = 100_000  # inbound Raft messages buffered while the loop is busy
_MAX_CATCHUP_TICKS = 3  # ticks replayed at once after a stall (never a burst of elections)
# Writes proposed in one loop turn, by count and bytes: a burst of huge batches is
# proposed over several turns, each followed by its save and sends, so that ticks and
# heartbeats keep their pace (one turn's save must stay well inside an election timeout).
_MAX_PROPOSED_PER_TURN = 512
_MAX_PROPOSED_BYTES_PER_TURN = 1 << 20
_STORAGE_RETRY = (0.05, 2.0)  # first and maximal back-off between failed operations, s
# A leader whose loop is held up in one turn (a slow save, apply or compaction) sends its
# followers heartbeats from a timer (RaftCore.keepalives), so that a disk hiccup does not
# cost an election; for at most this many election timeouts of one turn, after which the
# followers may elect a leader whose disk answers.
KEEPALIVE_ELECTION_TIMEOUTS = 4


class _Abandoned(Exception):
    """A storage retry given up because the loop is stopping (a clean stop, not a failure)."""


class NodeLoop:
    """The state of one node's loop task and the loop itself (see the module docstring).

    :class:`raftmq.node.node.Node` creates it, starts :meth:`run` as a task and hands it
    work; everything here runs on the node's event loop.
    """

    def __init__(
        self,
        *,
        core: RaftCore,
        storage: Storage,
        transport: Transport,
        applier: Applier[Any],
        pending: dict[int, tuple[int, asyncio.Future[Commit]]],
        counters: dict[str, int],
        durable_vote: tuple[int, str | None],
        tick_interval: float,
        snapshot_entries: int = 0,
        retention: Retention | None = None,
    ) -> None:
        self.core = core  # owned by the loop task; others only read it
        self.node_id = core.id  # this node
        self._storage = storage
        self._transport = transport
        self._applier = applier  # the apply path: callbacks, sessions, write results
        self._counters = counters  # shared with the node's status
        self.tick_interval = tick_interval  # seconds per logical tick
        self.snapshot_entries = snapshot_entries  # applied entries between snapshots; 0: never
        # The log kept for replay (raftmq.node.retention): older entries are compacted.
        self.retention = (retention or Retention()).check()
        self._retention_check_at = 0.0  # loop time of the next retention check
        self.log_first_index = core.first_index  # the first index storage holds (status)
        # The highest index storage may compact up to, besides what the core keeps (None:
        # no other bound): the fan-out watermark where the queue services run, since
        # fan-out reads its entries from storage.
        self.compaction_floor: Callable[[], int] | None = None
        self.wake = asyncio.Event()  # set when there is work for the loop
        self.inbox: deque[Message] = deque()  # inbound Raft messages, stepped in order
        self.proposals: deque[tuple[bytes, asyncio.Future[Commit]]] = deque()  # next batch
        self.transfers: deque[tuple[str, asyncio.Future[None]]] = deque()  # (target, done)
        # membership changes for the core; each future resolves when its entry commits
        self.conf_changes: deque[tuple[ConfChange, asyncio.Future[Commit]]] = deque()
        # changes the leader cannot make yet (ConfigPending): asked again at each tick
        self._conf_later: list[tuple[ConfChange, asyncio.Future[Commit]]] = []
        # ReadIndex (raftmq.core.reads): reads to hand the core, reads it holds (by request
        # id), and waiters for an applied index (a heap of (index, n, future)).
        self.read_requests: deque[tuple[int, asyncio.Future[int]]] = deque()
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self.pending = pending  # index -> (term, future) of proposed writes (the applier's)
        self.stopping = False  # set once: the loop ends at its next turn
        self.ended = asyncio.Event()  # set when run() returned, cleanly or not
        self.failure: BaseException | None = None  # what ended the loop, if it failed
        self._stop_requested = asyncio.Event()  # cuts a storage back-off short
        self.isolated = False  # fault injection: inbound Raft messages are discarded
        self.storage_ok = True  # False while storage operations fail and are retried
        self.last_leader_contact: float | None = None  # loop time of the last AppendEntries
        # The Ready order, the durable vote and the bookkeeping deferred to the next save
        self._driver = ReadyDriver(durable_vote)
        self.role_observers: list[Callable[[SoftState], None]] = []  # on soft state changes
        # after each applied batch, with its entries (persisted, applied)
        self.apply_observers: list[Callable[[tuple[Entry, ...]], None]] = []
        self.stats = LoopStats(self.proposals, pending)  # for metrics (raftmq.node.loopstats)
        # Keepalives (_keep_lease): the loop time the current turn began (None while the
        # loop waits for work), the timer, and whether this turn was reported as slow.
        self._turn_began: float | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._turn_reported: str | None = None  # None, "slow" or "gave up"
        # Removal (_check_removed): whether a configuration in force here named this
        # node, and, once one that leaves it out is applied here and the leader went
        # quiet, the index of that configuration entry.
        self._was_member = self.node_id in core.membership.members
        self.removed_at: int | None = None
        self.removed = asyncio.Event()

    def propose(self, payload: bytes) -> asyncio.Future[Commit]:
        """Queue ``payload`` for the next proposal batch; the future resolves at commit."""
        future: asyncio.Future[Commit] = asyncio.get_running_loop().create_future()
        self.proposals.append((payload, future))
        self.wake.set()
        return future

    def request_transfer(self, to: str) -> asyncio.Future[None]:
        """Queue a leadership transfer to ``to`` for the loop; the future resolves once
        the core started it, or fails with NotLeader / ConfigError."""
        return self._queue(self.transfers, to)

    def request_conf_change(self, change: ConfChange) -> asyncio.Future[Commit]:
        """Queue a membership change for the loop; the future resolves once its
        configuration entry commits, or fails with NotLeader, ConfigError (it does not
        apply), WriteRejected (leadership changed and the entry was overwritten) or
        NodeStopped. While another change is pending or the leader's term has no commit
        yet (ConfigPending), it is asked again at each tick."""
        return self._queue(self.conf_changes, change)

    def request_read(self) -> asyncio.Future[int]:
        """Queue a linearizable read for the loop; the future resolves with its read index
        (thesis §6.4), or fails with NotLeader (no leader known, or leadership changed
        before the read was confirmed) or NodeStopped."""
        return self._queue(self.read_requests, next(self._ids))

    def _queue(self, queue: deque[tuple[_K, asyncio.Future[_R]]], key: _K) -> asyncio.Future[_R]:
        """Queue ``key`` with a new future for the loop (failed at once with NodeStopped
        once the loop is stopping) and wake the loop."""
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        if self.stopping:
            future.set_exception(NodeStopped(f"node {self.node_id} is not running"))
            return future
        queue.append((key, future))
        self.wake.set()
        return future

    def wait_applied(self, index: int) -> asyncio.Future[None]:
        """A future that resolves once the callbacks of every entry up to ``index`` ran
        here (NodeStopped when the loop ends first)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._applier.applied >= index:
            future.set_result(None)
        elif self.stopping:
            future.set_exception(NodeStopped(f"node {self.node_id} is not running"))
        else:
            heapq.heappush(self._applied_waiters, (index, next(self._ids), future))
        return future

    def stop(self) -> None:
        """End :meth:`run` at its next turn (it saves what was applied first)."""
        self.stopping = True
        self.stats.running = False
        self._stop_requested.set()
        self.wake.set()

    def on_message(self, message: Message) -> None:
        if self.isolated:
            return
        received = self.stats.received
        received[type(message)] = received.get(type(message), 0) + 1
        if len(self.inbox) >= _MAX_QUEUED_MESSAGES:
            self.inbox.popleft()  # oldest first: Raft tolerates loss, not unbounded memory
            self._counters["inbox_overflow"] += 1
        self.inbox.append(message)
        self.wake.set()

    async def run(self) -> None:
        """The loop (see the module docstring); returns when stopped or failed, never
        raises: a failure is logged and kept in ``failure``."""
        self.stats.running = not self.stopping
        self._keepalive_timer = asyncio.get_running_loop().call_later(
            self._heartbeat_interval(), self._keep_lease
        )
        try:
            await self._run()
        except _Abandoned:
            logger.warning("%s: stopped while storage was failing", self.node_id)
        except Exception as exc:
            logger.exception("%s: node loop failed; stopping", self.node_id)
            self.failure = exc
            if isinstance(exc, StorageError):
                self.storage_ok = False
            self.stopping = True
            self.fail_pending(NodeStopped(f"node {self.node_id} loop failed: {exc}"))
        finally:
            if self._keepalive_timer is not None:
                self._keepalive_timer.cancel()
            self._turn_began = None
            self.stats.running = False
            self.ended.set()

    def _check_removed(self, now: float) -> None:
        """Once per tick: a member that the configuration in force leaves out, applied
        here, and whose leader has sent nothing for an election timeout (the leader
        sends a removed member the log until it holds its removal committed, then stops)
        was removed: say so, once. A node catching up through an old removal of its id
        keeps hearing the leader, so it is not fooled by history."""
        core = self.core
        if self.node_id in core.membership.members:
            self._was_member = True
            return
        if not self._was_member or self.removed_at is not None:
            return
        index = core.config_index
        quiet = self.core.config.election_ticks * self.tick_interval
        contact = self.last_leader_contact
        if core.applied_index < index or (contact is not None and now - contact < quiet):
            return
        self.removed_at = index
        self.removed.set()
        logger.warning(
            "%s: removed from the cluster by the configuration at index %s (voters %s); "
            "it takes no part any more",
            self.node_id,
            index,
            ",".join(core.membership.voters),
        )

    def _heartbeat_interval(self) -> float:
        return self.core.config.heartbeat_ticks * self.tick_interval

    def _keep_lease(self) -> None:
        """Every heartbeat interval, beside the loop task: while one turn of a leader's
        loop has lasted longer than a heartbeat interval (its task waits for a slow save,
        apply or compaction), send the followers the heartbeats the core would send
        (:meth:`RaftCore.keepalives`, read-only, so the core is never changed outside
        the loop task) so they keep its lease instead of electing another leader. Not
        past KEEPALIVE_ELECTION_TIMEOUTS election timeouts of one turn."""
        interval = self._heartbeat_interval()
        loop = asyncio.get_running_loop()
        self._keepalive_timer = loop.call_later(interval, self._keep_lease)
        began = self._turn_began
        if began is None or self.stopping or self.core.role is not Role.LEADER:
            return
        held = loop.time() - began
        if held < interval:
            return
        election_timeout = self.core.config.election_ticks * self.tick_interval
        if held > KEEPALIVE_ELECTION_TIMEOUTS * election_timeout:
            if self._turn_reported != "gave up":
                self._turn_reported = "gave up"
                logger.warning(
                    "%s: one loop turn has lasted %.1f s; no more heartbeats until it ends, "
                    "so the followers may elect another leader",
                    self.node_id,
                    held,
                )
            return
        messages = self.core.keepalives()
        if messages:
            self.stats.count_sent(messages)
            self._transport.send(messages)
            self._counters["keepalives"] += 1
        if held >= election_timeout and not self._turn_reported:
            self._turn_reported = "slow"
            logger.warning(
                "%s: one loop turn has lasted %.2f s, longer than an election timeout "
                "(a slow save or apply?); heartbeats keep the followers meanwhile",
                self.node_id,
                held,
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_interval
        while not self.stopping:
            self._turn_began = None
            delay = next_tick - loop.time()
            if delay > 0 and not (
                self.inbox
                or self.proposals
                or self.transfers
                or self.read_requests
                or self.conf_changes
            ):
                self.wake.clear()
                # asyncio.timeout, not wait_for: no task per wait (this runs per message)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
            if self.stopping:
                break
            now = loop.time()
            self._turn_began, self._turn_reported = now, None
            ticked = now >= next_tick
            if ticked:
                elapsed = int((now - next_tick) / self.tick_interval) + 1
                for _ in range(min(elapsed, _MAX_CATCHUP_TICKS)):
                    self.core.tick()
                next_tick += elapsed * self.tick_interval
            self._step_inbox(now)
            self._start_transfers()
            if ticked and self._conf_later:
                self.conf_changes.extend(self._conf_later)
                self._conf_later.clear()
            self._start_conf_changes()
            self._start_reads()
            self._propose_queued()
            await self._handle_ready()
            if ticked:
                self._check_removed(now)
                self._forget_abandoned_reads()
                await self._flush_deferred()
                if self.retention.active and now >= self._retention_check_at:
                    self._retention_check_at = now + CHECK_INTERVAL
                    await self._maybe_retain()
        deferred = self._driver.take_deferred()  # stopping: save what was applied
        if deferred is not None:
            await self._persist(deferred)

    def _step_inbox(self, now: float) -> None:
        core = self.core
        while self.inbox:
            message = self.inbox.popleft()
            core.step(message)
            if isinstance(message, AppendEntries) and message.sender == core.leader_id:
                self.last_leader_contact = now
                self.stats.heard_commit(message.leader_commit)

    def _start_transfers(self) -> None:
        while self.transfers:
            to, future = self.transfers.popleft()
            if future.done():
                continue
            try:
                self.core.transfer_leadership(to)
            except (NotLeader, ConfigError) as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

    def _start_conf_changes(self) -> None:
        core = self.core
        while self.conf_changes:
            change, future = self.conf_changes.popleft()
            if future.done():
                continue
            try:
                index = core.propose_conf_change(change)
            except NotLeader as exc:
                future.set_exception(NotLeader(exc.leader_hint, str(exc)))
            except ConfigPending:
                # Another change (the leader's own pins, say) or the term's first entry
                # is not committed yet: it will be shortly; the caller's timeout bounds it.
                self._conf_later.append((change, future))
            except ConfigError as exc:
                future.set_exception(exc)
            else:
                # Resolved like a write when the entry commits (raftmq.node.applier).
                self.pending[index] = (core.term, future)
                logger.info(
                    "%s: proposed %s %s at %s", self.node_id, change.kind, change.node_id, index
                )

    def _start_reads(self) -> None:
        core = self.core
        while self.read_requests:
            request_id, future = self.read_requests.popleft()
            if future.done():
                continue
            try:
                core.read_index(request_id)
            except NotLeader as exc:
                future.set_exception(NotLeader(exc.leader_hint, str(exc)))
            else:
                self._reads[request_id] = future

    def _answer_reads(self, ready: Ready) -> None:
        for state in ready.read_states:
            future = self._reads.pop(state.request_id, None)
            if future is None or future.done():
                continue
            if state.index is None:
                future.set_exception(
                    NotLeader(
                        self.core.leader_id,
                        "leadership changed before the read was confirmed; ask again",
                    )
                )
            else:
                future.set_result(state.index)

    def _forget_abandoned_reads(self) -> None:
        """Reads whose caller gave up (timed out) are forgotten, here and in the core."""
        if not any(future.done() for future in self._reads.values()):
            return
        for request_id in [r for r, future in self._reads.items() if future.done()]:
            del self._reads[request_id]
            self.core.forget_read(request_id)

    def _wake_applied(self) -> None:
        waiters, applied = self._applied_waiters, self._applier.applied
        while waiters and waiters[0][0] <= applied:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)

    def _propose_queued(self) -> None:
        proposals = self.proposals
        batch: list[tuple[bytes, asyncio.Future[Commit]]] = []
        size = 0
        # In submission order; what is left waits for the next turn (which comes at once).
        while proposals and len(batch) < _MAX_PROPOSED_PER_TURN:
            if batch and size + len(proposals[0][0]) > _MAX_PROPOSED_BYTES_PER_TURN:
                break
            payload, future = proposals.popleft()
            if not future.done():
                batch.append((payload, future))
                size += len(payload)
        if not batch:
            return
        core = self.core
        try:
            first = core.propose_batch([payload for payload, _ in batch])
        except NotLeader as exc:
            for _, future in batch:
                future.set_exception(NotLeader(exc.leader_hint))
            self._counters["proposals_failed"] += len(batch)
            return
        for offset, (_, future) in enumerate(batch):
            self.pending[first + offset] = (core.term, future)

    async def _handle_ready(self) -> None:
        core = self.core
        while core.has_ready() and not self.stopping:
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
                self.stats.saw_leader(soft.term, soft.leader_id)
                for observer in self.role_observers:
                    observer(soft)
            # The order (what is sent or applied before the save, what is deferred) is the
            # driver's, the same the simulator runs (raftmq.node.driver); here is the I/O.
            for step in self._driver.plan(ready):
                if isinstance(step, Send):
                    self.stats.count_sent(step.messages)
                    self._transport.send(step.messages)
                elif isinstance(step, Apply):
                    await self._apply_committed(step)
                elif isinstance(step, Persist):
                    await self._persist(self._driver.to_save(step))
                elif isinstance(step, PersistSnapshot):
                    await self._install_snapshot(step)
                elif isinstance(step, Restore):
                    self.log_first_index = step.snapshot.index + 1
                    await self._applier.install(step.snapshot)
                    self._wake_applied()
                    self._counters["snapshots_installed"] = (
                        self._counters.get("snapshots_installed", 0) + 1
                    )
                    logger.info(
                        "%s: installed the leader's snapshot at index %s (term %s)",
                        self.node_id,
                        step.snapshot.index,
                        step.snapshot.term,
                    )
                else:
                    core.advance(ready)
                    await self._serve_reads(ready)
                    self._answer_reads(ready)
            await self._maybe_snapshot()

    async def _install_snapshot(self, step: PersistSnapshot) -> None:
        """Install the leader's snapshot in storage with the sessions and watermark it
        carries, the Ready's hard state and entries, and the deferred bookkeeping: ONE
        transaction, retried like a save (the adapters recognise a retried install)."""
        snapshot = step.snapshot
        bookkeeping = self._applier.snapshot_bookkeeping(snapshot)
        whole = PersistSnapshot(snapshot, bookkeeping.followed_by(step.batch))
        batch = self._driver.to_save(whole)
        await self._retrying(
            "snapshot install",
            "storage_retries",
            lambda: self._storage.install_snapshot(snapshot, batch),
        )

    async def _maybe_snapshot(self) -> None:
        """Take a snapshot once ``snapshot_entries`` entries were applied since the last
        one: the core keeps it and trims its log (trailing entries stay); storage records
        it, then deletes the entries before the core's first index (and no entry that
        retention keeps)."""
        core = self.core
        applied = self._applier.applied
        last = core.snapshot.index if core.snapshot is not None else 0
        if self.snapshot_entries <= 0 or self.stopping or applied - last < self.snapshot_entries:
            return
        if core.applied_index != applied:
            return  # the core learns the applied index at advance: next time
        await self._take_snapshot(applied)
        retained = await self._retention_point() if self.retention.active else None
        await self._compact(retained)

    async def _maybe_retain(self) -> None:
        """Compact what retention lets go once the log passed a bound by its slack
        (raftmq.node.retention), taking a snapshot first when the point needs one."""
        core = self.core
        applied = self._applier.applied
        if self.stopping or core.applied_index != applied:
            return
        extent = await self._retrying("retention check", "storage_retries", self._storage.extent)
        if not self.retention.exceeded(extent, time.time()):
            return
        point = min(await self._retention_point(), applied - core.config.trailing_entries)
        if self.compaction_floor is not None:
            point = min(point, self.compaction_floor())
        if point < extent.first_index:
            return  # held back by trailing entries or the fan-out: nothing to gain now
        last = core.snapshot.index if core.snapshot is not None else 0
        if last < point:
            await self._take_snapshot(applied)
        await self._compact(point)

    async def _retention_point(self) -> int:
        retention = self.retention
        return await self._retrying(
            "retention check",
            "storage_retries",
            lambda: self._storage.retention_point(
                keep_entries=retention.entries,
                keep_bytes=retention.bytes,
                max_age=retention.age,
                now=time.time(),
            ),
        )

    async def _take_snapshot(self, applied: int) -> None:
        """Snapshot the state at ``applied`` (the core's applied index too) and save it."""
        core = self.core
        snapshot = core.take_snapshot(applied, await self._applier.take_snapshot())
        # The applied index must be durable before a snapshot at it (storage's invariant).
        await self._persist(self._driver.take_deferred())
        await self._retrying(
            "snapshot save", "storage_retries", lambda: self._storage.save_snapshot(snapshot)
        )
        self._counters["snapshots_taken"] = self._counters.get("snapshots_taken", 0) + 1
        logger.info(
            "%s: took a snapshot at index %s (%s bytes)",
            self.node_id,
            snapshot.index,
            len(snapshot.data),
        )

    async def _compact(self, retained: int | None) -> None:
        """Delete the stored entries before the core's first index, but none after
        ``retained`` (retention's point, None: no retention) or the compaction floor."""
        compact_to = self.core.first_index - 1
        if retained is not None:
            compact_to = min(compact_to, retained)
        if self.compaction_floor is not None:
            compact_to = min(compact_to, self.compaction_floor())
        await self._retrying(
            "compaction", "storage_retries", lambda: self._storage.compact(compact_to)
        )
        self.log_first_index = max(self.log_first_index, compact_to + 1)
        logger.info("%s: log compacted up to %s", self.node_id, compact_to)

    async def _apply_committed(self, step: Apply) -> None:
        """Apply the step's committed entries (raftmq.node.applier); defer their bookkeeping
        (and the step's commit-only hard state) to the next save."""
        # Saved with the next entries, or when the loop idles: a crash before that
        # repeats these callbacks after restart (the on-commit contract).
        self.defer(await self._applier.apply(step.entries, step.hard_state))
        for apply_observer in self.apply_observers:
            apply_observer(step.entries)
        if self._applied_waiters:
            self._wake_applied()

    def defer(self, batch: PersistBatch) -> None:
        """Save ``batch`` (bookkeeping, no log change) with the next save."""
        self._driver.defer(batch)

    async def _flush_deferred(self) -> None:
        # Once per tick, and only when no work is waiting: under traffic the bookkeeping
        # rides with the next save of entries; flushing at every idle moment would put an
        # extra transaction in front of the next write that arrives during it.
        if self._driver.deferred is not None and not (self.inbox or self.proposals):
            await self._persist(self._driver.take_deferred())

    async def _persist(self, batch: PersistBatch | None) -> None:
        if batch is None or batch.is_empty():
            return
        # Nothing that depends on this batch has left the node: retrying is safe, and a
        # retry of a batch whose commit landed is accepted by the store (idempotent).
        started = clock()
        await self._retrying("save", "storage_retries", lambda: self._storage.save(batch))
        took = clock() - started
        self.stats.save_seconds.observe(took)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: saved %s in %.2f ms", self.node_id, _described(batch), took * 1000)

    async def _serve_reads(self, ready: Ready) -> None:
        for read in ready.reads:
            entries = await self._retrying(
                "read",
                "storage_read_retries",
                partial(self._storage.entries, read.lo, read.hi, read.max_bytes),
            )
            self.core.step_read(LogReadResult(read=read, entries=tuple(entries)))

    async def _retrying(self, what: str, counter: str, operation: Callable[[], Awaitable[R]]) -> R:
        """``operation()``, retried with back-off while it fails with a StorageError that
        a retry may cure; a refusal or a foreign database is raised (the loop fails)."""
        delay = _STORAGE_RETRY[0]
        while True:
            try:
                result = await operation()
            except (StorageRefused, StoreMismatch):
                raise
            except StorageError as exc:
                self._counters[counter] = self._counters.get(counter, 0) + 1
                if self.storage_ok:
                    logger.error("%s: storage %s failed, retrying: %s", self.node_id, what, exc)
                self.storage_ok = False
                if self.stopping:
                    raise _Abandoned from exc
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop_requested.wait()
                delay = min(delay * 2, _STORAGE_RETRY[1])
                continue
            if not self.storage_ok:
                logger.info("%s: storage is back", self.node_id)
                self.storage_ok = True
            return result

    def fail_pending(self, error: Exception) -> None:
        """Fail every queued proposal, pending write, transfer and read with ``error``."""
        waiters: list[asyncio.Future[Any]] = [future for _, future in self.transfers]
        waiters += [future for _, future in (*self.conf_changes, *self._conf_later)]
        waiters += [future for _, future in self.read_requests]
        waiters += list(self._reads.values())
        waiters += [future for _, _, future in self._applied_waiters]
        for waiting in waiters:
            if not waiting.done():
                waiting.set_exception(error)
        self.transfers.clear()
        self.conf_changes.clear()
        self._conf_later.clear()
        self.read_requests.clear()
        self._reads.clear()
        self._applied_waiters.clear()
        writes = [future for _, future in self.proposals]
        writes += [future for _, future in self.pending.values()]
        self.proposals.clear()
        self.pending.clear()
        failed = [future for future in writes if not future.done()]
        for future in failed:
            future.set_exception(error)
        self._counters["proposals_failed"] += len(failed)


def _described(batch: PersistBatch) -> str:
    """What a save held, for its DEBUG line."""
    parts = []
    if batch.hard_state is not None:
        hard = batch.hard_state
        parts.append(f"term {hard.term} vote {hard.voted_for} commit {hard.commit}")
    if batch.truncate_from is not None:
        parts.append(f"log cut from {batch.truncate_from}")
    if batch.entries:
        parts.append(f"entries {batch.entries[0].index}..{batch.entries[-1].index}")
    if batch.applied is not None:
        parts.append(f"applied {batch.applied}")
    if batch.fanout_watermark is not None:
        parts.append(f"fan-out watermark {batch.fanout_watermark}")
    if batch.sessions:
        parts.append(f"{len(batch.sessions)} sessions")
    return ", ".join(parts) or "nothing"
