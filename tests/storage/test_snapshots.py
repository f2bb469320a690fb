"""SQL-only snapshot behaviour: an install that fails inside its transaction leaves the
old state; compaction in bounded batches; a SQLite file at steady state under compaction
reuses its free pages (sizes printed, no timing)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from raftmq.core.types import Entry, HardState
from raftmq.storage.port import PersistBatch, Snapshot
from raftmq.storage.sql import SqlStorage
from raftmq.storage.statements import WriteStatements


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _entries(lo: int, hi: int, term: int, size: int = 10) -> tuple[Entry, ...]:
    return tuple(Entry(index=i, term=term, data=b"x" * size) for i in range(lo, hi + 1))


async def test_install_failing_midway_leaves_the_old_state(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlStorage(db_url, cluster="c", node_id="n1")
    await store.open()
    hard = HardState(term=2, voted_for="n1", commit=4)
    await store.save(PersistBatch(hard_state=hard, entries=_entries(1, 6, 2), applied=4))

    def broken(self: WriteStatements, conn: Any, entries: Any, *stamp: Any) -> None:
        raise RuntimeError("disk full")  # after the log was deleted and the snapshot written

    monkeypatch.setattr(WriteStatements, "append_entries", broken)
    snap = Snapshot(index=9, term=3, voters=("n1",), data=b"s9")
    batch = PersistBatch(hard_state=HardState(term=3, commit=9), entries=_entries(10, 11, 3))
    with pytest.raises(RuntimeError, match="disk full"):
        await store.install_snapshot(snap, batch)
    monkeypatch.undo()
    try:  # the same store (caches reloaded) and a reopened one see the old state
        other = SqlStorage(db_url, cluster="c", node_id="n1")
        await other.open()
        for s in (store, other):
            assert await s.snapshot() is None
            assert await s.hard_state() == hard
            assert (await s.first_index(), await s.last_index()) == (1, 6)
            assert await s.entries(1, 6) == list(_entries(1, 6, 2))
            assert await s.applied() == 4
        await other.close()
        await store.install_snapshot(snap, batch)  # and the retry installs it
        assert (await store.first_index(), await store.last_index()) == (10, 11)
    finally:
        await store.close()


async def test_compaction_in_bounded_batches_is_exact(db_url: str) -> None:
    store = SqlStorage(db_url, cluster="c", node_id="n1")
    await store.open()
    try:
        await store.save(PersistBatch(entries=(*_entries(1, 10, 1), *_entries(11, 30, 2))))
        await store.save_snapshot(Snapshot(25, 2, ("n1",), b"s25"))
        store.compact_batch_rows = 3  # 7 transactions for 20 rows
        await store.compact(20)
        assert (await store.first_index(), await store.last_index()) == (21, 30)
        assert await store.term_at(20) == 2
        assert await store.entries(21, 30) == list(_entries(21, 30, 2))
        state = await store.initial_state()
        assert state.term_runs == ((20, 2),)
    finally:
        await store.close()


def _size(path: Path) -> int:
    """Bytes of the database file and its WAL."""
    return os.path.getsize(path) + os.path.getsize(f"{path}-wal")


async def test_sqlite_file_is_flat_at_steady_state_under_compaction(tmp_path: Path) -> None:
    """Write 200-byte entries in rounds, keep the last 2,000 (snapshot + compact each
    round): after the first rounds the file stops growing -- deleted pages are on the
    freelist and the next inserts reuse them (no VACUUM needed)."""
    path = tmp_path / "flat.db"
    store = SqlStorage(f"sqlite:///{path}", cluster="c", node_id="n1", durability="normal")
    await store.open()
    sizes: list[int] = []
    try:
        last = 0
        for _ in range(20):
            await store.save(PersistBatch(entries=_entries(last + 1, last + 1000, 1, 200)))
            last += 1000
            await store.save_snapshot(Snapshot(last, 1, ("n1",), b"s" * 1000))
            await store.compact(last - 2000)
            sizes.append(_size(path))
    finally:
        await store.close()
    print("sqlite db+wal bytes per round:", sizes)
    # The last half of the run is flat within 20 % (the criterion).
    assert max(sizes[10:]) <= 1.2 * min(sizes[10:])
    assert sizes[-1] <= 1.2 * sizes[9]
