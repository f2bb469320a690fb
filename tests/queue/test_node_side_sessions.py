"""Client sessions on real Nodes (in-memory transport and storage): a write retried with the
same (producer, seq) or message id is applied once, everywhere, and its receipt names the
original index; sessions survive restarts; expiry is decided per entry, deterministically."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from raftmq.node.sessions import SessionTable
from raftmq.protocol.record import Record
from tests.node.memory_cluster import MemoryCluster


@pytest.fixture
async def cluster() -> AsyncIterator[MemoryCluster]:
    c = MemoryCluster()
    await c.start_all()
    yield c
    await c.stop_all()


def _rec(n: int, pid: str | None = "p1", seq: int | None = None, mid: str | None = None) -> Record:
    return Record(
        body=f'{{"n": {n}}}'.encode(),
        content_type="application/json",
        producer_id=pid,
        seq=seq if pid is not None else None,
        message_id=mid,
    )


async def test_same_producer_seq_twice_is_applied_once_and_names_the_first_index(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    first = await leader.write_record(_rec(1, seq=1))
    again = await leader.write_record(_rec(1, seq=1))
    assert not first.duplicate
    assert again.duplicate and (again.index, again.term) == (first.index, first.term)
    nxt = await leader.write_record(_rec(2, seq=2))
    assert not nxt.duplicate and nxt.index > first.index
    await cluster.wait_applied(nxt.index)
    for node_id, node in cluster.nodes.items():
        assert [n for _, n in cluster.applied[node_id]] == [1, 2], node_id
        # write_record does not pre-check: the copy is in the log and skipped at apply.
        assert node.sessions.is_duplicate(first.index + 1), node_id
        assert node.sessions.original("p1", 2, nxt.index + 1) is not None


async def test_both_copies_in_flight_one_is_skipped_on_every_node(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    # Proposed in the same loop turn: both reach the log; apply decides, identically.
    commits = await asyncio.gather(*(leader.write_record(_rec(7, seq=5)) for _ in range(3)))
    originals = [c for c in commits if not c.duplicate]
    assert len(originals) == 1
    assert {(c.index, c.term) for c in commits} == {(originals[0].index, originals[0].term)}
    last = await leader.write_record(_rec(8, seq=6))
    await cluster.wait_applied(last.index)
    for node_id, node in cluster.nodes.items():
        assert [n for _, n in cluster.applied[node_id]] == [7, 8], node_id
        dups = [i for i in range(1, last.index) if node.sessions.is_duplicate(i)]
        assert len(dups) == 2, node_id


async def test_message_id_only_writes_dedupe(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    a = await leader.write_record(_rec(1, pid=None, mid="m-1"))
    b = await leader.write_record(_rec(1, pid=None, mid="m-1"))
    c = await leader.write_record(_rec(2, pid=None, mid="m-2"))
    assert b.duplicate and b.index == a.index and not c.duplicate
    await cluster.wait_applied(c.index)
    assert [n for _, n in cluster.applied["a"]] == [1, 2]


async def test_sessions_survive_a_restart_of_every_node(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    first = await leader.write_record(_rec(1, seq=1))
    dup = await leader.write_record(_rec(1, seq=1))
    await cluster.wait_applied(dup.index if dup.index > first.index else first.index + 1)
    await cluster.stop_all()
    for storage in cluster.storages.values():
        await storage.open()
        session = await storage.session("p1")
        assert session is not None and session.last_index == first.index
        await storage.close()
    await cluster.start_all()
    leader = await cluster.leader()
    again = await leader.write_record(_rec(1, seq=1))
    assert again.duplicate and again.index == first.index
    fresh = await leader.write_record(_rec(3, seq=2))
    await cluster.wait_applied(fresh.index)
    for node_id in cluster.ids:
        assert [n for _, n in cluster.applied[node_id]] == [1, 3], node_id


def test_expiry_is_decided_per_entry_not_per_batch() -> None:
    def run(batches: list[list[int]]) -> list[bool]:
        table = SessionTable(expiry_entries=10)
        out = []
        for batch in batches:
            for index in batch:
                # index 1: first write; index 12 retries it after the session expired.
                if index in (1, 5, 12):
                    out.append(table.apply(_rec(0, seq=1), index, 1) is not None)
            table.take_changes(batch[-1])
        return out

    one = run([list(range(1, 13))])
    many = run([[i] for i in range(1, 13)])
    assert one == many == [False, True, False]


# ------------------------------------------------- out-of-order seqs: exact per-seq dedupe


async def test_seq_committed_before_an_older_one_both_apply_once_everywhere(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    five = await leader.write_record(_rec(5, seq=5))  # floor 0, above {5}
    seven = await leader.write_record(_rec(7, seq=7))  # e.g. 6 was requeued behind 7
    six = await leader.write_record(_rec(6, seq=6))
    assert not (five.duplicate or seven.duplicate or six.duplicate)
    assert five.index < seven.index < six.index
    retry = await leader.write_record(_rec(6, seq=6))  # a redelivered copy of 6
    assert retry.duplicate and (retry.index, retry.term) == (six.index, six.term)
    retry7 = await leader.write_record(_rec(7, seq=7))
    assert retry7.duplicate and retry7.index == seven.index
    await cluster.wait_applied(retry7.index)
    for node_id, node in cluster.nodes.items():
        assert [n for _, n in cluster.applied[node_id]] == [5, 7, 6], node_id
        session = node.sessions.session("p1")
        assert session is not None and (session.floor, session.above) == (0, (5, 6, 7))
        assert (session.last_seq, session.last_index) == (7, seven.index), node_id
    # Seqs 1..4 arrive late: they are applied, and the floor absorbs everything up to 7.
    late = [await leader.write_record(_rec(n, seq=n)) for n in range(1, 5)]
    assert not any(c.duplicate for c in late)
    await cluster.wait_applied(late[-1].index)
    for node_id, node in cluster.nodes.items():
        assert [n for _, n in cluster.applied[node_id]] == [5, 7, 6, 1, 2, 3, 4], node_id
        session = node.sessions.session("p1")
        assert session is not None and (session.floor, session.above) == (7, ()), node_id


async def test_both_copies_of_an_out_of_order_seq_in_the_log_one_is_skipped(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    await leader.write_record(_rec(2, seq=2))
    commits = await asyncio.gather(*(leader.write_record(_rec(1, seq=1)) for _ in range(3)))
    originals = [c for c in commits if not c.duplicate]
    assert len(originals) == 1
    assert {c.index for c in commits} == {originals[0].index}
    await cluster.wait_applied(max(c.index for c in commits) + 2)  # every copy applied
    for node_id in cluster.ids:
        assert [n for _, n in cluster.applied[node_id]] == [2, 1], node_id


async def test_gap_bound_abandons_the_oldest_missing_seq_on_every_node(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    for node in cluster.nodes.values():
        node.sessions.max_gap = 3  # the node setting max_session_gap, small for the test
    commits = [await leader.write_record(_rec(n, seq=n)) for n in (1, 3, 5, 6, 7)]
    # After 7: above = {3, 5, 6, 7} exceeds 3 -> seq 2 is abandoned: floor 3, above {5,6,7}.
    # Then 4 is still missing with 3 seqs above: allowed.
    assert not any(c.duplicate for c in commits)
    late2 = await leader.write_record(_rec(2, seq=2))
    assert late2.duplicate and late2.index == 0  # abandoned, its place was never known
    late4 = await leader.write_record(_rec(4, seq=4))
    assert not late4.duplicate
    await cluster.wait_applied(late4.index)
    for node_id, node in cluster.nodes.items():
        assert [n for _, n in cluster.applied[node_id]] == [1, 3, 5, 6, 7, 4], node_id
        session = node.sessions.session("p1")
        assert session is not None and (session.floor, session.above) == (7, ()), node_id


async def test_restart_keeps_floor_and_above(cluster: MemoryCluster) -> None:
    leader = await cluster.leader()
    done = [await leader.write_record(_rec(n, seq=n)) for n in (1, 3, 5)]
    await cluster.wait_applied(done[-1].index)
    await cluster.stop_all()
    for storage in cluster.storages.values():
        await storage.open()
        session = await storage.session("p1")
        assert session is not None and (session.floor, session.above) == (1, (3, 5))
        assert (session.last_seq, session.last_index) == (5, done[-1].index)
        await storage.close()
    await cluster.start_all()
    leader = await cluster.leader()
    again5 = await leader.write_record(_rec(5, seq=5))  # last_seq: exact index survives
    assert again5.duplicate and again5.index == done[-1].index
    again3 = await leader.write_record(_rec(3, seq=3))  # re-learnt from the log at start
    assert again3.duplicate and again3.index == done[1].index
    two = await leader.write_record(_rec(2, seq=2))
    four = await leader.write_record(_rec(4, seq=4))
    assert not (two.duplicate or four.duplicate)
    await cluster.wait_applied(four.index)
    for node_id, node in cluster.nodes.items():
        assert [n for _, n in cluster.applied[node_id]] == [1, 3, 5, 2, 4], node_id
        session = node.sessions.session("p1")
        assert session is not None and (session.floor, session.above) == (5, ()), node_id
