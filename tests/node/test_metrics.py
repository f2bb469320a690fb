"""Node metrics and health (raftmq.node.metrics, raftmq.node.metrics_server) on in-process
clusters of real Nodes over the in-memory transport and storage: each value a scrape
shows is checked against what the cluster did."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from pydantic import ValidationError

from raftmq.core.messages import AppendEntries
from raftmq.core.types import Role
from raftmq.errors import ConfigError, WriteRejected
from raftmq.node.metrics import (
    NodeCollector,
    NodeSnapshot,
    liveness,
    metrics_registry,
    readiness,
)
from raftmq.node.metrics_server import MetricsServer
from raftmq.node.settings import NodeSettings
from raftmq.protocol.codec import encode
from raftmq.protocol.names import inbox_queue
from raftmq.protocol.record import Record
from raftmq.protocol.requests import NodeStatus
from raftmq.runtime import build_node
from tests.node.memory_cluster import Item, MemoryCluster

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of ``registry`` in Prometheus text, parsed back: (name, labels) -> value."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sample ``metric{labels}``."""
    return samples[(metric, tuple(sorted(labels.items())))]


@pytest.fixture
async def cluster() -> AsyncIterator[MemoryCluster]:
    c = MemoryCluster()
    await c.start_all()
    yield c
    await c.stop_all()


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    """Poll ``condition()`` (a callable) every few ms until it is true."""
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls node state owned by other tasks
            await asyncio.sleep(0.005)


