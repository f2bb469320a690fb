"""Applying a committed entry never raises, whatever the entry holds.

Writes that the ingest rules would refuse reach the log anyway here, through the node's
``write`` request: a seq outside int64, a producer id that is not UTF-8, a message id
whose session key is longer than the column, a reserved producer id, a watermark entry
carrying an impossible index, a record whose meta nests too deep to decode. Every node
(two in memory, one on SQLite) applies them the same way -- as writes without session,
counted -- saves without a failure, and restarts."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from raftmq.protocol.record import Record
from raftmq.protocol.requests import WriteReply
from raftmq.storage.port import ClientSession, PersistBatch
from raftmq.storage.sql import SqlStorage
from tests.node.memory_cluster import MemoryCluster

BODY = b'{"n": 1}'
HOSTILE = [
    Record(body=BODY, producer_id="p", seq=10**30),
    Record(body=BODY, producer_id="\ud800", seq=1),
    Record(body=BODY, message_id="m" * 255),
    Record(body=BODY, producer_id="raftmq:dup:abc", seq=1),
]


def _deep_meta_record() -> bytes:
    """A record payload whose meta JSON nests deeper than the decoder can follow."""
    meta = b'{"h":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return struct.pack(">BI", 1, len(meta)) + meta + BODY


async def test_hostile_entries_apply_alike_save_and_restart(tmp_path: Path) -> None:
    c = MemoryCluster(seed=12)
    c.storages["c"] = SqlStorage(f"sqlite:///{tmp_path / 'c.db'}", cluster="mem", node_id="c")
    await c.start_all()
    try:
        leader = await c.leader()
        client = c.network.client("mem", timeout=10)
        for record in HOSTILE:
            raw = await client.request(leader.node_id, "write", record.encode())
            reply = WriteReply.model_validate_json(raw)
            assert reply.ok and not reply.duplicate, reply
        # The same again: still no session, so not a duplicate either (no dedupe).
        again = WriteReply.model_validate_json(
            await client.request(leader.node_id, "write", HOSTILE[0].encode())
        )
        assert again.ok and not again.duplicate
        host = leader.service_host
        await host.propose_watermark(10**30)  # an index no watermark can carry
        deep = await asyncio.wait_for(host.submit_payload(_deep_meta_record()), 10)
        await c.wait_applied(deep.index)
        for node in c.nodes.values():
            status = node.status()
            counters = status.counters
            assert counters["apply_unsessioned"] == len(HOSTILE) + 1, node.node_id
            assert counters["apply_bad_watermarks"] == 1 and counters["apply_decode_errors"] == 1
            assert counters["storage_retries"] == 0 and status.storage_ok and status.loop_ok
            assert node.sessions.session("raftmq:dup:abc") is None
            assert not node.sessions.is_duplicate(again.index or 0)
        await c.wait_applied(deep.index)
        applied = {i: list(log) for i, log in c.applied.items()}
        assert applied["a"] == applied["b"] == applied["c"]
        assert len(applied["a"]) == len(HOSTILE) + 1

        await c.stop_all()  # saves what was applied; a restart reads it all back
        await c.start_all()
        leader = await c.leader()
        last = await leader.write_record(Record(body=BODY, producer_id="p", seq=1))
        await c.wait_applied(last.index)
        assert all(node.status().loop_ok for node in c.nodes.values())
        assert all(node.sessions.session("p") is not None for node in c.nodes.values())
    finally:
        await c.stop_all()


async def test_sessions_under_reserved_ids_from_older_versions_reopen() -> None:
    """A database written before reserved ids were left out holds sessions named like
    duplicate marks ("raftmq:dup:abc", or a number with a real seq): the node starts,
    ignores them, and marks no entry as a duplicate because of them."""
    c = MemoryCluster(size=1, seed=14)
    store = c.storages["a"]
    await store.open()
    hostile = (
        ClientSession("raftmq:dup:abc", 1, 5, 1, 5),
        ClientSession("raftmq:dup:7", 3, 7, 1, 7),
    )
    await store.save(PersistBatch(sessions=hostile))
    await store.close()
    node = await c.start("a")
    try:
        await c.leader()
        assert node.status().loop_ok
        assert not node.sessions.is_duplicate(7)
        assert node.sessions.session("raftmq:dup:abc") is None
    finally:
        await c.stop_all()
