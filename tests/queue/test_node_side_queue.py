"""The node side of the queue protocol with real `raftmq node` processes and a real broker,
driven with plain aio-pika only: ingest, receipts, exactly-once sessions, dead letters,
committed fan-out with raftmq-prev-index, replay, and a leader crash mid-stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from raftmq._amqp import topology
from raftmq.protocol import names
from raftmq.testing.localcluster import LocalCluster, wait_applied, wait_for_leader
from tests.conftest import ClusterFactory

pytestmark = pytest.mark.integration


@dataclass
class Inbox:
    """Messages arriving on one exclusive queue."""

    queue: AbstractQueue
    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Inbox:
        async def on_message(message: AbstractIncomingMessage) -> None:
            self.messages.append(message)
            self.arrived.set()

        await self.queue.consume(on_message, no_ack=True)
        return self

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


async def _subscribe(channel: AbstractChannel, cluster: str) -> Inbox:
    exchange = await topology.declare_committed(channel, cluster)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange)
    return await Inbox(queue).start()


async def _publish(
    channel: AbstractChannel,
    cluster: str,
    body: bytes,
    *,
    headers: dict[str, Any] | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    message_id: str | None = None,
    content_type: str = "text/plain",
) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            headers=headers or {},
            reply_to=reply_to,
            correlation_id=correlation_id,
            message_id=message_id,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=names.writes_queue(cluster),
    )


def _h(message: AbstractIncomingMessage, key: str) -> Any:
    return (message.headers or {}).get(key)


def _check_no_gap(messages: list[AbstractIncomingMessage]) -> dict[int, AbstractIncomingMessage]:
    """First copy of each index; the prev-index chain over them has no hole."""
    by_index: dict[int, AbstractIncomingMessage] = {}
    for message in messages:
        by_index.setdefault(int(_h(message, names.H_INDEX)), message)
    previous = 0
    for index in sorted(by_index):
        assert int(_h(by_index[index], names.H_PREV_INDEX)) == previous, index
        previous = index
    return by_index


async def _dead_letters(channel: AbstractChannel, cluster: str) -> Inbox:
    """Consume the cluster's dead-letter queue (declared by _started)."""
    dead_queue = await channel.declare_queue(names.dead_name(cluster), passive=True)
    return await Inbox(dead_queue).start()


async def _started(cluster: LocalCluster, channel: AbstractChannel) -> tuple[Inbox, Inbox]:
    """Declare the shared objects, subscribe, start the nodes; (committed, receipts)."""
    await topology.declare_all(channel, cluster.cluster)
    committed = await _subscribe(channel, cluster.cluster)
    receipts_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    receipts = await Inbox(receipts_queue).start()
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_for_leader(admin, timeout=30)
    return committed, receipts