async def test_a_scrape_reports_leadership_indexes_proposals_saves_and_rpcs(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    commits = [await leader.write(Item(n=k)) for k in range(5)]
    last = commits[-1].index
    await cluster.wait_applied(last)
    registries = {i: metrics_registry(n) for i, n in cluster.nodes.items()}
    term = leader.status().term
    for node_id, registry in registries.items():
        samples = scrape(registry)
        leading = node_id == leader.node_id
        assert value(samples, "raftmq_is_leader") == float(leading)
        assert value(samples, "raftmq_role", role="leader") == float(leading)
        assert value(samples, "raftmq_has_leader") == 1.0
        assert value(samples, "raftmq_term") == term
        assert value(samples, "raftmq_applied_index") >= last
        assert value(samples, "raftmq_commit_index") >= last
        assert value(samples, "raftmq_leader_commit_index") >= last
        assert value(samples, "raftmq_leader_changes_seen_total") == 1.0
        assert value(samples, "raftmq_node_loop_running") == 1.0
        assert value(samples, "raftmq_node_ready") == 1.0
        assert value(samples, "raftmq_storage_ok") == 1.0
        assert value(samples, "raftmq_voters") == 3.0
        cluster_id = cluster.network.cluster_id
        info = value(
            samples, "raftmq_node_info", cluster="mem", node=node_id, cluster_id=cluster_id
        )
        assert info == 1.0
        # every save is in the histogram: cumulative buckets end at the count
        count = value(samples, "raftmq_save_duration_seconds_count")
        assert (
            count >= 1 and value(samples, "raftmq_save_duration_seconds_bucket", le="+Inf") == count
        )
        assert value(samples, "raftmq_save_duration_seconds_sum") > 0
        # writes proposed here: all five committed on the leader, none on the followers
        assert value(samples, "raftmq_proposals_committed_total") == (5.0 if leading else 0.0)
        assert value(samples, "raftmq_proposals_failed_total") == 0.0
        assert value(samples, "raftmq_proposals_pending") == 0.0
        # the leader sends AppendEntries and receives replies; followers the reverse
        out, back = ("append_entries", "append_entries_reply")
        if not leading:
            out, back = back, out
        assert value(samples, "raftmq_rpc_sent_total", type=out) >= 5
        assert value(samples, "raftmq_rpc_received_total", type=back) >= 5
        assert value(samples, "raftmq_storage_retries_total", operation="save") == 0.0


async def test_a_new_leader_is_counted_on_the_survivors_and_the_stopped_node_is_not_alive(
    cluster: MemoryCluster,
) -> None:
    old = await cluster.leader()
    survivors = [n for i, n in cluster.nodes.items() if i != old.node_id]
    collectors = {n.node_id: NodeCollector(n) for n in cluster.nodes.values()}
    before = {i: c.snapshot().leader_changes for i, c in collectors.items()}
    await cluster.stop(old.node_id)
    stopped = collectors[old.node_id].snapshot()
    assert liveness(stopped) == (False, "node stopped")
    assert readiness(stopped)[0] is False
    new = await cluster.leader()
    await wait_until(lambda: all(n.leader_id == new.node_id for n in survivors))
    for node in survivors:
        assert readiness(collectors[node.node_id].snapshot())[0]
        samples = scrape(metrics_registry(node))
        assert value(samples, "raftmq_is_leader") == float(node is new)
        assert value(samples, "raftmq_leader_changes_seen_total") > before[node.node_id]


async def test_writes_lost_with_leadership_are_pending_then_failed(cluster: MemoryCluster) -> None:
    old = await cluster.leader()
    registry = metrics_registry(old)
    cluster.network.disconnect(old.node_id)
    futures = [
        old.submit_record(Record(body=Item(n=k).model_dump_json().encode())) for k in range(3)
    ]
    await wait_until(lambda: value(scrape(registry), "raftmq_proposals_pending") == 3.0)
    new = await cluster.leader(exclude=frozenset({old.node_id}))
    for k in range(3):  # the new leader's entries take the indexes the old one proposed at
        await new.write(Item(n=10 + k))
    cluster.network.connect(old.node_id)
    done, _ = await asyncio.wait(futures, timeout=10)
    assert len(done) == 3 and all(isinstance(f.exception(), WriteRejected) for f in done)
    samples = scrape(registry)
    assert value(samples, "raftmq_proposals_failed_total") == 3.0
    assert value(samples, "raftmq_proposals_pending") == 0.0
    assert value(samples, "raftmq_is_leader") == 0.0


async def test_drops_and_service_counters_appear_under_their_families(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    follower = next(n for i, n in cluster.nodes.items() if i != leader.node_id)
    status = leader.status()
    forged = AppendEntries(
        term=status.term,
        sender=leader.node_id,
        recipient=follower.node_id,
        prev_log_index=status.last_index,
        prev_log_term=status.term,
        entries=(),
        leader_commit=status.commit,
    )
    cluster.network.inject(inbox_queue("mem", follower.node_id), encode(forged, "mem"))
    host = follower.service_host  # what ingest, fan-out and replay count through
    host.count("ingest_committed", 7)
    host.count("replay_throttled", 2)
    host.count("fanout_published", 4)
    host.count("a_future_counter", 3)
    registry = metrics_registry(follower)
    unsigned = ("raftmq_rpc_dropped_total", (("direction", "inbound"), ("reason", "unsigned")))
    await wait_until(lambda: scrape(registry).get(unsigned) == 1.0)
    samples = scrape(registry)
    assert value(samples, "raftmq_ingest_writes_total", outcome="committed") == 7.0
    assert value(samples, "raftmq_replay_requests_total", outcome="throttled") == 2.0
    assert value(samples, "raftmq_fanout_published_total") == 4.0
    assert value(samples, "raftmq_node_events_total", name="a_future_counter") == 3.0
    assert (
        value(samples, "raftmq_rpc_dropped_total", direction="inbound", reason="inbox_overflow")
        == 0.0
    )


async def test_fanout_lag_is_commit_minus_the_watermark(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    commits = [await leader.write(Item(n=k)) for k in range(4)]
    registry = metrics_registry(leader)
    samples = scrape(registry)
    commit = value(samples, "raftmq_commit_index")
    assert value(samples, "raftmq_fanout_watermark") == 0.0  # no fan-out service runs here
    assert value(samples, "raftmq_fanout_lag_entries") == commit >= commits[-1].index
    leader.service_host.advance_fanout_watermark(commits[1].index)
    samples = scrape(registry)
    assert value(samples, "raftmq_fanout_lag_entries") == commit - commits[1].index


async def test_a_scrape_from_another_thread_takes_its_snapshot_on_the_node_loop(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    await leader.write(Item(n=1))
    registry = metrics_registry(leader)  # made on the loop: it knows the node's loop
    samples = await asyncio.to_thread(scrape, registry)
    assert value(samples, "raftmq_is_leader") == 1.0
    assert value(samples, "raftmq_proposals_committed_total") == 1.0


def _snapshot(leader_commit: int = 50, **status: object) -> NodeSnapshot:
    """A follower's snapshot (``status``: NodeStatus fields to change)."""
    fields: dict[str, object] = {
        "cluster": "c",
        "node_id": "a",
        "role": Role.FOLLOWER,
        "term": 3,
        "leader_id": "b",
        "commit": 50,
        "applied": 50,
        "last_index": 50,
        "voters": ["a", "b", "c"],
        "last_contact": 0.1,
        "storage_ok": True,
        "counters": {},
        "transport": {},
    }
    fields.update(status)
    return NodeSnapshot(
        "a",
        "c",
        running=True,
        failure=None,
        status=NodeStatus(**fields),
        leader_commit=leader_commit,
    )


def test_readiness_names_the_first_reason_it_fails() -> None:
    assert readiness(_snapshot()) == (True, "ready: follower in term 3, leader b")
    assert readiness(_snapshot(leader_id=None)) == (False, "no known leader in term 3")
    assert readiness(_snapshot(voters=["b", "c"])) == (
        False,
        "not a voter of the configuration b,c",
    )
    assert readiness(_snapshot(storage_ok=False)) == (False, "storage failing (retrying)")
    assert readiness(_snapshot(applied=10), max_apply_lag=39) == (
        False,
        "catching up: applied 10 of commit 50",
    )
    assert readiness(_snapshot(applied=11), max_apply_lag=39)[0]
    # restarted far behind: its own commit index is stale, the leader's is not
    assert readiness(_snapshot(leader_commit=500)) == (
        False,
        "catching up: applied 50 of commit 500",
    )
    not_started = NodeSnapshot("a", "c", running=False, failure=None, status=None)
    assert readiness(not_started) == (False, "node not started")
    failed = NodeSnapshot(
        "a", "c", running=False, failure="StoreMismatch()", status=_snapshot().status
    )
    assert liveness(failed) == (False, "node loop failed: StoreMismatch()")


async def _get(
    port: int, request: bytes, *, eof: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` raw (``eof``: then close our side); return (status, headers, body)
    of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        if eof:
            writer.write_eof()
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


async def test_the_http_endpoints_answer_and_refuse_what_is_not_a_small_get(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    server = MetricsServer(leader, "127.0.0.1", 0)
    port = server.address[1]
    await server.start()
    try:
        status, headers, body = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {
            "raftmq_is_leader",
            "raftmq_save_duration_seconds",
            "process_cpu_seconds",
        } <= families
        assert (await _get(port, b"GET /healthz HTTP/1.0\r\n\r\n"))[::2] == (
            200,
            b"node loop running\n",
        )
        status, _, body = await _get(port, b"GET /readyz?verbose HTTP/1.1\r\n\r\n")
        assert status == 200 and body.startswith(b"ready: leader in term")
        status, headers, body = await _get(port, b"HEAD /readyz HTTP/1.1\r\n\r\n")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        assert (await _get(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
        status, headers, _ = await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert (await _get(port, b"\x16\x03\x01 garbage\r\n\r\n"))[0] == 400
        assert (await _get(port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"))[0] == 431
        many_headers = b"".join(b"X-%d: y\r\n" % i for i in range(100))
        assert (await _get(port, b"GET /metrics HTTP/1.1\r\n" + many_headers + b"\r\n"))[0] == 431
        assert (await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x", eof=True))[0] == 400
        await cluster.stop(leader.node_id)
        status, _, body = await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (status, body) == (503, b"node stopped\n")
        assert (await _get(port, b"GET /readyz HTTP/1.1\r\n\r\n"))[0] == 503
    finally:
        await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_silent_client_does_not_hold_up_the_others(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    server = MetricsServer(leader, "127.0.0.1", 0, process_metrics=False)
    port = server.address[1]
    await server.start()
    try:
        _, silent = await asyncio.open_connection("127.0.0.1", port)  # sends nothing
        assert (await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
        silent.close()
    finally:
        await server.stop()


def test_metrics_settings_are_off_by_default_and_the_port_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert NodeSettings(node_id="a").metrics_port is None
    monkeypatch.setenv("RAFTMQ_METRICS_PORT", "9464")
    monkeypatch.setenv("RAFTMQ_METRICS_HOST", "0.0.0.0")
    settings = NodeSettings(node_id="a")
    assert (settings.metrics_port, settings.metrics_host) == (9464, "0.0.0.0")
    for bad in ("0", "65536", "-1", "http"):
        monkeypatch.setenv("RAFTMQ_METRICS_PORT", bad)
        with pytest.raises(ValidationError, match="metrics_port"):
            NodeSettings(node_id="a")


def test_build_node_refuses_a_metrics_port_that_is_taken(tmp_path: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = NodeSettings(
            node_id="a", single_node=True, insecure=True, data_dir=tmp_path, metrics_port=port
        )
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            build_node(settings, Item)
