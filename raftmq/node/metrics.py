"""Prometheus metrics, liveness and readiness of a node (the table: docs/metrics.md).

``raftmq node`` serves them on ``metrics_port`` (:mod:`raftmq.node.metrics_server`). A
service that embeds a :class:`~raftmq.node.node.Node` mounts them itself, either as a
registry of the node's own::

    registry = metrics_registry(node)          # a CollectorRegistry holding NodeCollector
    body = prometheus_client.generate_latest(registry)

or by registering the collector in a registry it already serves::

    prometheus_client.REGISTRY.register(NodeCollector(node))

Everything is read at scrape time from what the node keeps anyway (``Node.status()``,
the node's counters, the transport's :class:`~raftmq.transport.port.TransportStats`, the
loop's :class:`~raftmq.node.loopstats.LoopStats`): no metric costs anything between
scrapes beyond the loop's few integer additions.

Threads: only the node's loop task writes node state, and there is no lock around it, so
:meth:`NodeCollector.collect` takes its :class:`NodeSnapshot` on the node's event loop --
directly when called there (``raftmq node``'s server runs on that loop), otherwise
through ``asyncio.run_coroutine_threadsafe`` with a timeout (a registry served from a
thread, e.g. ``prometheus_client.start_http_server``). A loop that does not answer in
time makes the scrape fail (TimeoutError), which Prometheus records as ``up == 0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from raftmq.core.types import Role
from raftmq.node.loopstats import Durations
from raftmq.node.node import Node
from raftmq.protocol.requests import NodeStatus

__all__ = [
    "DEFAULT_MAX_APPLY_LAG",
    "NodeCollector",
    "NodeSnapshot",
    "liveness",
    "metrics_registry",
    "readiness",
    "take_snapshot",
]

DEFAULT_MAX_APPLY_LAG = 100  # committed entries a ready node may still have to apply
SNAPSHOT_TIMEOUT = 2.0  # seconds a scrape from another thread waits for the node's loop


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """What one scrape reports, copied on the node's event loop."""

    node_id: str  # the node
    cluster: str  # its cluster name
    running: bool  # the loop runs (started, not stopping, not failed)
    failure: str | None  # what ended the loop, when it failed
    status: NodeStatus | None  # None before the node started
    pending_writes: int = 0  # this node's writes queued or proposed, not resolved yet
    leader_changes: int = 0  # new (term, leader) pairs seen since start
    leader_commit: int = 0  # the cluster's commit index as this node knows it
    fanout_watermark: int = 0  # highest index known published on the committed exchange
    save_seconds: Durations = field(default_factory=Durations)  # the loop's saves
    sent: dict[str, int] = field(default_factory=dict)  # Raft messages sent, by type
    received: dict[str, int] = field(default_factory=dict)  # Raft messages received, by type


def take_snapshot(node: Node[Any]) -> NodeSnapshot:
    """A snapshot of ``node``; call it on the node's event loop."""
    stats = node.loop_stats
    cluster = node.service_host.cluster
    if stats is None:  # not started
        return NodeSnapshot(node.node_id, cluster, running=False, failure=None, status=None)
    failure = node.failure
    status = node.status()
    return NodeSnapshot(
        node_id=node.node_id,
        cluster=cluster,
        running=stats.running and failure is None,
        failure=None if failure is None else repr(failure)[:200],
        status=status,
        pending_writes=stats.pending_writes,
        leader_changes=stats.leader_changes,
        leader_commit=max(stats.leader_commit, status.commit),
        fanout_watermark=node.service_host.fanout_watermark,
        save_seconds=stats.save_seconds.copy(),
        sent={_snake(kind.__name__): n for kind, n in stats.sent.items()},
        received={_snake(kind.__name__): n for kind, n in stats.received.items()},
    )


