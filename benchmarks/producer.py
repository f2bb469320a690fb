"""Producer benchmark: how many writes/s one ``Producer`` (defaults) gets committed by a
local 3-node cluster (SQLite FULL), and the CPU and garbage-collection time it spends per
write in its own process.

    .venv/bin/python benchmarks/producer.py [--writes 20000] [--size 100] [--runs 3]
        [--json PATH] [--progress | --no-progress]

Each run starts ``--writes`` concurrent ``publish`` calls (one task each, as a busy
service would) and waits for every commit receipt. Figures per run: writes/s (wall clock),
CPU µs per write of this process (``time.process_time``: the Producer, the driver tasks
and asyncio), and the share of it the garbage collector took (``gc.callbacks``). No
subscriber runs, so the figures are the producing side alone. This process freezes its
start-up objects out of the collector first (``gc.freeze``), as the README advises.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq.client import Producer
from raftmq.node.settings import DEFAULT_AMQP_URL
from raftmq.testing.localcluster import three_node_cluster


class _GcClock:
    """Wall time spent inside garbage collections, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0  # total time in collections since the last reset
        self.collections = 0  # collections since the last reset
        self._started = 0.0

    def __call__(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1

    def reset(self) -> None:
        self.seconds, self.collections = 0.0, 0


async def _run(
    producer: Producer, writes: int, body: bytes, clock: _GcClock, bench: report.Report, run: int
) -> str:
    clock.reset()
    # A status line, not a bar: counting each receipt would add to the CPU measured here.
    with bench.phase(f"run {run}: {writes:,} concurrent publishes"):
        wall, cpu = time.perf_counter(), time.process_time()
        tasks = [asyncio.create_task(producer.publish(body, timeout=300)) for _ in range(writes)]
        receipts = await asyncio.gather(*tasks)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert all(receipt.index is not None for receipt in receipts)
    bench.figure(f"run {run}", writes / wall, "writes/s")
    bench.figure(f"run {run}, CPU per write", cpu / writes * 1e6, "µs CPU")
    bench.figure(f"run {run}, gc per write", clock.seconds / writes * 1e6, "µs CPU")
    return (
        f"{writes / wall:8.0f} writes/s  {cpu / writes * 1e6:6.1f} µs CPU/write"
        f"  (gc {clock.seconds / writes * 1e6:5.1f} µs/write in {clock.collections} collections)"
    )


async def main(args: argparse.Namespace, bench: report.Report) -> None:
    clock = _GcClock()
    async with contextlib.AsyncExitStack() as stack:
        with bench.phase("starting a 3-node cluster"):
            cluster, _ = await stack.enter_async_context(three_node_cluster(args.amqp_url))
            producer = await stack.enter_async_context(Producer(args.amqp_url, cluster.cluster))
        body = b"x" * args.size
        await asyncio.gather(*(producer.publish(body) for _ in range(1000)))  # warm-up
        gc.collect()
        gc.freeze()
        gc.callbacks.append(clock)
        rates = []
        for run in range(args.runs):
            line = await _run(producer, args.writes, body, clock, bench, run + 1)
            rates.append(float(line.split()[0]))
            print(f"run {run + 1}: {args.writes} x {args.size} B  {line}", flush=True)
        gc.callbacks.remove(clock)
        print(f"median {statistics.median(rates):8.0f} writes/s")
        bench.figure("median", statistics.median(rates), "writes/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    report.add_options(parser)
    arguments = parser.parse_args()
    with report.Report("producer", arguments) as bench:
        asyncio.run(main(arguments, bench))
