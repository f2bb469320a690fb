"""Storage benchmark: entries/s appended per transaction size, the cost of one Raft
round's save, and open time at 1M entries.

Run from the repository root::

    .venv/bin/python benchmarks/storage.py [--seconds 0.5] [--rounds 3] [--open-entries N]
        [--saves 1000] [--only throughput|save-cost|open]
        [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test] [--no-postgres]
        [--json PATH] [--progress | --no-progress]

Appends 100-byte entries in transactions of 1, 100 and 1,000 entries through
``SqlStorage.save`` for SQLite FULL, SQLite NORMAL and Postgres (asyncpg, and psycopg 3
when installed, to compare drivers), next to raw ``sqlite3`` WAL+FULL references; then
measures the CPU (``time.process_time``: every thread of this process, so the SQLite
worker thread counts) and wall microseconds of one ``save`` of the small batch a node
writes every round (``save_cost``); then times ``open()`` + ``initial_state()`` of a
store holding ``--open-entries`` entries. Postgres runs in a fresh database that is
dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq.core.types import Entry, HardState
from raftmq.storage.port import ClientSession, PersistBatch
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


def report_row(label: str, rates: list[float]) -> None:
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


async def throughput(args: argparse.Namespace, folder: Path, bench: report.Report) -> None:
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
        with bench.phase("append throughput", total=args.rounds * (4 + len(pg))) as cells:
            for round_no in range(args.rounds):
                cells.describe(f"append throughput, round {round_no + 1}/{args.rounds}")
                raw = [raw_sqlite(folder / f"raw{n}-{round_no}.db", n, seconds) for n in SIZES]
                keep("raw sqlite3 WAL+FULL (reference)", raw)
                cells.advance()
                keep(
                    "SqlStorage SQLite FULL",
                    await bench_adapter(f"sqlite:///{folder / 'full.db'}", seconds),
                )
                cells.advance()
                keep(
                    "SqlStorage SQLite NORMAL",
                    await bench_adapter(
                        f"sqlite:///{folder / 'normal.db'}", seconds, durability="normal"
                    ),
                )
                cells.advance()
                keep(
                    "SqlStorage SQLite FULL via aiosqlite",
                    await bench_adapter(
                        f"sqlite:///{folder / 'aio.db'}", seconds, sqlite_runner="aiosqlite"
                    ),
                )
                cells.advance()
                for driver, url in pg.items():
                    keep(f"SqlStorage Postgres ({driver})", await bench_adapter(url, seconds))
                    cells.advance()
    print(f"{'entries/s, 100 B entries, txn of':<40}" + "".join(f"{n:>14,}" for n in SIZES))
    for label, rates in rows.items():
        report_row(label, rates)
        for size, rate in zip(SIZES, rates, strict=True):
            bench.figure(f"{label}, txn of {size:,}", rate, "entries/s")


async def open_time(args: argparse.Namespace, folder: Path, bench: report.Report) -> None:
    """Seconds to open a store of ``--open-entries`` entries, SQLite and Postgres."""
    count = args.open_entries
    print(f"\nopen() + initial_state() of a store holding {count:,} entries:")
    url = f"sqlite:///{folder / 'big.db'}"
    with bench.phase(f"open: filling SQLite with {count:,} entries"):
        store = SqlStorage(url, cluster="bench", node_id="n1", durability="normal")
        await store.open()
        await fill(store, count)
        await store.close()
        elapsed, runs = await time_open(url)
    print(f"  SQLite:   {elapsed * 1000:8.1f} ms ({runs} term runs)")
    bench.figure(f"open, {count:,} entries, SQLite", elapsed, "s")
    if not args.no_postgres:
        async with fresh_postgres_database(args.postgres, prefix="raftmq_bench") as pg_url:
            with bench.phase(f"open: filling Postgres with {count:,} entries"):
                store = SqlStorage(pg_url, cluster="bench", node_id="n1")
                await store.open()
                await fill(store, count)
                await store.close()
                elapsed, runs = await time_open(pg_url)
            print(f"  Postgres: {elapsed * 1000:8.1f} ms ({runs} term runs)")
            bench.figure(f"open, {count:,} entries, Postgres", elapsed, "s")


# -- the cost of one Raft round's save ------------------------------------------------

ROUND_PAYLOAD = b"r" * 200  # a typical client write is 150-300 bytes
SAVE_CASES = ("(a) 3 entries", "(b) 3 entries + bookkeeping", "(c) bookkeeping only")
_WARM_UP_SAVES = 50  # per case and store, unmeasured: connection, statement caches


class RoundWorkload:
    """The batches a node saves round after round, on a log of term 1.

    (a) 3 entries; (b) 3 entries, a hard state with a new commit index, applied, fan-out
    watermark and 2 client sessions; (c) applied and 2 client sessions (the state
    machine catching up). Every value moves from one batch to the next, as in a busy
    node, so a store cannot skip a statement as unchanged."""

    def __init__(self, last_index: int) -> None:
        """Continue a log whose last index is ``last_index``."""
        self.last = last_index  # last index appended so far
        self.applied = 0  # last applied index saved; lags the log ((a) only appends)
        self.rounds = 0  # batches made so far

    def batch(self, case: str) -> PersistBatch:
        """The next batch of ``case`` (one of SAVE_CASES)."""
        self.rounds += 1
        if case == SAVE_CASES[2]:
            self.applied += 1
            return PersistBatch(applied=self.applied, sessions=self._sessions())
        first = self.last + 1
        entries = tuple(Entry(index=first + i, term=1, data=ROUND_PAYLOAD) for i in range(3))
        self.last += 3
        if case == SAVE_CASES[0]:
            return PersistBatch(entries=entries)
        self.applied += 3
        return PersistBatch(
            hard_state=HardState(term=1, voted_for="n1", commit=self.last),
            entries=entries,
            applied=self.applied,
            fanout_watermark=self.applied,
            sessions=self._sessions(),
        )

    def _sessions(self) -> tuple[ClientSession, ...]:
        """Two of seven producers, each with a new last write."""
        index = self.applied
        return tuple(
            ClientSession(f"producer-{(2 * self.rounds + k) % 7}", self.rounds, index, 1, index)
            for k in (0, 1)
        )


async def adapter_save_cost(
    store: SqlStorage, workload: RoundWorkload, case: str, saves: int
) -> tuple[float, float]:
    """CPU and wall microseconds per ``store.save`` of ``case`` batches."""
    batches = [workload.batch(case) for _ in range(saves)]  # the core's cost, not the store's
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        await store.save(batch)
    return (time.process_time() - cpu) / saves * 1e6, (time.perf_counter() - wall) / saves * 1e6


_RAW_SESSION = (
    "INSERT INTO raftmq_client_session (producer_id, last_seq, last_index, last_term, "
    "updated_index, floor_seq, above_seqs) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _raw_save(conn: sqlite3.Connection, batch: PersistBatch) -> None:
    """The store's statements for ``batch``, by hand, in BEGIN IMMEDIATE / COMMIT."""
    conn.execute("BEGIN IMMEDIATE")
    if batch.hard_state is not None:
        hs = batch.hard_state
        conn.execute(
            "UPDATE raftmq_hard_state SET term = ?, voted_for = ?, commit_index = ?",
            (hs.term, hs.voted_for, hs.commit),
        )
    if batch.entries:
        conn.executemany(
            "INSERT INTO raftmq_log (idx, term, kind, data) VALUES (?, ?, ?, ?)",
            [(e.index, e.term, int(e.kind), e.data) for e in batch.entries],
        )
    if batch.applied is not None:
        conn.execute("UPDATE raftmq_progress SET applied = ?", (batch.applied,))
    if batch.fanout_watermark is not None:
        conn.execute("UPDATE raftmq_progress SET fanout_watermark = ?", (batch.fanout_watermark,))
    if batch.sessions:
        conn.executemany(
            "DELETE FROM raftmq_client_session WHERE producer_id = ?",
            [(s.producer_id,) for s in batch.sessions],
        )
        rows = [
            (s.producer_id, s.last_seq, s.last_index, s.last_term, s.updated_index, s.floor, "[]")
            for s in batch.sessions
        ]
        conn.executemany(_RAW_SESSION, rows)
    conn.execute("COMMIT")


