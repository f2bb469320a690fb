"""The SQLite runner's worker thread: one per store, gone after close (or once a runner
that was never closed is collected); a caller cancelled mid-save leaves a usable store."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from raftmq.core.types import Entry
from raftmq.storage.port import PersistBatch
from raftmq.storage.runner import ThreadRunner, make_runner
from raftmq.storage.sql import SqlStorage
from raftmq.storage.sqlops import nothing


def _runner(tmp_path: Path) -> ThreadRunner:
    runner = make_runner(f"sqlite:///{tmp_path / 'n1.db'}")
    assert isinstance(runner, ThreadRunner)
    return runner


async def test_close_stops_the_thread(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    await runner.run(nothing, write=True)
    thread = runner._thread
    assert thread.is_alive()
    await runner.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        await runner.run(nothing)


async def test_a_runner_never_closed_stops_its_thread_when_collected(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    await runner.run(nothing)
    thread = runner._thread
    del runner
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


async def test_a_cancelled_save_leaves_the_store_consistent(tmp_path: Path) -> None:
    """The worker finishes the transaction it started (or not yet): either way the store
    reloads its caches from the database and the log continues from what is there."""
    store = SqlStorage(f"sqlite:///{tmp_path / 'n1.db'}", cluster="c", node_id="n1")
    await store.open()
    try:
        await store.save(PersistBatch(entries=(Entry(index=1, term=1, data=b"a"),)))
        for index in range(2, 12):
            batch = PersistBatch(entries=(Entry(index=index, term=1, data=b"b"),))
            task = asyncio.create_task(store.save(batch))
            await asyncio.sleep(0)  # let it reach the worker thread
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await store.last_index() in (index - 1, index)
            if await store.last_index() == index - 1:
                await store.save(batch)
        assert await store.last_index() == 11
        assert [e.index for e in await store.entries(1, 11)] == list(range(1, 12))
    finally:
        await store.close()
