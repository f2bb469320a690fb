"""Storage benchmark: entries/s appended per transaction size, and open time at 1M entries.

Run from the repository root::

    .venv/bin/python benchmarks/storage.py [--seconds 0.5] [--rounds 3] [--open-entries N]
        [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test] [--no-postgres]

Appends 100-byte entries in transactions of 1, 100 and 1,000 entries through
``SqlStorage.save`` for SQLite FULL, SQLite NORMAL and Postgres (asyncpg, and psycopg 3
when installed, to compare drivers), next to raw ``sqlite3`` WAL+FULL references; then
times ``open()`` + ``initial_state()`` of a store holding ``--open-entries`` entries.
Postgres runs in a fresh database that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sqlite3
import tempfile
import time
from pathlib import Path

from raftmq.core.types import Entry
from raftmq.storage.port import PersistBatch
from raftmq.storage.sql import SqlStorage
from raftmq.testing.postgres import fresh_postgres_database

PAYLOAD = b"x" * 100
SIZES = (1, 100, 1_000)


def raw_sqlite(path: Path, per_txn: int, seconds: float) -> float:
    """Rows/s with plain sqlite3, WAL + synchronous=FULL, explicit BEGIN/COMMIT."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, term INT, data BLOB)")
    index, rows = 0, 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO log VALUES (?, 1, ?)",
            [(index + i + 1, PAYLOAD) for i in range(per_txn)],
        )
        conn.execute("COMMIT")
        index += per_txn
        rows += per_txn
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


async def adapter_rate(store: SqlStorage, per_txn: int, seconds: float) -> float:
    """Entries/s appended through ``save`` in transactions of ``per_txn`` entries.

    Batches are built before the clock starts (building Entry objects is the core's
    cost, not the store's); the workload is sized to last about ``seconds``."""
    index = await store.last_index()
    txns = max(20, int(seconds * {1: 1_500, 100: 600, 1_000: 80}.get(per_txn, 100)))
    batches = [
        PersistBatch(
            entries=tuple(
                Entry(index=index + k * per_txn + i + 1, term=1, data=PAYLOAD)
                for i in range(per_txn)
            )
        )
        for k in range(txns)
    ]
    start = time.perf_counter()
    for batch in batches:
        await store.save(batch)
    return txns * per_txn / (time.perf_counter() - start)


async def fill(store: SqlStorage, count: int) -> None:
    """Append ``count`` entries in big transactions (terms change every 100,000)."""
    index = await store.last_index()
    while index < count:
        n = min(10_000, count - index)
        batch = tuple(
            Entry(index=i, term=1 + i // 100_000, data=PAYLOAD)
            for i in range(index + 1, index + n + 1)
        )
        await store.save(PersistBatch(entries=batch))
        index += n


async def time_open(url: str) -> tuple[float, int]:
    """Seconds to open a store and load its initial state; its number of term runs."""
    start = time.perf_counter()
    store = SqlStorage(url, cluster="bench", node_id="n1")
    await store.open()
    state = await store.initial_state()
    elapsed = time.perf_counter() - start
    await store.close()
    assert state.last_index > 0
    return elapsed, len(state.term_runs)


def report(label: str, rates: list[float]) -> None:
    """One table row: entries/s for each transaction size."""
    cells = "".join(f"{rate:>14,.0f}" for rate in rates)
    print(f"{label:<40}{cells}")


async def bench_adapter(url: str, seconds: float, **options: str) -> list[float]:
    """Entries/s through SqlStorage.save for each transaction size."""
    store = SqlStorage(url, cluster="bench", node_id="n1", **options)  # type: ignore[arg-type]
    await store.open()
    try:
        return [await adapter_rate(store, n, seconds) for n in SIZES]
    finally:
        await store.close()


async def throughput(args: argparse.Namespace, folder: Path) -> None:
    """The append table: best of ``--rounds`` interleaved rounds per cell (the disk's
    fsync latency on this VM varies several-fold from second to second)."""
    seconds: float = args.seconds
    rows: dict[str, list[float]] = {}

    def keep(label: str, rates: list[float]) -> None:
        rows[label] = [max(a, b) for a, b in zip(rows.get(label, rates), rates, strict=True)]

    async with contextlib.AsyncExitStack() as stack:
        pg: dict[str, str] = {}
        if not args.no_postgres:
            pg["asyncpg"] = await stack.enter_async_context(
                fresh_postgres_database(args.postgres, prefix="raftmq_bench")
            )
            if importlib.util.find_spec("psycopg") is not None:
                url = await stack.enter_async_context(
                    fresh_postgres_database(args.postgres, prefix="raftmq_bench")
                )
                pg["psycopg 3"] = url.replace("+asyncpg", "+psycopg", 1)
        for round_no in range(args.rounds):
            raw = [raw_sqlite(folder / f"raw{n}-{round_no}.db", n, seconds) for n in SIZES]
            keep("raw sqlite3 WAL+FULL (reference)", raw)
            keep(
                "SqlStorage SQLite FULL",
                await bench_adapter(f"sqlite:///{folder / 'full.db'}", seconds),
            )
            keep(
                "SqlStorage SQLite NORMAL",
                await bench_adapter(
                    f"sqlite:///{folder / 'normal.db'}", seconds, durability="normal"
                ),
            )
            keep(
                "SqlStorage SQLite FULL via aiosqlite",
                await bench_adapter(
                    f"sqlite:///{folder / 'aio.db'}", seconds, sqlite_runner="aiosqlite"
                ),
            )
            for driver, url in pg.items():
                keep(f"SqlStorage Postgres ({driver})", await bench_adapter(url, seconds))
    print(f"{'entries/s, 100 B entries, txn of':<40}" + "".join(f"{n:>14,}" for n in SIZES))
    for label, rates in rows.items():
        report(label, rates)


async def open_time(args: argparse.Namespace, folder: Path) -> None:
    """Seconds to open a store of ``--open-entries`` entries, SQLite and Postgres."""
    count = args.open_entries
    print(f"\nopen() + initial_state() of a store holding {count:,} entries:")
    url = f"sqlite:///{folder / 'big.db'}"
    store = SqlStorage(url, cluster="bench", node_id="n1", durability="normal")
    await store.open()
    await fill(store, count)
    await store.close()
    elapsed, runs = await time_open(url)
    print(f"  SQLite:   {elapsed * 1000:8.1f} ms ({runs} term runs)")
    if not args.no_postgres:
        async with fresh_postgres_database(args.postgres, prefix="raftmq_bench") as pg_url:
            store = SqlStorage(pg_url, cluster="bench", node_id="n1")
            await store.open()
            await fill(store, count)
            await store.close()
            elapsed, runs = await time_open(pg_url)
            print(f"  Postgres: {elapsed * 1000:8.1f} ms ({runs} term runs)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--open-entries", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await throughput(args, Path(tmp))
        await open_time(args, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
