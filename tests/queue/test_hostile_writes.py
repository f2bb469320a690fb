"""Hostile writes against a real 3-node cluster (real `raftmq node` processes and broker):
every write is delivered byte-exact to a subscriber or dead-lettered with a reason while
good writes keep committing and no node restarts; the leader's ingest comes back when the
broker closes its connection; a burst of huge batches is ingested without an election."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import uuid
from collections import Counter
from typing import Any

import aio_pika
import aiormq
import pamqp.decode
import pamqp.encode
import pytest
from aio_pika.abc import AbstractChannel
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from raftmq._amqp.channel import underlay
from raftmq._amqp.guard import header_frame_size
from raftmq._amqp.wire import default_publish_frame, framing, message_frames, write_frames
from raftmq.node.sessions import SessionTable
from raftmq.protocol import names
from raftmq.protocol.limits import FRAME_MAX
from raftmq.protocol.record import BATCH_TYPE, Record, encode_batch
from raftmq.services.write_rules import BadWrite, WriteRules
from raftmq.testing.localcluster import LocalCluster, wait_for_leader
from tests.conftest import ClusterFactory
from tests.hostile.writes import HostileWrite, hostile_writes
from tests.queue.test_node_side_queue import Inbox, _consumers, _dead_letters, _started

pytestmark = pytest.mark.integration

RULES = WriteRules(max_write_bytes=1 << 20)
Outcome = tuple[bytes, Any, Any, tuple[tuple[str, Any], ...]]


def _outcome(body: bytes, ct: Any, mid: Any, headers: dict[str, Any]) -> Outcome:
    return body, ct, mid, tuple(sorted(headers.items()))


class Expected:
    """What the cluster must do with each write, by the rules and the sessions."""

    def __init__(self) -> None:
        self.committed: Counter[Outcome] = Counter()
        self.dead: Counter[tuple[bytes, str]] = Counter()
        # The nodes' own session rules decide duplicates (a seq below a session's floor is
        # one even when never seen), applied in publish order as the log will hold them.
        self._sessions = SessionTable()
        self._index = 0

    def accepted(self, record: Record) -> None:
        self._index += 1
        if self._sessions.apply(record, self._index, 1) is not None:
            return  # a duplicate: acked, not published again
        self.committed[
            _outcome(record.body, record.content_type, record.message_id, record.headers)
        ] += 1

    def refused(self, body: bytes, reason: str) -> None:
        self.dead[(body, reason.partition(":")[0])] += 1


def _expect(write: HostileWrite, expected: Expected) -> None:
    if write.batch is None:
        try:
            record, _ = RULES.from_properties(
                write.body, write.headers, write.content_type, write.message_id
            )
        except BadWrite as exc:
            expected.refused(write.body, exc.reason)
        else:
            expected.accepted(record)
        return
    for raw in write.batch:
        try:
            record, _ = RULES.from_batch(raw)
        except BadWrite as exc:
            try:
                body = Record.decode(raw).body
            except Exception:
                body = raw
            expected.refused(body, exc.reason)
        else:
            expected.accepted(record)


def _as_published(write: HostileWrite) -> HostileWrite:
    """The write as the broker gets it from aio-pika: aiormq gives a single write without a
    message id (None or empty) a random one, which the cluster then keeps and sessions by;
    and pamqp cuts every header name (nested ones too) to 128 bytes when it encodes a
    table, so a name of 129-255 bytes reaches the broker shorter than it was given."""
    if write.batch is not None:
        return write
    _, headers = pamqp.decode.field_table(pamqp.encode.field_table(write.headers))
    return dataclasses.replace(
        write, headers=headers, message_id=write.message_id or uuid.uuid4().hex
    )


def _sendable(write: HostileWrite) -> bool:
    """The client library can publish it: its own content header fits one frame."""
    size = header_frame_size(
        write.headers, content_type=write.content_type, message_id=write.message_id
    )
    return size is not None and size + 200 <= FRAME_MAX


async def _publish(channel: AbstractChannel, cluster: str, write: HostileWrite) -> None:
    if write.batch is not None:
        message = aio_pika.Message(encode_batch(write.batch), type=BATCH_TYPE, delivery_mode=2)
    else:
        message = aio_pika.Message(
            write.body,
            headers=write.headers,
            content_type=write.content_type,
            message_id=write.message_id,
            delivery_mode=2,
        )
    await channel.default_exchange.publish(message, routing_key=names.writes_queue(cluster))


async def _publish_alone(amqp_url: str, cluster: str, write: HostileWrite) -> bool:
    """Publish ``write`` on a connection of its own; False when the broker refused the
    message itself (it closes the channel, e.g. for a property it cannot take), so that
    a refusal never takes down the channel the test consumes on."""
    connection = await aio_pika.connect(amqp_url)
    try:
        await _publish(await connection.channel(publisher_confirms=True), cluster, write)
    except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
        return False
    finally:
        await connection.close()
    return True


def _producer_headers(headers: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in headers.items()
        if key not in (names.H_INDEX, names.H_TERM, names.H_PREV_INDEX)
        and key not in (names.H_PRODUCER, names.H_SEQ)
    }


class _Run:
    """One cluster for every example of one test run (hypothesis keeps the fixtures):
    what was published so far, and what must have come out."""

    def __init__(self, cluster: LocalCluster, committed: Inbox, dead: Inbox) -> None:
        self.cluster = cluster
        self.committed = committed
        self.dead = dead
        self.expected = Expected()
        self.goods = 0  # good writes published between the hostile ones


_RUNS: dict[int, _Run] = {}  # id(channel fixture) -> the run it serves


async def _run(local_cluster: ClusterFactory, channel: AbstractChannel) -> _Run:
    run = _RUNS.get(id(channel))
    if run is None:
        cluster = local_cluster()
        committed, _ = await _started(cluster, channel)
        dead = await _dead_letters(channel, cluster.cluster)
        run = _RUNS[id(channel)] = _Run(cluster, committed, dead)
    return run


async def _publish_bad_key(amqp_url: str, cluster: str) -> None:
    """A header name that is not UTF-8, published as raw frames (on a channel of its
    own without confirms: the raw frames bypass aiormq's confirm bookkeeping)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        raw = await underlay(channel)
        number, max_body = framing(raw)
        table = b"\x00\x00\x00\x05\x02\xff\xfet\x01"
        frames = message_frames(
            number,
            default_publish_frame(number, names.writes_queue(cluster)),
            max_body,
            b"bad-key",
            headers=table,
        )
        await write_frames(raw, frames)
        # Frames go out in order: once this answer is back, the publish was written.
        await channel.declare_queue(names.writes_queue(cluster), passive=True)
    finally:
        await connection.close()


@settings(
    max_examples=8,  # the first is hypothesis' simplest; about 120 hostile writes in all
    deadline=None,
    database=None,
    phases=[Phase.generate],  # fixtures are shared by the examples: no shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(hostile_writes, min_size=15, max_size=15))
async def test_hostile_writes_are_delivered_byte_exact_or_dead_lettered(
    local_cluster: ClusterFactory,
    channel: AbstractChannel,
    amqp_url: str,
    writes: list[HostileWrite],
) -> None:
    run = await _run(local_cluster, channel)
    cluster, expected = run.cluster.cluster, run.expected
    for write in [_as_published(w) for w in writes if _sendable(w)]:
        async with asyncio.timeout(30):  # the broker confirms every write it took
            if not await _publish_alone(amqp_url, cluster, write):
                continue  # the broker itself refused it: it never reached the cluster
        _expect(write, expected)
        run.goods += 1
        good = _as_published(
            HostileWrite(b"good-%d" % run.goods, {names.H_PRODUCER: "good", names.H_SEQ: run.goods})
        )
        _expect(good, expected)
        await _publish(channel, cluster, good)
    await _publish_bad_key(amqp_url, cluster)
    expected.refused(b"bad-key", "malformed_properties: x")
    committed, dead = run.committed, run.dead
    want_committed = sum(expected.committed.values())
    want_dead = sum(expected.dead.values())
    try:
        await committed.wait(lambda: len(committed.messages) >= want_committed, timeout=60)
        await dead.wait(lambda: len(dead.messages) >= want_dead, timeout=60)
    except TimeoutError:
        raise AssertionError(
            f"committed {len(committed.messages)}/{want_committed}, "
            f"dead {len(dead.messages)}/{want_dead}: "
            f"{[(m.body[:20], m.headers) for m in dead.messages][:5]}"
        ) from None
    got = Counter(
        _outcome(m.body, m.content_type, m.message_id, _producer_headers(dict(m.headers or {})))
        for m in committed.messages
    )
    want = Counter(
        {
            (
                body,
                ct,
                mid,
                tuple((k, v) for k, v in hs if k not in (names.H_PRODUCER, names.H_SEQ)),
            ): n
            for (body, ct, mid, hs), n in expected.committed.items()
        }
    )
    assert got == want
    reasons = Counter(
        (m.body, str((m.headers or {}).get(names.H_REASON, "")).partition(":")[0])
        for m in dead.messages
    )
    assert reasons == expected.dead
    assert run.cluster.crashed() == {}


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def _writes_consumer_connection(cluster: str) -> str | None:
    """The broker's pid of the connection consuming the writes queue, if any."""
    queue = names.writes_queue(cluster)
    channels = [
        line.split("\t")[1]
        for line in _rabbitmqctl("list_consumers", "queue_name", "channel_pid").splitlines()
        if line.split("\t")[0] == queue
    ]
    for line in _rabbitmqctl("list_channels", "pid", "connection").splitlines():
        pid, _, connection = line.partition("\t")
        if pid in channels:
            return connection
    return None


async def test_ingest_comes_back_when_the_broker_closes_its_connection(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster()
    committed, _ = await _started(cluster, channel)
    async with cluster.admin() as admin:
        leader = await wait_for_leader(admin, timeout=30)
        async with asyncio.timeout(30):
            while (before := _writes_consumer_connection(cluster.cluster)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        _rabbitmqctl("close_connection", before, "test: ingest connection closed")
        # While the node leads, the writes queue gets its consumer back within seconds.
        async with asyncio.timeout(10):
            while _writes_consumer_connection(cluster.cluster) in (None, before):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        assert await _consumers(channel, cluster.cluster) == 1
        for k in range(10):
            body = f"after-{k}".encode()
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=2),
                routing_key=names.writes_queue(cluster.cluster),
            )
        await committed.wait(lambda: len(committed.messages) >= 10, timeout=30)
        assert (await admin.status(leader.node_id)).term == leader.term
    assert cluster.crashed() == {}


async def test_a_burst_of_huge_batches_is_ingested_without_an_election(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    # A 1 s election timeout (etcd's default; 0.1 s ticks) rather than the 0.5 s of the
    # other process tests: three nodes, the broker and the test share two cores here, and
    # 50,000 records are decoded, judged, saved and fanned out as fast as they can go.
    # A batch handled in one piece stalls the leader for seconds and still fails this;
    # a save slower than that is covered by keepalives (tests/node/test_keepalive_node.py).
    cluster: LocalCluster = local_cluster(tick_interval=0.1)
    await _started(cluster, channel)
    receipts = await Inbox(await channel.declare_queue(exclusive=True, auto_delete=True)).start()
    async with cluster.admin() as admin:
        leader = await wait_for_leader(admin, timeout=30)
        for b in range(5):
            records = [
                Record(body=b"r%d-%d" % (b, k), producer_id=f"burst{b}", seq=k + 1).encode()
                for k in range(10_000)
            ]
            await channel.default_exchange.publish(
                aio_pika.Message(
                    encode_batch(records),
                    type=BATCH_TYPE,
                    delivery_mode=2,
                    reply_to=receipts.queue.name,
                    correlation_id=str(b),
                ),
                routing_key=names.writes_queue(cluster.cluster),
            )
        await receipts.wait(lambda: len(receipts.messages) >= 5, timeout=240)
        statuses = await admin.statuses()
        # On failure, say who started an election and what each node saw meanwhile.
        seen = "\n".join(
            f"{node}: term {s.term} {s.role.value} counters {s.counters} "
            f"dropped {s.transport.get('dropped')}"
            for node, s in statuses.items()
            if s is not None
        )
        terms = {s.term for s in statuses.values() if s is not None}
        assert terms == {leader.term}, f"an election during the burst:\n{seen}"

        assert (await admin.status(leader.node_id)).role.value == "leader"
    assert cluster.crashed() == {}
