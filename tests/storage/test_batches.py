"""PersistBatch.followed_by: the node folds bookkeeping into the next save of entries."""

from __future__ import annotations

import pytest

from raftmq.core.types import Entry, HardState
from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import ClientSession, PersistBatch


def _session(pid: str, seq: int, index: int) -> ClientSession:
    return ClientSession(pid, seq, index, 1, index)


def test_later_values_win_and_maxima_are_kept() -> None:
    first = PersistBatch(
        hard_state=HardState(term=1, voted_for="a", commit=3),
        applied=3,
        fanout_watermark=2,
        sessions=(_session("p", 1, 2), _session("q", 1, 3)),
        expire_sessions_before=5,
    )
    later = PersistBatch(
        hard_state=HardState(term=1, voted_for="a", commit=4),
        entries=(Entry(index=5, term=1, data=b"x"),),
        applied=4,
        sessions=(_session("p", 2, 4),),
    )
    merged = first.followed_by(later)
    assert merged.hard_state == HardState(term=1, voted_for="a", commit=4)
    assert merged.entries == later.entries and merged.truncate_from is None
    assert (merged.applied, merged.fanout_watermark, merged.expire_sessions_before) == (4, 2, 5)
    assert {s.producer_id: s.last_seq for s in merged.sessions} == {"p": 2, "q": 1}


def test_earlier_hard_state_is_kept_when_the_later_has_none() -> None:
    hard = HardState(term=2, voted_for=None, commit=7)
    merged = PersistBatch(hard_state=hard, applied=7).followed_by(
        PersistBatch(entries=(Entry(index=8, term=2),))
    )
    assert merged.hard_state == hard and merged.applied == 7


def test_a_batch_with_log_changes_cannot_go_first() -> None:
    with pytest.raises(ValueError, match="without log changes"):
        PersistBatch(entries=(Entry(index=1, term=1),)).followed_by(PersistBatch(applied=1))


async def test_saving_the_merge_equals_saving_both_in_order() -> None:
    one, two = MemoryStorage(cluster="c", node_id="n"), MemoryStorage(cluster="c", node_id="n")
    base = PersistBatch(
        hard_state=HardState(term=1, voted_for="n", commit=1),
        entries=(Entry(index=1, term=1, data=b"a"),),
    )
    first = PersistBatch(hard_state=HardState(term=1, voted_for="n", commit=1), applied=1)
    later = PersistBatch(entries=(Entry(index=2, term=1, data=b"b"),), fanout_watermark=1)
    for store in (one, two):
        await store.open()
        await store.save(base)
    await one.save(first)
    await one.save(later)
    await two.save(first.followed_by(later))
    for getter in ("hard_state", "applied", "fanout_watermark", "last_index"):
        assert await getattr(one, getter)() == await getattr(two, getter)()
    assert await one.entries(1, 2) == await two.entries(1, 2)
