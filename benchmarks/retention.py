"""Retention benchmark (docs/core.md, "Retention"): what the nodes hold on disk and in
memory as writes go on, InstallSnapshot of a large user state, and what compaction costs
the commit throughput. Local RabbitMQ, SQLite files (synchronous=FULL), signed traffic.

    .venv/bin/python benchmarks/retention.py [--writes 100000] [--retain 20000]
        [--steps 10] [--plot PATH] [--state-mb 100] [--throughput-writes 20000]
        [--throughput-retain 2000] [--runs 3] [--compaction-rows 200000]
        [--parts size,snapshot,throughput,compaction]
        [--json PATH] [--progress | --no-progress]

Four parts (``--parts`` picks some):

- ``size``: a 3-node cluster of ``raftmq node`` processes gets ``--writes`` writes of
  ~100 B from one Producer, in ``--steps`` steps; after each step, each node's database
  (the SQLite file plus its -wal file: in WAL mode a write lands in the -wal file first)
  and resident memory (``VmRSS`` in /proc/<pid>/status). Once with ``retain_entries =
  --retain``, once without retention (a fresh cluster), printed in one table and drawn to
  ``--plot`` (two panels, size and RSS against entries written; solid: retention,
  dashed: none).
- ``snapshot``: three in-process Nodes on the real AMQP transport and SQLite, with
  snapshot/restore hooks whose state is ``--state-mb`` MB of random bytes and
  ``snapshot_entries`` 200 (``trailing_entries`` 10). n3 stops; the leader takes a
  snapshot and compacts past n3's log; n3 restarts (a new Node on its database, its user
  state empty). Figures: seconds from the restart to the installed snapshot (counter
  ``snapshots_installed``, the restore hook called with the whole state) and MB/s of user
  state. Every node runs in this process, so they share one CPU core.
- ``throughput``: benchmarks/node.py's workload (the leader n1 in this process, writes
  through ``node.write`` with ``--in-flight`` writers; n2, n3 processes) with
  ``retain_entries = --throughput-retain`` (``trailing_entries`` half of it; a warm-up of
  1.2 times it first, so that compaction runs all through the measured writes) and
  without, alternating ``--runs`` times, each on a fresh cluster. Figures: writes/s of
  each run, the medians, and their ratio (the issue asks for >= 0.9).
- ``compaction``: one store each on SQLite and on a fresh Postgres database holds
  ``--compaction-rows`` entries of 100 B and a snapshot at 90% of them; ``compact`` deletes
  those in batches of ``compact_batch_rows`` (each its own transaction) while another task
  saves batches of 10 entries. Figures: rows deleted per second, and the save latency
  (median, max) during the compaction against the same saves alone: a long lock would
  show as a save that waits for the whole compaction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq.client import Producer
from raftmq.core.config import DEFAULT_TRAILING_ENTRIES
from raftmq.core.types import Entry, HardState, Snapshot
from raftmq.node.node import Node
from raftmq.node.settings import DEFAULT_AMQP_URL, NodeSettings
from raftmq.runtime import build_node
from raftmq.storage.port import PersistBatch
from raftmq.storage.sql import SqlStorage
from raftmq.testing.localcluster import LocalCluster, wait_for_leader
from raftmq.transport.amqp import AmqpTransport
from raftmq.transport.identity import AmqpClusterIdentity

NODES = ["n1", "n2", "n3"]
MB = 1 << 20
PARTS = ("size", "snapshot", "throughput", "compaction")


class Payload(BaseModel):
    """A write of about 100 bytes once encoded (as in benchmarks/node.py)."""

    data: str


PAYLOAD = Payload(data="x" * 80)


def _name() -> str:
    return f"bench{uuid.uuid4().hex[:6]}"


def database_bytes(cluster: LocalCluster, node_id: str) -> int:
    """A node's SQLite file plus its -wal file (what it holds on disk; -shm is 32 KiB)."""
    main = cluster.node_dir(node_id) / f"raftmq-{cluster.cluster}-{node_id}.db"
    wal = main.with_name(main.name + "-wal")
    return sum(path.stat().st_size for path in (main, wal) if path.exists())


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS of /proc/<pid>/status); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- part 1: database size and RSS against entries written ------------------------------