async def test_plain_amqp_writes_are_committed_receipted_and_fanned_out_in_order(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster()
    committed, receipts = await _started(cluster, channel)
    count = 300
    for seq in range(1, count + 1):
        await _publish(
            channel,
            cluster.cluster,
            f"m{seq}".encode(),
            headers={names.H_PRODUCER: "p1", names.H_SEQ: seq, "color": "red", "n": seq},
            reply_to=receipts.queue.name if seq % 3 == 0 else None,
            correlation_id=f"c{seq}",
            message_id=f"id{seq}",
        )
    await committed.wait(lambda: len(committed.messages) >= count, timeout=60)
    by_index = _check_no_gap(committed.messages)
    ordered = [by_index[i] for i in sorted(by_index)]
    assert [m.body for m in ordered] == [f"m{s}".encode() for s in range(1, count + 1)]
    for seq, message in enumerate(ordered, start=1):
        assert _h(message, names.H_PRODUCER) == "p1"
        assert _h(message, names.H_SEQ) == seq
        assert _h(message, "color") == "red" and _h(message, "n") == seq
        assert int(_h(message, names.H_TERM)) >= 1
        assert message.content_type == "text/plain" and message.message_id == f"id{seq}"
    index_of = {m.body: int(_h(m, names.H_INDEX)) for m in ordered}
    await receipts.wait(lambda: len(receipts.messages) >= count // 3, timeout=30)
    for receipt in receipts.messages:
        assert _h(receipt, names.H_STATUS) == "ok"
        body = json.loads(receipt.body)
        seq = int((receipt.correlation_id or "c0")[1:])
        assert body["index"] == index_of[f"m{seq}".encode()] and body["duplicate"] is False

    # A retry of the last (producer, seq): receipt names the original, nothing fanned out.
    # (An older seq is a duplicate too; its receipt names the session's last index.)
    await _publish(
        channel,
        cluster.cluster,
        b"m300",
        headers={names.H_PRODUCER: "p1", names.H_SEQ: 300},
        reply_to=receipts.queue.name,
        correlation_id="retry",
    )
    await _publish(channel, cluster.cluster, b"after", headers={"x": 1})
    await committed.wait(lambda: committed.messages[-1].body == b"after", timeout=30)
    assert [m.body for m in committed.messages].count(b"m300") == 1
    await receipts.wait(lambda: receipts.messages[-1].correlation_id == "retry", timeout=30)
    dup = json.loads(receipts.messages[-1].body)
    assert dup == {"index": index_of[b"m300"], "term": dup["term"], "duplicate": True}
    writes = await channel.declare_queue(names.writes_queue(cluster.cluster), passive=True)
    assert writes.declaration_result.message_count == 0  # everything acked


async def test_bad_writes_are_dead_lettered_and_traffic_behind_them_flows(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster(extra_env={"RAFTMQ_MAX_WRITE_BYTES": "2000"})
    committed, receipts = await _started(cluster, channel)
    dead = await _dead_letters(channel, cluster.cluster)
    bad: dict[str, tuple[dict[str, Any], bytes, str]] = {
        "big": ({}, b"x" * 5000, "too_large"),
        "noseq": ({names.H_PRODUCER: "p"}, b"no seq", "invalid_seq"),
        "zero": ({names.H_PRODUCER: "p", names.H_SEQ: 0}, b"seq 0", "invalid_seq"),
        "junkseq": ({names.H_PRODUCER: "p", names.H_SEQ: "abc"}, b"x", "invalid_seq"),
        "reserved": ({names.H_PRODUCER: "raftmq:x", names.H_SEQ: 1}, b"r", "invalid_pro"),
    }
    for k in range(20):
        await _publish(channel, cluster.cluster, f"good{k}".encode())
        if k < len(bad):
            name = list(bad)[k]
            headers, body, _ = bad[name]
            await _publish(
                channel,
                cluster.cluster,
                body,
                headers={**headers, "tag": name},
                reply_to=receipts.queue.name,
                correlation_id=name,
            )
    await committed.wait(lambda: len(committed.messages) >= 20, timeout=60)
    assert [m.body for m in committed.messages] == [f"good{k}".encode() for k in range(20)]
    await dead.wait(lambda: len(dead.messages) >= len(bad), timeout=30)
    for message in dead.messages:
        headers, body, reason = bad[str(_h(message, "tag"))]
        assert str(_h(message, names.H_REASON)).startswith(reason)
        assert message.body == body
    await receipts.wait(lambda: len(receipts.messages) >= len(bad), timeout=30)
    assert {r.correlation_id for r in receipts.messages} == set(bad)
    assert all(_h(r, names.H_STATUS) == "error" for r in receipts.messages)
    async with cluster.admin() as admin:
        statuses = await admin.statuses()
    assert sum(s.counters.get("ingest_dead", 0) for s in statuses.values() if s) == len(bad)


async def test_replay_answers_from_the_database(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster()
    committed, receipts = await _started(cluster, channel)
    for k in range(30):
        await _publish(channel, cluster.cluster, f"r{k}".encode())
    await committed.wait(lambda: len(committed.messages) >= 30, timeout=60)
    live = {int(_h(m, names.H_INDEX)): m for m in committed.messages}
    first = min(live)
    async with cluster.admin() as admin:  # any node may answer: each answers up to its applied
        await wait_applied(admin, cluster.node_ids, max(live), timeout=30)
    request = json.dumps({"from": 1, "to": None, "max": 10}).encode()
    # answers go only to a direct reply-to address or a replay reply queue of the cluster
    reply_name = names.replay_reply_queue(cluster.cluster, "test")
    receipts = await Inbox(await channel.declare_queue(reply_name, exclusive=True)).start()
    await channel.default_exchange.publish(
        aio_pika.Message(request, reply_to=reply_name, correlation_id="rp"),
        routing_key=names.replay_queue(cluster.cluster),
    )
    await receipts.wait(lambda: any(_h(m, names.H_REPLAY_END) for m in receipts.messages), 30)
    answer = [m for m in receipts.messages if m.correlation_id == "rp"]
    end = answer[-1]
    items = answer[:-1]
    assert len(items) == 10 and end.body == b""
    assert int(_h(end, names.H_REPLAY_END)) == int(_h(items[-1], names.H_INDEX))
    for item in items:
        original = live[int(_h(item, names.H_INDEX))]
        assert item.body == original.body
        assert _h(item, names.H_PREV_INDEX) == _h(original, names.H_PREV_INDEX)
    assert int(_h(items[0], names.H_INDEX)) == first
    async with cluster.admin() as admin:
        statuses = await admin.statuses()
    assert sum(s.counters.get("replay_answered", 0) for s in statuses.values() if s) == 1


async def test_leader_crash_mid_stream_loses_no_write_and_leaves_no_gap(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster()
    committed, _ = await _started(cluster, channel)
    count = 2000

    async def produce() -> None:
        for seq in range(1, count + 1):
            await _publish(
                channel,
                cluster.cluster,
                f"s{seq}".encode(),
                headers={names.H_PRODUCER: "crash", names.H_SEQ: seq},
            )

    producer = asyncio.create_task(produce())
    await committed.wait(lambda: len(committed.messages) >= count // 4, timeout=60)
    async with cluster.admin() as admin:
        leader = await wait_for_leader(admin, timeout=10)
        cluster.kill(leader.node_id)
        await wait_for_leader(admin, timeout=30, exclude={leader.node_id})
    await producer
    seen = {m.body for m in committed.messages}
    expected = {f"s{s}".encode() for s in range(1, count + 1)}
    await committed.wait(lambda: expected <= {m.body for m in committed.messages}, 90)
    by_index = _check_no_gap(committed.messages)
    bodies = [m.body for _, m in sorted(by_index.items())]
    assert sorted(bodies) == sorted(expected), "a write is missing or was appended twice"
    assert seen <= expected
    survivors = [n for n in cluster.node_ids if n != leader.node_id]
    async with cluster.admin() as admin:
        await wait_applied(admin, survivors, max(by_index), timeout=30)
    for node_id in survivors:
        applied = {line.index for line in cluster.read_applied(node_id)}
        assert set(by_index) <= applied, node_id
    writes = await channel.declare_queue(names.writes_queue(cluster.cluster), passive=True)
    assert writes.declaration_result.message_count == 0


async def _consumers(channel: AbstractChannel, cluster: str) -> int:
    queue = await channel.declare_queue(names.writes_queue(cluster), passive=True)
    return int(queue.declaration_result.consumer_count or 0)


async def test_a_leader_that_loses_quorum_stops_consuming_writes(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster(extra_env={"RAFTMQ_ALLOW_FAULT_INJECTION": "true"})
    committed, _ = await _started(cluster, channel)
    async with cluster.admin() as admin:
        leader = await wait_for_leader(admin, timeout=30)
        async with asyncio.timeout(30):
            while await _consumers(channel, cluster.cluster) != 1:  # noqa: ASYNC110 - broker state
                await asyncio.sleep(0.05)
        # Cut the leader off from Raft traffic: check-quorum makes it step down.
        await admin.requests.request(leader.node_id, "isolate")
        new = await wait_for_leader(admin, timeout=30, exclude={leader.node_id})
        async with asyncio.timeout(30):
            while (await admin.status(leader.node_id)).role.value == "leader":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        async with asyncio.timeout(30):
            while await _consumers(channel, cluster.cluster) != 1:  # noqa: ASYNC110 - broker state
                await asyncio.sleep(0.05)
        for k in range(20):
            await _publish(channel, cluster.cluster, f"after{k}".encode())
        await committed.wait(lambda: len(committed.messages) >= 20, timeout=30)
        terms = {int(_h(m, names.H_TERM)) for m in committed.messages}
        assert terms == {new.term}
        assert [m.body for m in committed.messages] == [f"after{k}".encode() for k in range(20)]
        await admin.requests.request(leader.node_id, "rejoin")