def liveness(snapshot: NodeSnapshot) -> tuple[bool, str]:
    """``(alive, reason)``: alive while the node's loop runs (``/healthz``)."""
    if snapshot.status is None:
        return False, "node not started"
    if snapshot.failure is not None:
        return False, f"node loop failed: {snapshot.failure}"
    if not snapshot.running:
        return False, "node stopped"
    return True, "node loop running"


def readiness(
    snapshot: NodeSnapshot, max_apply_lag: int = DEFAULT_MAX_APPLY_LAG
) -> tuple[bool, str]:
    """``(ready, reason)`` (``/readyz``): alive, a voter of its configuration, a leader
    known, storage working, and at most ``max_apply_lag`` committed entries not applied --
    counted from the leader's commit index as last announced to this node, so that a node
    that restarts far behind is not ready before it caught up."""
    alive, reason = liveness(snapshot)
    status = snapshot.status
    if not alive or status is None:
        return False, reason
    if snapshot.node_id not in status.voters:
        return False, f"not a voter of the configuration {','.join(status.voters)}"
    if status.leader_id is None:
        return False, f"no known leader in term {status.term}"
    if not status.storage_ok:
        return False, "storage failing (retrying)"
    commit = max(status.commit, snapshot.leader_commit)
    if commit - status.applied > max_apply_lag:
        return False, f"catching up: applied {status.applied} of commit {commit}"
    return True, f"ready: {status.role.value} in term {status.term}, leader {status.leader_id}"


class NodeCollector:
    """A prometheus_client collector of one node's metrics (see the module docstring)."""

    def __init__(self, node: Node[Any], *, max_apply_lag: int = DEFAULT_MAX_APPLY_LAG) -> None:
        self.node = node  # the node reported on
        self.max_apply_lag = max_apply_lag  # readiness bound, as in :func:`readiness`
        # The node's event loop: the one running here, else the first one scraped on.
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Name the node's event loop: needed only for a collector made outside it and
        scraped from another thread before any scrape on the loop."""
        self._loop = loop

    def snapshot(self) -> NodeSnapshot:
        """A snapshot of the node, taken on its event loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and (self._loop is None or running is self._loop):
            if self._loop is None:
                self.bind(running)
            return take_snapshot(self.node)
        if self._loop is None:
            raise RuntimeError("NodeCollector: call bind(loop) before scraping from a thread")

        async def on_loop() -> NodeSnapshot:
            return take_snapshot(self.node)

        future = asyncio.run_coroutine_threadsafe(on_loop(), self._loop)
        return future.result(timeout=SNAPSHOT_TIMEOUT)

    def describe(self) -> list[Metric]:
        """The families (without samples), so that a registry checks names at register."""
        return list(_families(None, self.max_apply_lag))

    def collect(self) -> Iterator[Metric]:
        """The families with this scrape's samples."""
        yield from _families(self.snapshot(), self.max_apply_lag)