def raw_save_cost(
    conn: sqlite3.Connection, workload: RoundWorkload, case: str, saves: int
) -> tuple[float, float]:
    """CPU and wall microseconds per save by plain sqlite3 on the same schema: the floor
    (no SQLAlchemy, no thread hop)."""
    batches = [workload.batch(case) for _ in range(saves)]
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        _raw_save(conn, batch)
    return (time.process_time() - cpu) / saves * 1e6, (time.perf_counter() - wall) / saves * 1e6


async def save_cost(args: argparse.Namespace, folder: Path, bench: report.Report) -> None:
    """CPU and wall µs per save of a Raft round's batch: best of ``--rounds`` rounds of
    ``--saves`` saves per cell, the stores measured in turn within each round."""
    saves: int = args.saves
    raw_path = folder / "raw-rounds.db"
    async with contextlib.AsyncExitStack() as stack:
        urls = {"SqlStorage SQLite FULL": f"sqlite:///{folder / 'rounds.db'}"}
        if not args.no_postgres:
            urls["SqlStorage Postgres (asyncpg)"] = await stack.enter_async_context(
                fresh_postgres_database(args.postgres, prefix="raftmq_bench")
            )
        stores: dict[str, SqlStorage] = {}
        for label, url in urls.items():
            stores[label] = SqlStorage(url, cluster="bench", node_id="n1")
            await stores[label].open()
            stack.push_async_callback(stores[label].close)
        schema_only = SqlStorage(f"sqlite:///{raw_path}", cluster="bench", node_id="n1")
        await schema_only.open()  # the real schema, WAL on
        await schema_only.close()
        raw = sqlite3.connect(raw_path, isolation_level=None)
        stack.callback(raw.close)
        raw.execute("PRAGMA synchronous = FULL")
        workloads = {label: RoundWorkload(0) for label in (*stores, "raw")}
        best: dict[tuple[str, str], tuple[float, float]] = {}

        def keep(label: str, case: str, cost: tuple[float, float]) -> None:
            old = best.get((label, case), cost)
            best[label, case] = (min(old[0], cost[0]), min(old[1], cost[1]))

        for case in SAVE_CASES:
            for label, store in stores.items():
                await adapter_save_cost(store, workloads[label], case, _WARM_UP_SAVES)
            raw_save_cost(raw, workloads["raw"], case, _WARM_UP_SAVES)
        measurements = args.rounds * len(SAVE_CASES) * (len(stores) + 1)
        with bench.phase("save cost", total=measurements) as phase:
            for _ in range(args.rounds):
                for case in SAVE_CASES:
                    for label, store in stores.items():
                        cost = await adapter_save_cost(store, workloads[label], case, saves)
                        keep(label, case, cost)
                        phase.advance()
                    keep("raw", case, raw_save_cost(raw, workloads["raw"], case, saves))
                    phase.advance()
    print(f"\nµs per save, CPU / wall (best of {args.rounds} x {saves} saves; 200 B entries):")
    print(f"{'':<34}" + "".join(f"{case:>29}" for case in SAVE_CASES))
    for label in (*stores, "raw"):
        name = "raw sqlite3 FULL, same SQL (floor)" if label == "raw" else label
        cells = "".join(
            f"{best[label, case][0]:>17.0f} / {best[label, case][1]:>7.0f}" for case in SAVE_CASES
        )
        print(f"{name:<34}{cells}")
        for case in SAVE_CASES:
            cpu, wall = best[label, case]
            bench.figure(f"save {case}, {name}, CPU", cpu, "µs CPU")
            bench.figure(f"save {case}, {name}", wall, "µs")


SECTIONS = {"throughput": throughput, "save-cost": save_cost, "open": open_time}


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--open-entries", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--saves", type=int, default=1_000, help="per save-cost measurement")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run this section only")
    report.add_options(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, report.Report("storage", args) as bench:
        for name, section in SECTIONS.items():
            if args.only in (None, name):
                await section(args, Path(tmp), bench)


if __name__ == "__main__":
    asyncio.run(main())