@dataclass(frozen=True)
class Sample:
    """The nodes after ``written`` writes."""

    written: int
    size: dict[str, int]  # node -> database bytes (file + WAL)
    rss: dict[str, int]  # node -> resident bytes


def _sample(cluster: LocalCluster, written: int) -> Sample:
    return Sample(
        written,
        {n: database_bytes(cluster, n) for n in NODES},
        {n: rss_bytes(cluster.processes[n].pid) for n in NODES},
    )


async def size_run(args: argparse.Namespace, retain: int, bench: report.Report) -> list[Sample]:
    """``args.writes`` writes on a fresh cluster with ``retain_entries = retain`` (0: no
    retention); a sample before and after every step."""
    with tempfile.TemporaryDirectory(prefix="raftmq-bench-") as tmp:
        env = {"RAFTMQ_RETAIN_ENTRIES": str(retain)} if retain else {}
        if retain:  # a log holds trailing_entries at least: never more than half the bound
            env["RAFTMQ_TRAILING_ENTRIES"] = str(min(DEFAULT_TRAILING_ENTRIES, retain // 2))
        cluster = LocalCluster(_name(), NODES, Path(tmp), amqp_url=args.amqp_url, extra_env=env)
        cluster.start_all()
        try:
            async with cluster.admin() as admin:
                await wait_for_leader(admin, timeout=60)
            body = PAYLOAD.model_dump_json().encode()
            step = args.writes // args.steps
            label = f"retain {retain:,}" if retain else "no retention"
            samples = [_sample(cluster, 0)]
            async with Producer(args.amqp_url, cluster.cluster) as producer:
                with bench.phase(f"size, {label}", total=step * args.steps) as phase:
                    for k in range(1, args.steps + 1):
                        await asyncio.gather(
                            *(producer.publish(body, timeout=300) for _ in range(step))
                        )
                        phase.advance(step)
                        samples.append(_sample(cluster, k * step))
            return samples
        finally:
            cluster.stop_all()
            await cluster.delete_queues()


def _mb(value: float) -> str:
    return f"{value / MB:8.1f}"


def print_size_table(runs: dict[str, list[Sample]]) -> None:
    sizes = "".join(f"{n + ' MB':>9}" for n in NODES)
    rss = "".join(f"{n + ' RSS':>9}" for n in NODES)
    print(f"{'written':>9}  {'run':<16}{sizes}  {rss}")
    for k in range(len(next(iter(runs.values())))):
        for label, samples in runs.items():
            s = samples[k]
            print(
                f"{s.written:>9,}  {label:<16}"
                + "".join(" " + _mb(s.size[n]) for n in NODES)
                + "  "
                + "".join(" " + _mb(s.rss[n]) for n in NODES)
            )


def draw(runs: dict[str, list[Sample]], output: Path, title: str) -> None:
    """Database size and RSS against entries written, one line per node and run."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        from matplotlib import pyplot
    except ImportError:
        raise SystemExit(report.MISSING_EXTRA.format(what="benchmarks/retention.py")) from None
    figure, (size_axis, rss_axis) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    colors = dict(zip(NODES, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for number, (label, samples) in enumerate(runs.items()):
        style = "-" if number == 0 else "--"
        written = [s.written for s in samples]
        for node_id in NODES:
            for axis, values in (
                (size_axis, [s.size[node_id] / MB for s in samples]),
                (rss_axis, [s.rss[node_id] / MB for s in samples]),
            ):
                axis.plot(
                    written, values, style, color=colors[node_id], label=f"{node_id}, {label}"
                )
    for axis, what in ((size_axis, "database + WAL, MB"), (rss_axis, "node RSS, MB")):
        axis.set_xlabel("entries written")
        axis.set_title(what, fontsize=10, loc="left")
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    size_axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, format="png", dpi=100)
    pyplot.close(figure)


async def size_part(args: argparse.Namespace, bench: report.Report) -> None:
    runs = {
        f"retain {args.retain:,}": await size_run(args, args.retain, bench),
        "no retention": await size_run(args, 0, bench),
    }
    print(f"database (file + WAL) and RSS per node, MB, {args.writes:,} writes of ~100 B")
    print_size_table(runs)
    for label, samples in runs.items():
        last = samples[-1]
        half = [s for s in samples if s.written >= args.writes // 2]
        growth = max(
            max(s.size[n] for s in half) / max(1, min(s.size[n] for s in half)) for n in NODES
        )
        print(
            f"  {label}: at {last.written:,} writes, database {max(last.size.values()) / MB:.1f} "
            f"MB, RSS {max(last.rss.values()) / MB:.1f} MB (largest node); database max/min "
            f"over the last half {growth:.2f}"
        )
        bench.figure(f"{label}: database at the end", max(last.size.values()) / MB, "MB")
        bench.figure(f"{label}: RSS at the end", max(last.rss.values()) / MB, "MB")
        bench.figure(f"{label}: database max/min, last half", growth, "ratio")
    title = f"retention: {args.writes:,} writes of ~100 B, 3 nodes, SQLite; retain {args.retain:,}"
    draw(runs, args.plot, title)
    print(f"  drawn to {args.plot}")


# -- part 2: InstallSnapshot of a large user state ----------------------------------------


class _UserState:
    """A user state machine that is just bytes (what the hooks carry)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.restored_at: float | None = None  # perf_counter of the last restore

    def snapshot(self) -> bytes:
        return self.data

    def restore(self, data: bytes) -> None:
        self.data = data
        self.restored_at = time.perf_counter()


def _hooked_node(settings: NodeSettings, state: _UserState, amqp_url: str) -> Node[Payload]:
    """A node of ``settings`` with hooks on ``state`` (runtime.build_node without queue
    services, which takes no hooks)."""
    election_ms = settings.tick_interval * settings.election_ticks * 1000
    return Node(
        config=settings.raft_config(),
        storage=SqlStorage(
            settings.resolved_database_url(),
            cluster=settings.cluster,
            node_id=settings.node_id,
            durability=settings.durability,
        ),
        transport=AmqpTransport(
            amqp_url,
            settings.cluster,
            settings.node_id,
            key=settings.load_cluster_key(),
            message_ttl_ms=max(int(election_ms), 50),
            max_message_bytes=settings.max_message_bytes,
        ),
        model=Payload,
        tick_interval=settings.tick_interval,
        snapshot=state.snapshot,
        restore=state.restore,
        snapshot_entries=settings.snapshot_entries,
        identity=AmqpClusterIdentity(amqp_url, settings.cluster, settings.voters),
    )


async def _until(what: str, timeout: float, done: Callable[[], bool]) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not done():  # noqa: ASYNC110 - polling node counters, no event to wait on
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise SystemExit(f"{what}: not within {timeout} s") from None


async def _write(node: Node[Payload], count: int, in_flight: int = 50) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            await node.write(PAYLOAD)

    await asyncio.gather(*(one() for _ in range(count)))


async def snapshot_part(args: argparse.Namespace, bench: report.Report) -> None:
    snapshot_entries, trailing = 200, 10
    big = os.urandom(args.state_mb * MB)
    with tempfile.TemporaryDirectory(prefix="raftmq-bench-") as tmp:
        cluster = LocalCluster(_name(), NODES, Path(tmp), amqp_url=args.amqp_url)
        settings = {
            n: NodeSettings(
                cluster=cluster.cluster,
                node_id=n,
                peers=[p for p in NODES if p != n],
                amqp_url=args.amqp_url,
                data_dir=cluster.node_dir(n),
                cluster_key_file=cluster.key_file,
                snapshot_entries=snapshot_entries,
                trailing_entries=trailing,
                queue_services=False,
            )
            for n in NODES
        }
        for n in NODES:
            cluster.node_dir(n).mkdir(parents=True, exist_ok=True)
        states = {n: _UserState(big if n != "n3" else b"") for n in NODES}
        nodes = {n: _hooked_node(settings[n], states[n], args.amqp_url) for n in NODES}
        try:
            with bench.phase(f"snapshot: {args.state_mb} MB state, n3 down, leader compacts"):
                for node in nodes.values():
                    await node.start()
                await _until("a leader", 60, lambda: any(n.is_leader for n in nodes.values()))
                await nodes["n3"].stop()
                up = {n: node for n, node in nodes.items() if n != "n3"}
                await _until(
                    "a leader without n3", 60, lambda: any(n.is_leader for n in up.values())
                )
                leader = next(node for node in up.values() if node.is_leader)
                await _write(leader, snapshot_entries + trailing + 10)
                taken = "snapshots_taken"
                await _until(
                    "snapshots on n1 and n2",
                    600,
                    lambda: all(n.status().counters.get(taken, 0) >= 1 for n in up.values()),
                )
            with bench.phase("snapshot: n3 restarts and installs"):
                restarted = time.perf_counter()
                nodes["n3"] = _hooked_node(settings["n3"], states["n3"], args.amqp_url)
                await nodes["n3"].start()
                target = leader.applied_index
                n3 = nodes["n3"]
                await _until(
                    "the snapshot on n3",
                    600,
                    lambda: (
                        n3.status().counters.get("snapshots_installed", 0) >= 1
                        and n3.applied_index >= target
                    ),
                )
                elapsed = time.perf_counter() - restarted
        finally:
            for node in nodes.values():
                await node.stop()
            await cluster.delete_queues()
    restored = states["n3"]
    assert restored.data == big, "n3 restored another state"
    assert restored.restored_at is not None
    to_restore = restored.restored_at - restarted
    print(
        f"InstallSnapshot, {args.state_mb} MB user state (chunks of "
        f"{settings['n3'].snapshot_chunk_bytes / MB:.0f} MB, signed, SQLite FULL, 3 nodes in "
        "one process):"
    )
    print(
        f"  restart to restore hook {to_restore:.2f} s; restart to installed and applied "
        f"{elapsed:.2f} s: {args.state_mb / elapsed:,.1f} MB/s"
    )
    bench.figure(f"install snapshot, {args.state_mb} MB, restart to installed", elapsed, "s")
    bench.figure(f"install snapshot, {args.state_mb} MB", args.state_mb / elapsed, "MB/s")


# -- part 3: commit throughput with and without compaction --------------------------------


async def throughput_run(args: argparse.Namespace, retain: int) -> tuple[float, int]:
    """benchmarks/node.py's throughput phase on a fresh cluster (``retain_entries =
    retain``, 0: none); writes/s, and the snapshots n1 took while measuring."""
    # The core keeps trailing_entries (10,240 by default) whatever retention says: half
    # the bound, so that retention decides.
    trailing = max(retain // 2, 1) if retain else DEFAULT_TRAILING_ENTRIES
    with tempfile.TemporaryDirectory(prefix="raftmq-bench-") as tmp:
        workdir = Path(tmp)
        env = {"RAFTMQ_TRAILING_ENTRIES": str(trailing)}
        if retain:
            env["RAFTMQ_RETAIN_ENTRIES"] = str(retain)
        cluster = LocalCluster(_name(), NODES, workdir, amqp_url=args.amqp_url, extra_env=env)
        for follower in ("n2", "n3"):
            cluster.start(follower)
        settings = NodeSettings(
            cluster=cluster.cluster,
            node_id="n1",
            peers=["n2", "n3"],
            amqp_url=args.amqp_url,
            data_dir=workdir,
            cluster_key_file=cluster.key_file,
            retain_entries=retain,
            trailing_entries=trailing,
        )
        node = build_node(settings, Payload)
        try:
            async with node, cluster.admin() as admin:
                await admin.transfer_leadership("n1", timeout=60)
                per_writer = args.throughput_writes // args.in_flight

                async def writers(count: int) -> None:
                    async def writer() -> None:
                        for _ in range(count):
                            await node.write(PAYLOAD)

                    await asyncio.gather(*(writer() for _ in range(args.in_flight)))

                # Past the bound and its slack, so that compaction runs while measuring.
                warm_up = int(args.throughput_retain * 1.2) // args.in_flight + 1
                await writers(warm_up)
                taken = node.status().counters.get("snapshots_taken", 0)
                start = time.perf_counter()
                await writers(per_writer)
                elapsed = time.perf_counter() - start
                taken = node.status().counters.get("snapshots_taken", 0) - taken
        finally:
            cluster.stop_all()
            await cluster.delete_queues()
    return per_writer * args.in_flight / elapsed, taken


async def throughput_part(args: argparse.Namespace, bench: report.Report) -> None:
    modes: dict[str, int] = {"without": 0, "with": args.throughput_retain}
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    print(
        f"commit throughput, benchmarks/node.py's workload ({args.throughput_writes:,} writes, "
        f"{args.in_flight} in flight), retain_entries {args.throughput_retain:,} or none:"
    )
    for run in range(1, args.runs + 1):
        for mode, retain in modes.items():
            with bench.phase(f"throughput run {run}, {mode} compaction"):
                rate, snapshots = await throughput_run(args, retain)
            rates[mode].append(rate)
            extra = f" ({snapshots} snapshots + compactions on n1 meanwhile)" if retain else ""
            print(f"  run {run}, {mode:<7} compaction: {rate:8,.0f} writes/s{extra}", flush=True)
            bench.figure(f"run {run}, {mode} compaction", rate, "writes/s")
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    ratio = medians["with"] / medians["without"]
    # Each run's two modes ran back to back, under the same load of the machine: the
    # median of their ratios is steadier than the ratio of the medians.
    pairs = zip(rates["with"], rates["without"], strict=True)
    paired = statistics.median(with_ / without for with_, without in pairs)
    print(
        f"  median without {medians['without']:,.0f} writes/s, with {medians['with']:,.0f} "
        f"writes/s: ratio {ratio:.3f}; median of the runs' ratios {paired:.3f}"
    )
    for mode, value in medians.items():
        bench.figure(f"median, {mode} compaction", value, "writes/s")
    bench.figure("throughput with / without compaction", ratio, "ratio")
    bench.figure("throughput with / without compaction, median of runs", paired, "ratio")


async def _saves_meanwhile(
    store: SqlStorage, first: int, until: asyncio.Event | None, seconds: float
) -> list[float]:
    """Save batches of 10 entries of 100 B from ``first`` on, one after the other, until
    ``until`` is set (or for ``seconds``); the latency of each save, in seconds."""
    latencies: list[float] = []
    index, start = first, time.perf_counter()
    while (until is None and time.perf_counter() - start < seconds) or (
        until is not None and not until.is_set()
    ):
        batch = tuple(Entry(index=index + k, term=1, data=b"x" * 100) for k in range(10))
        began = time.perf_counter()
        await store.save(PersistBatch(entries=batch))
        latencies.append(time.perf_counter() - began)
        index += 10
    return latencies


async def compaction_run(url: str, rows: int) -> dict[str, float]:
    """``rows`` entries of 100 B, a snapshot at 90% of them, then the compaction of those
    90% in batches while another task saves: figures of both."""
    store = SqlStorage(url, cluster="bench", node_id="n1")
    await store.open()
    try:
        await store.save(PersistBatch(hard_state=HardState(term=1, voted_for="n1")))
        for lo in range(1, rows + 1, 1000):
            hi = min(rows, lo + 999)
            batch = tuple(Entry(index=i, term=1, data=b"x" * 100) for i in range(lo, hi + 1))
            await store.save(PersistBatch(entries=batch, applied=hi))
        point = rows * 9 // 10
        await store.save_snapshot(Snapshot(index=point, term=1, voters=("n1",), data=b"s"))
        alone = await _saves_meanwhile(store, rows + 1, None, 3.0)
        done = asyncio.Event()
        saver = asyncio.create_task(_saves_meanwhile(store, rows + 1 + 10 * len(alone), done, 0.0))
        began = time.perf_counter()
        await store.compact(point)
        seconds = time.perf_counter() - began
        done.set()
        during = await saver
        return {
            "rows": float(point),
            "seconds": seconds,
            "rows_per_s": point / seconds,
            "batch_rows": float(store.compact_batch_rows),
            "save_p50_alone_ms": 1000 * statistics.median(alone),
            "save_max_alone_ms": 1000 * max(alone),
            "save_p50_during_ms": 1000 * statistics.median(during) if during else 0.0,
            "save_max_during_ms": 1000 * max(during) if during else 0.0,
            "saves_during": float(len(during)),
        }
    finally:
        await store.close()


async def compaction_part(args: argparse.Namespace, bench: report.Report) -> None:
    """Compaction deletes in bounded batches, each its own short transaction: how fast,
    and what it does to the saves that go on meanwhile (SQLite and Postgres)."""
    from raftmq.testing.postgres import fresh_postgres_database

    print(
        f"compaction of 90% of {args.compaction_rows:,} entries of 100 B while another task "
        "saves batches of 10 entries:"
    )
    print(
        f"  {'database':<9} {'rows/s':>9} {'seconds':>8} {'save p50 / max alone':>22} "
        f"{'save p50 / max during':>23}"
    )
    backends: list[tuple[str, Callable[[], Any]]] = []
    with tempfile.TemporaryDirectory() as folder:

        @contextlib.asynccontextmanager
        async def sqlite_url() -> Any:
            yield f"sqlite+aiosqlite:///{folder}/compaction-{uuid.uuid4().hex[:8]}.db"

        backends.append(("sqlite", sqlite_url))
        backends.append(("postgres", lambda: fresh_postgres_database(args.database_url)))
        for name, make in backends:
            with bench.phase(f"compaction on {name}"):
                async with make() as url:
                    got = await compaction_run(url, args.compaction_rows)
            print(
                f"  {name:<9} {got['rows_per_s']:>9,.0f} {got['seconds']:>8.2f} "
                f"{got['save_p50_alone_ms']:>10.2f} / {got['save_max_alone_ms']:>6.1f} ms "
                f"{got['save_p50_during_ms']:>11.2f} / {got['save_max_during_ms']:>6.1f} ms"
            )
            for key, value in got.items():
                bench.figure(f"compaction {name}: {key}", value, key.rsplit("_", 1)[-1])


PART_RUNNERS: dict[str, Callable[[argparse.Namespace, report.Report], Awaitable[None]]] = {
    "size": size_part,
    "snapshot": snapshot_part,
    "throughput": throughput_part,
    "compaction": compaction_part,
}


async def main(args: argparse.Namespace, bench: report.Report) -> None:
    for part in args.parts:
        await PART_RUNNERS[part](args, bench)


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts are among {', '.join(PARTS)}")
    return parts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument(
        "--parts", type=_parts, default=list(PARTS), help="size,snapshot,throughput,compaction"
    )
    parser.add_argument("--writes", type=int, default=100_000, help="size: writes in all")
    parser.add_argument("--retain", type=int, default=20_000, help="size: retain_entries")
    parser.add_argument("--steps", type=int, default=10, help="size: samples")
    parser.add_argument(
        "--plot", type=Path, default=Path("benchmarks/results/retention.png"), help="size: PNG"
    )
    parser.add_argument("--state-mb", type=int, default=100, help="snapshot: user state, MB")
    parser.add_argument("--throughput-writes", type=int, default=20_000)
    parser.add_argument("--throughput-retain", type=int, default=2_000)
    parser.add_argument("--in-flight", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3, help="throughput: runs of each mode")
    parser.add_argument("--compaction-rows", type=int, default=200_000, help="compaction")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "RAFTMQ_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
        help="compaction: a Postgres server to make a database on",
    )
    report.add_options(parser)
    arguments = parser.parse_args()
    with report.Report("retention", arguments) as bench:
        asyncio.run(main(arguments, bench))