def metrics_registry(node: Node[Any], **kwargs: Any) -> CollectorRegistry:
    """A registry of ``node``'s metrics alone (``kwargs`` go to :class:`NodeCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, **kwargs))
    return registry


# ------------------------------------------------------------------------ families

# Node counters (``status().counters``; services add theirs by name) as labelled families:
# counter name -> (family, label values).
_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "proposals_committed": ("proposals_committed", ()),
    "proposals_failed": ("proposals_failed", ()),
    "inbox_overflow": ("rpc_dropped", ("inbound", "inbox_overflow")),
    "storage_retries": ("storage_retries", ("save",)),
    "storage_read_retries": ("storage_retries", ("read",)),
    "apply_errors": ("apply_errors", ("callback",)),
    "apply_decode_errors": ("apply_errors", ("decode",)),
    "apply_bad_watermarks": ("apply_errors", ("bad_watermark",)),
    "apply_unsessioned": ("apply_unsessioned", ()),
    "ingest_committed": ("ingest_writes", ("committed",)),
    "ingest_duplicates": ("ingest_writes", ("duplicate",)),
    "ingest_dead": ("ingest_writes", ("dead",)),
    "ingest_requeued": ("ingest_writes", ("requeued",)),
    "ingest_reconnects": ("ingest_reconnects", ()),
    "fanout_published": ("fanout_published", ()),
    "replay_answered": ("replay_requests", ("answered",)),
    "replay_refused": ("replay_requests", ("refused",)),
    "replay_throttled": ("replay_requests", ("throttled",)),
    "replay_failed": ("replay_requests", ("failed",)),
    "replay_compacted": ("replay_requests", ("compacted",)),
    "callbacks_skipped": ("callbacks_skipped", ()),
    "elections_timeout": ("elections_started", ("timeout",)),
    "elections_transfer": ("elections_started", ("transfer",)),
    "keepalives": ("lease_keepalives", ()),
    "strangers_dropped": ("stranger_messages_dropped", ()),
}

# name (without raftmq_ and _total) -> (help, label names)
_COUNTER_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "leader_changes_seen": ("Leaders (new term or leader) this node saw since it started", ()),
    "elections_started": ("Elections this node started since it started, by cause", ("cause",)),
    "proposals_committed": ("Writes proposed on this node that committed", ()),
    "proposals_failed": ("Writes proposed on this node that failed (leadership lost)", ()),
    "rpc_sent": ("Raft messages handed to the transport, by type", ("type",)),
    "rpc_received": ("Raft messages accepted from the transport, by type", ("type",)),
    "rpc_dropped": ("Raft messages dropped, by direction and reason", ("direction", "reason")),
    "requests_served": ("Client requests (status, write, ...) answered", ()),
    "broker_reconnects": ("Reconnections of the node's Raft broker connection", ()),
    "storage_retries": ("Failed storage operations retried, by operation", ("operation",)),
    "apply_errors": ("Committed entries whose apply failed (logged), by kind", ("kind",)),
    "apply_unsessioned": ("Writes applied without their client session", ()),
    "ingest_writes": ("Writes taken from the writes queue, by outcome", ("outcome",)),
    "ingest_reconnects": ("Reconnections of the ingest service", ()),
    "fanout_published": ("Committed writes confirmed published on the committed exchange", ()),
    "replay_requests": ("Replay (gap fill) requests, by outcome", ("outcome",)),
    "callbacks_skipped": (
        "Indexes a leader's snapshot covered whose commit callbacks never ran here (no hooks)",
        (),
    ),
    "lease_keepalives": (
        "Heartbeat rounds a leader sent while one slow loop turn (save, apply) held it up",
        (),
    ),
    "stranger_messages_dropped": (
        "Raft messages dropped for coming from a database that is not the sender's pinned one",
        (),
    ),
    "node_events": ("Other node counters, by name", ("name",)),
}


def _families(snapshot: NodeSnapshot | None, max_apply_lag: int) -> Iterator[Metric]:
    counters = {
        name: CounterMetricFamily(f"raftmq_{name}", text, labels=labels)
        for name, (text, labels) in _COUNTER_FAMILIES.items()
    }
    gauges = _gauges(snapshot, max_apply_lag)
    save = HistogramMetricFamily(
        "raftmq_save_duration_seconds",
        "Seconds per save of the node loop (one transaction; storage retries included)",
    )
    status = snapshot.status if snapshot is not None else None
    if snapshot is not None and status is not None:
        _count(counters, snapshot, status)
        durations = snapshot.save_seconds
        save.add_metric([], [(le, float(n)) for le, n in durations.buckets()], durations.total)
    yield from gauges
    yield from counters.values()
    yield save


def _gauges(snapshot: NodeSnapshot | None, max_apply_lag: int) -> list[GaugeMetricFamily]:
    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"raftmq_{name}", text, labels=labels)

    info = gauge("node_info", "The node's identity (always 1)", ("cluster", "node", "cluster_id"))
    up = gauge("node_loop_running", "1 while the node loop runs (0: stopped or failed)")
    ready = gauge("node_ready", "1 while /readyz answers 200 (see docs/metrics.md)")
    has_leader = gauge("has_leader", "1 when this node knows a leader of its term")
    is_leader = gauge("is_leader", "1 while this node leads")
    role = gauge("role", "1 for the node's current role", ("role",))
    term = gauge("term", "Current Raft term")
    commit = gauge("commit_index", "Highest log index known committed")
    cluster_commit = gauge("leader_commit_index", "The leader's commit index, as last heard")
    applied = gauge("applied_index", "Highest log index applied on this node")
    last = gauge("last_index", "Last index of this node's log")
    voters = gauge("voters", "Voters in this node's configuration")
    strangers = gauge("strangers", "Members answering from a database that is not their pinned one")
    storage = gauge("storage_ok", "0 while storage operations fail and are retried")
    contact = gauge("leader_contact_age_seconds", "Seconds since the leader was last heard")
    pending = gauge("proposals_pending", "This node's writes queued or proposed, unresolved")
    watermark = gauge("fanout_watermark", "Highest index known published on committed")
    lag = gauge("fanout_lag_entries", "Commit index minus the fan-out watermark")
    families = [info, up, ready, has_leader, is_leader, role, term, commit, cluster_commit]
    families += [applied, last]
    families += [voters, strangers, storage, contact, pending, watermark, lag]
    if snapshot is None:
        return families
    up.add_metric([], float(snapshot.running))
    ready.add_metric([], float(readiness(snapshot, max_apply_lag)[0]))
    status = snapshot.status
    if status is None:
        return families
    info.add_metric([status.cluster, status.node_id, status.cluster_id or ""], 1.0)
    has_leader.add_metric([], float(status.leader_id is not None))
    is_leader.add_metric([], float(status.role is Role.LEADER))
    for each in Role:
        role.add_metric([each.value], float(status.role is each))
    term.add_metric([], float(status.term))
    commit.add_metric([], float(status.commit))
    cluster_commit.add_metric([], float(snapshot.leader_commit))
    applied.add_metric([], float(status.applied))
    last.add_metric([], float(status.last_index))
    voters.add_metric([], float(len(status.voters)))
    strangers.add_metric([], float(len(status.strangers)))
    storage.add_metric([], float(status.storage_ok))
    if status.last_contact is not None:
        contact.add_metric([], status.last_contact)
    pending.add_metric([], float(snapshot.pending_writes))
    watermark.add_metric([], float(snapshot.fanout_watermark))
    lag.add_metric([], float(max(status.commit - snapshot.fanout_watermark, 0)))
    return families


def _count(
    counters: dict[str, CounterMetricFamily], snapshot: NodeSnapshot, status: NodeStatus
) -> None:
    def add(name: str, labels: tuple[str, ...], value: object) -> None:
        if isinstance(value, int):
            counters[name].add_metric(list(labels), float(value))

    add("leader_changes_seen", (), snapshot.leader_changes)
    for kind, n in sorted(snapshot.sent.items()):
        add("rpc_sent", (kind,), n)
    for kind, n in sorted(snapshot.received.items()):
        add("rpc_received", (kind,), n)
    transport = status.transport
    for direction, key in (("inbound", "dropped"), ("outbound", "send_dropped")):
        drops = transport.get(key)
        if isinstance(drops, dict):
            for reason, n in sorted(drops.items()):
                add("rpc_dropped", (direction, str(reason)), n)
    add("requests_served", (), transport.get("requests_served"))
    add("broker_reconnects", (), transport.get("reconnects"))
    for name, n in sorted(status.counters.items()):
        family, labels = _COUNTERS.get(name, ("node_events", (name,)))
        add(family, labels, n)


def _snake(name: str) -> str:
    """``AppendEntriesReply`` -> ``append_entries_reply``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
