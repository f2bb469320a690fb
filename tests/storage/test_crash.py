"""Crash consistency: SIGKILL a writer at random moments; every reopen must show the state
after some fully committed batch, never a torn one (SQLite and Postgres).

Children are forked from a forkserver that has already imported SQLAlchemy and raftmq,
so each of the many kills costs milliseconds, not a Python start-up. Each child is a
real process killed with SIGKILL mid-stream. ``RAFTMQ_CRASH_KILLS`` raises the count.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from collections.abc import Callable, Iterator
from multiprocessing import forkserver
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import pytest

from raftmq.storage.sql import SqlStorage
from tests.storage.crash_writer import CLUSTER, NODE, Model, batch_stream, child_main, load_model

KILLS = int(os.environ.get("RAFTMQ_CRASH_KILLS", "50"))
SEED = int(os.environ.get("RAFTMQ_CRASH_SEED", "0")) or random.randrange(1, 2**31)


@pytest.fixture(scope="module")
def forkserver_context() -> Iterator[multiprocessing.context.ForkServerContext]:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.storage.crash_writer"])
    yield ctx
    # Stop the fork server so the test leaves no process behind.
    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()


async def _reopen(url: str) -> tuple[Model, SqlStorage]:
    store = SqlStorage(url, cluster=CLUSTER, node_id=NODE)
    await store.open()
    return await load_model(store), store


async def _check_open_view(store: SqlStorage, model: Model) -> None:
    """initial_state agrees with the full log (term runs from the database query)."""
    state = await store.initial_state(tail_entries=16)
    runs: list[tuple[int, int]] = []
    for entry in model.log:
        if not runs or runs[-1][1] != entry.term:
            runs.append((entry.index, entry.term))
    assert state.term_runs == tuple(runs)
    assert state.tail == tuple(model.log[-16:])
    assert state.last_index == len(model.log)


async def _wait(condition: Callable[[], bool], deadline: float) -> None:
    """Poll ``condition`` (shared memory of another process) until true or the deadline."""
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.002)


def _started(child: BaseProcess, written: Synchronized[int]) -> Callable[[], bool]:
    return lambda: written.value >= 0 or not child.is_alive()


def _gone(child: BaseProcess) -> Callable[[], bool]:
    return lambda: not child.is_alive()


async def crash_loop(url: str, ctx: multiprocessing.context.ForkServerContext) -> None:
    rng = random.Random(SEED)
    start, store = await _reopen(url)
    await store.close()
    total_written = 0
    for run in range(KILLS):
        written = ctx.Value("q", -1, lock=False)
        child = ctx.Process(target=child_main, args=(url, SEED, run, written), daemon=True)
        child.start()
        try:
            if rng.random() < 0.9:  # else: kill while it is still opening the store
                await _wait(_started(child, written), time.monotonic() + 30)
                assert child.is_alive(), f"writer died on its own (exit {child.exitcode})"
                # The kill moment: a random point in the write stream.
                await asyncio.sleep(rng.uniform(0.0, 0.06))
        finally:
            child.kill()
            await _wait(_gone(child), time.monotonic() + 10)
            child.join(timeout=1)
        acked = max(written.value, 0)
        states = [start]
        for _, after in batch_stream(start, SEED, run):
            if len(states) > acked + 1:
                break
            states.append(after)
        found, store = await _reopen(url)
        try:
            matches = [k for k, s in enumerate(states) if s.fingerprint() == found.fingerprint()]
            assert matches, (
                f"seed {SEED} run {run}: reopened store matches no committed state "
                f"(child acknowledged {acked} batches); replay: RAFTMQ_CRASH_SEED={SEED}"
            )
            k = matches[-1]
            assert k >= acked, f"seed {SEED} run {run}: acknowledged batch {acked} lost"
            assert found.hard.term >= start.hard.term, "term went backwards"
            await _check_open_view(store, found)
        finally:
            await store.close()
        total_written += k
        start = found
    assert total_written > KILLS, f"too few batches written ({total_written}) to mean much"


async def test_sqlite_survives_sigkill(
    tmp_path: Path, forkserver_context: multiprocessing.context.ForkServerContext
) -> None:
    await crash_loop(f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}", forkserver_context)


@pytest.mark.integration
async def test_postgres_survives_sigkill(
    postgres_url: str, forkserver_context: multiprocessing.context.ForkServerContext
) -> None:
    await crash_loop(postgres_url, forkserver_context)
