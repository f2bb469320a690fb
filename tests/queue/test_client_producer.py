"""Producer against the wire protocol (docs/protocol.md §3-4), with a protocol test double
playing the node: batching with confirms, receipts, retries that keep their seq."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from raftmq._amqp import topology
from raftmq.client import Producer, Receipt
from raftmq.errors import ClientNotOpen, ConfigError, WriteRejected
from raftmq.protocol.record import BATCH_TYPE, MAX_BATCH_RECORDS, Record, decode_batch
from tests.queue.conftest import ProtocolNode

pytestmark = pytest.mark.integration


async def test_concurrent_publishes_get_ordered_receipts(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    async with Producer(amqp_url, cluster_name, linger=0.01) as producer:
        receipts = await asyncio.gather(
            *(
                producer.publish(f"m{k}".encode(), content_type="text/plain", headers={"k": k})
                for k in range(300)
            )
        )
    assert [r.seq for r in receipts] == list(range(1, 301))
    assert [r.index for r in receipts] == list(range(1, 301))  # seq order == queue order
    assert not any(r.duplicate for r in receipts)
    assert all(r.term == 1 for r in receipts)
    assert [e.body for e in protocol_node.log] == [f"m{k}".encode() for k in range(300)]
    first = protocol_node.log[0]
    assert first.content_type == "text/plain"
    assert first.headers["raftmq-producer"] == producer.producer_id
    assert first.headers["raftmq-seq"] == 1 and first.headers["k"] == 0
    # 300 writes issued at once travel in a few batch messages, in seq order
    assert sum(protocol_node.batch_sizes) == 300
    assert len(protocol_node.batch_sizes) < 300 and max(protocol_node.batch_sizes) > 1


async def test_batches_respect_max_batch_and_max_batch_bytes(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    async with Producer(amqp_url, cluster_name, max_batch=7, max_batch_bytes=1000) as producer:
        small = await asyncio.gather(*(producer.publish(b"s") for _ in range(30)))
        sizes_small = list(protocol_node.batch_sizes)
        protocol_node.batch_sizes.clear()
        big = await asyncio.gather(*(producer.publish(b"b" * 400) for _ in range(6)))
    assert [r.index for r in small + big] == list(range(1, 37))
    assert sum(sizes_small) == 30 and max(sizes_small) <= 7
    # a 400-byte body makes a record of about 470 bytes: two fit under 1000 bytes
    assert sum(protocol_node.batch_sizes) == 6 and max(protocol_node.batch_sizes) <= 2


async def test_a_header_json_cannot_carry_is_refused_before_sending(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    async with Producer(amqp_url, cluster_name) as producer:
        with pytest.raises(ValueError, match="headers must map") as refused:
            await producer.publish(b"x", headers={"raw": b"bytes"})  # type: ignore[dict-item]
        assert type(refused.value) is ConfigError
        ok = await producer.publish(b"after")
    assert (ok.seq, ok.index) == (1, 1)  # the refused write took no seq
    assert protocol_node.seen == [(producer.producer_id, 1)]


async def test_wait_commit_false_returns_after_confirm(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    async with Producer(amqp_url, cluster_name, producer_id="p-fixed") as producer:
        receipt = await producer.publish(b"fire", wait_commit=False)
        assert receipt.index is None and receipt.term is None and receipt.seq == 1
        second = await producer.publish(b"and wait")
    assert second.seq == 2 and second.index == 2
    assert protocol_node.seen == [("p-fixed", 1), ("p-fixed", 2)]


async def test_lost_receipt_is_retried_with_the_same_seq(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    protocol_node.drop_receipts.add(2)
    async with Producer(amqp_url, cluster_name, attempt_timeout=0.5) as producer:
        one = await producer.publish(b"one")
        two = await producer.publish(b"two")
        three = await producer.publish(b"three")
    assert (one.index, one.duplicate) == (1, False)
    # seq 2 was appended once; its retry carried seq 2 again and was recognised
    assert (two.index, two.duplicate, two.seq) == (2, True, 2)
    assert (three.index, three.seq) == (3, 3)
    seqs = [seq for _, seq in protocol_node.seen]
    assert seqs == [1, 2, 2, 3]
    assert [e.body for e in protocol_node.log] == [b"one", b"two", b"three"]


async def test_a_lost_receipt_is_republished_only_after_a_silence(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """While receipts of later writes keep arriving, the cluster is working through the
    backlog: the write whose receipt was lost goes out again only after attempt_timeout
    seconds without any receipt (protocol §4), with the same seq."""
    protocol_node.drop_receipts.add(1)
    async with Producer(amqp_url, cluster_name, attempt_timeout=0.6) as producer:
        lost = asyncio.create_task(producer.publish(b"lost receipt"))
        await asyncio.sleep(0.05)  # seq 1 leaves alone, in its own batch
        for k in range(15):  # a receipt every ~0.1 s for 1.5 s, 2.5 attempt timeouts
            await producer.publish(f"w{k}".encode())
            await asyncio.sleep(0.1)
        assert not lost.done()
        assert [seq for _, seq in protocol_node.seen].count(1) == 1  # not re-published yet
        receipt = await lost
    assert (receipt.index, receipt.duplicate, receipt.seq) == (1, True, 1)
    seqs = [seq for _, seq in protocol_node.seen]
    assert seqs == [1, *range(2, 17), 1]


async def test_writes_without_receipts_go_again_oldest_first(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """After the silence, the confirmed writes still without a receipt are re-published,
    in seq order (protocol §4), and each receipt names its original index."""
    protocol_node.drop_receipts.update({1, 2, 3, 4})
    async with Producer(amqp_url, cluster_name, attempt_timeout=0.3) as producer:
        receipts = await asyncio.gather(*(producer.publish(f"w{k}".encode()) for k in range(4)))
    assert [(r.seq, r.index, r.duplicate) for r in receipts] == [
        (seq, seq, True) for seq in (1, 2, 3, 4)
    ]
    assert [seq for _, seq in protocol_node.seen] == [1, 2, 3, 4, 1, 2, 3, 4]


async def test_close_fails_every_waiting_publish_at_once(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """close() ends every publish still waiting, also writes without wait_commit whose
    broker confirm is outstanding: each gets its receipt or ClientNotOpen, none waits for
    its own timeout."""
    async with Producer(amqp_url, cluster_name) as producer:
        tasks = [
            asyncio.create_task(producer.publish(b"x" * 1000, wait_commit=False, timeout=60))
            for _ in range(2000)
        ]
        await asyncio.sleep(0.02)  # some batches are out, awaiting their confirms
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, Receipt | ClientNotOpen) for o in outcomes), {
        type(o).__name__ for o in outcomes
    }
    assert any(isinstance(o, ClientNotOpen) for o in outcomes)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_batch", 0),
        ("max_batch", MAX_BATCH_RECORDS + 1),
        ("max_batch_bytes", 0),
        ("max_in_flight", 0),
    ],
)
def test_invalid_settings_raise_config_error(option: str, value: int) -> None:
    with pytest.raises(ConfigError, match=option):
        Producer("amqp://unused", "c", **{option: value})  # type: ignore[arg-type]


async def test_publish_before_start_or_after_close_raises_client_not_open(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    producer = Producer(amqp_url, cluster_name)
    with pytest.raises(ClientNotOpen, match="not started"):
        await producer.publish(b"too early")
    async with producer:
        assert (await producer.publish(b"in time")).index == 1
    with pytest.raises(ClientNotOpen, match="closed"):
        await producer.publish(b"too late")
    assert protocol_node.seen == [(producer.producer_id, 1)]


async def test_dead_lettered_write_raises_and_traffic_continues(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    protocol_node.reject = lambda body: "schema: not JSON" if body.startswith(b"bad") else None
    async with Producer(amqp_url, cluster_name) as producer:
        with pytest.raises(WriteRejected, match="schema"):
            await producer.publish(b"bad body")
        ok = await producer.publish(b"good")
    assert ok.index == 1 and ok.seq == 2


async def test_publish_timeout_when_no_node_answers(amqp_url: str, cluster_name: str) -> None:
    async with Producer(amqp_url, cluster_name, attempt_timeout=0.2) as producer:
        with pytest.raises(TimeoutError):
            await producer.publish(b"nobody home", timeout=0.7)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await topology.declare_writes(channel, cluster_name)
        # the broker confirmed the write and every receipt-timeout retry: all wait in the
        # writes queue for a leader, all with the same seq (the node appends one)
        seqs = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            assert message.type == BATCH_TYPE
            for payload in decode_batch(message.body):
                record = Record.decode(payload)
                assert record.body == b"nobody home"
                assert record.producer_id == producer.producer_id
                seqs.append(record.seq)
        assert len(seqs) >= 2 and set(seqs) == {1}
    finally:
        await topology.delete_all(channel, cluster_name)
        await connection.close()
