"""Core throughput: entries committed per second through a 3-node simulation.

No I/O at all: three :class:`~raftmq.core.RaftCore` nodes on the in-memory
:class:`~raftmq.testing.Simulation` network (reliable, no delay, checkers off), the
leader proposing 100-byte entries in batches, each batch replicated, committed and
applied on all three nodes. The figure is what one CPU core can push through the
Raft logic (three cores' worth of work on one thread). Target: >= 100,000 entries/s.

Each size is measured twice: with Python's cyclic garbage collector on (the default),
and with it off during the run. The simulation keeps every node's whole log in memory
as its "storage" (a real node keeps it in SQLite), and the collector's full passes over
that ever-growing heap cost more the longer the run; the "gc off" row shows the core's
own speed without that artefact of the simulated storage.

Usage::

    .venv/bin/python benchmarks/core_throughput.py [--entries N] [--batch B ...] [--profile]
        [--json PATH] [--progress | --no-progress]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq.testing import Simulation

NODES = ["n1", "n2", "n3"]
ENTRY_BYTES = 100
TARGET = 100_000  # entries/s


@dataclass(frozen=True)
class Result:
    """One measured run."""

    batch: int  # entries per propose_batch call
    entries: int  # entries committed and applied on every node
    seconds: float  # wall time from the first proposal to the last apply

    @property
    def rate(self) -> float:
        """Entries per second."""
        return self.entries / self.seconds


def run(entries: int, batch: int, *, collect: bool = True) -> Result:
    """Commit ``entries`` entries of 100 bytes in batches of ``batch`` on a 3-node cluster
    (``collect=False``: the cyclic garbage collector is off while measuring)."""
    sim = Simulation(NODES, seed=1, check=False)
    assert sim.run_until(lambda: sim.leader() is not None, 500), "no leader"
    leader = sim.leader()
    assert leader is not None
    base = sim.applied_index(leader)
    payloads = [
        i.to_bytes(8, "big") * (ENTRY_BYTES // 8) + b"\0" * (ENTRY_BYTES % 8) for i in range(batch)
    ]
    target = base + entries
    gc.collect()
    if not collect:
        gc.disable()
    start = time.perf_counter()
    proposed = 0
    while proposed < entries:
        items = payloads[: min(batch, entries - proposed)]
        if sim.propose_batch(leader, items) is None:
            raise RuntimeError("leader lost leadership during the benchmark")
        proposed += len(items)
        sim.settle()
    # followers learn the final commit index with the next heartbeat
    while not all(sim.applied_index(n) >= target for n in NODES):
        sim.step()
    seconds = time.perf_counter() - start
    gc.enable()
    return Result(batch, entries, seconds)


def main() -> None:
    """Parse arguments, run each batch size, print figures (and a profile if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=200_000, help="entries per run")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 256], help="batch sizes")
    parser.add_argument("--profile", action="store_true", help="print the top cProfile entries")
    report.add_options(parser)
    args = parser.parse_args()
    print(f"3 nodes, {ENTRY_BYTES}-byte entries, in-memory simulation, no I/O")
    print(f"{'batch':>6} {'gc':>4} {'entries':>9} {'seconds':>8} {'entries/s':>11}")
    with (
        report.Report("core_throughput", args) as bench,
        bench.phase("runs", total=2 * len(args.batch)) as runs,
    ):
        for batch in args.batch:
            # small batches are slow by nature: cap their run length to keep it quick
            count = args.entries if batch >= 16 else min(args.entries, 20_000)
            for collect in (True, False):
                gc_state = "on" if collect else "off"
                runs.describe(f"batch {batch}, gc {gc_state}: {count:,} entries")
                if args.profile:
                    profiler = cProfile.Profile()
                    result = profiler.runcall(run, count, batch, collect=collect)
                else:
                    result = run(count, batch, collect=collect)
                runs.advance()
                verdict = "ok" if result.rate >= TARGET else f"below target {TARGET:,}"
                print(
                    f"{batch:>6} {gc_state:>4} {result.entries:>9,} "
                    f"{result.seconds:>8.2f} {result.rate:>11,.0f}  {verdict}"
                )
                bench.figure(f"batch {batch}, gc {gc_state}", result.rate, "entries/s")
                if args.profile:
                    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
