"""Batched writes (docs/protocol.md §3, "Batches") against real `raftmq node` processes,
built with plain aio-pika, ``struct`` and ``json`` only, as a client in another language
would: every record is judged on its own, refused ones are dead-lettered one by one, one
receipt lists every outcome, a repeated batch is recognised record by record, and a batch
whose framing is broken is dead-lettered whole."""

from __future__ import annotations

import json
import struct
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from raftmq.protocol import names
from tests.conftest import ClusterFactory
from tests.queue.test_node_side_queue import _dead_letters, _h, _publish, _started

pytestmark = pytest.mark.integration


def _record(body: bytes, **meta: Any) -> bytes:
    """One record in the §8 layout: version 1, uint32 meta length, compact JSON, body."""
    raw = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
    return struct.pack(">BI", 1, len(raw)) + raw + body


def _batch(records: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(r)) + r for r in records)


async def _publish_batch(
    channel: AbstractChannel, cluster: str, body: bytes, reply_to: str, correlation_id: str
) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            type="raftmq.batch",
            reply_to=reply_to,
            correlation_id=correlation_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=names.writes_queue(cluster),
    )


async def test_a_batch_is_judged_record_by_record_with_one_receipt(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster(extra_env={"RAFTMQ_MAX_WRITE_BYTES": "2000"})
    committed, receipts = await _started(cluster, channel)
    dead = await _dead_letters(channel, cluster.cluster)
    records = [
        _record(b"one", ct="text/plain", h={"color": "red"}, mid="m1", pid="bp", seq=1),
        _record(b"x" * 5000, pid="bp", seq=2, h={"tag": "big"}),
        _record(b"zero", pid="bp", seq=0, h={"tag": "zero"}),
        b"\x07not a record",
        _record(b"three", pid="bp", seq=3),
        _record(b"one", pid="bp", seq=1),  # the same write twice in one batch
        _record(b"plain", h={"nested": {"dropped": True}, "raftmq-index": 99, "kept": 1.5}),
    ]
    await _publish_batch(channel, cluster.cluster, _batch(records), receipts.queue.name, "b1")
    await receipts.wait(lambda: len(receipts.messages) >= 1, timeout=60)
    receipt = receipts.messages[0]
    assert receipt.correlation_id == "b1" and _h(receipt, names.H_STATUS) == "ok"
    results = json.loads(receipt.body)["results"]
    assert len(results) == len(records)
    one, big, zero, junk, three, again, plain = results
    assert one["seq"] == 1 and one["duplicate"] is False and one["index"] >= 1
    assert big["reason"].startswith("too_large")
    assert zero["reason"].startswith("invalid_seq")
    assert junk["reason"].startswith("malformed_record")
    assert three["seq"] == 3 and three["index"] > one["index"]
    assert again == {"seq": 1, "index": one["index"], "term": one["term"], "duplicate": True}
    assert "seq" not in plain and plain["index"] > three["index"]

    await committed.wait(lambda: len(committed.messages) >= 3, timeout=30)
    assert [m.body for m in committed.messages] == [b"one", b"three", b"plain"]
    first, _, last = committed.messages
    assert first.content_type == "text/plain" and first.message_id == "m1"
    assert _h(first, "color") == "red" and _h(first, names.H_PRODUCER) == "bp"
    assert _h(first, names.H_SEQ) == 1 and _h(first, names.H_INDEX) == one["index"]
    assert _h(last, "kept") == 1.5 and _h(last, "nested") is None
    assert _h(last, names.H_INDEX) == plain["index"]  # a reserved header is not taken over

    await dead.wait(lambda: len(dead.messages) >= 3, timeout=30)
    reasons = sorted(str(_h(m, names.H_REASON)).split(":")[0] for m in dead.messages)
    assert reasons == ["invalid_seq", "malformed_record", "too_large"]
    big_dead = next(m for m in dead.messages if _h(m, "tag") == "big")
    assert big_dead.body == b"x" * 5000 and _h(big_dead, names.H_SEQ) == 2

    # The same batch again (a producer retry, or a redelivery after a leader change): the
    # session records are duplicates naming their originals; the record without a session
    # is appended again (at-least-once); the refused ones are refused again.
    await _publish_batch(channel, cluster.cluster, _batch(records), receipts.queue.name, "b2")
    await receipts.wait(lambda: len(receipts.messages) >= 2, timeout=30)
    second = json.loads(receipts.messages[1].body)["results"]
    assert second[0] == {**one, "duplicate": True}
    assert second[4] == {**three, "duplicate": True}
    assert second[6]["index"] > plain["index"]
    await committed.wait(lambda: len(committed.messages) >= 4, timeout=30)
    assert [m.body for m in committed.messages] == [b"one", b"three", b"plain", b"plain"]
    writes = await channel.declare_queue(names.writes_queue(cluster.cluster), passive=True)
    assert writes.declaration_result.message_count == 0  # both batches acked


async def test_a_batch_with_broken_framing_is_dead_lettered_whole(
    local_cluster: ClusterFactory, channel: AbstractChannel
) -> None:
    cluster = local_cluster()
    committed, receipts = await _started(cluster, channel)
    dead = await _dead_letters(channel, cluster.cluster)
    broken = _batch([_record(b"fine", pid="q", seq=1)]) + struct.pack(">I", 100) + b"short"
    await _publish_batch(channel, cluster.cluster, broken, receipts.queue.name, "broken")
    await _publish(channel, cluster.cluster, b"behind it")
    await committed.wait(lambda: len(committed.messages) >= 1, timeout=60)
    assert [m.body for m in committed.messages] == [b"behind it"]  # nothing of the batch
    await receipts.wait(lambda: len(receipts.messages) >= 1, timeout=30)
    receipt = receipts.messages[0]
    assert _h(receipt, names.H_STATUS) == "error"
    assert json.loads(receipt.body)["reason"].startswith("bad_batch")
    await dead.wait(lambda: len(dead.messages) >= 1, timeout=30)
    assert dead.messages[0].body == broken
    assert str(_h(dead.messages[0], names.H_REASON)).startswith("bad_batch")
