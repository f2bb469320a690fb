"""Membership benchmark (issue MEMBERS): what a rolling restart costs the writers, with a
leader that hands over on SIGTERM (docs/core.md, "Graceful handover") against SIGKILL.

    .venv/bin/python benchmarks/membership.py [--runs 3] [--writers 4] [--between 200]
        [--learner-entries 100000] [--parts restart,learner] [--insecure] [--json PATH]
        [--progress | --no-progress]

Each run: a fresh 3-node cluster of ``raftmq node`` processes (local RabbitMQ, SQLite
synchronous=FULL, default ticks: election timeout 0.5-1.0 s), a Producer with
``--writers`` writes in flight all the time (~10 B each), and a rolling restart of n1, n2,
n3 in turn (the signal, the exit, a new process, until it applied the leader's commit
index), ``--between`` writes committing between two restarts. Figures per signal: the
longest time without a commit receipt during the whole restart (the producer's view of
unavailability; the leader's restart is where it happens), and the elections started by
timeout during it (the node counters ``elections_timeout``, summed per process lifetime).
Runs alternate SIGTERM and SIGKILL; the table shows each run and the medians.

The learner part (``--learner-entries``, default 100,000): a 3-node cluster takes that
many writes (batches of 1,000 concurrent publishes), then a fourth ``raftmq node --join``
starts and is added as a learner (``AdminClient.change_membership``); the figures are the
time until it applied the leader's commit index (catch-up, and entries/s) and the time
the promotion to voter then took to commit. ``--parts restart,learner`` chooses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq.client.admin import AdminClient
from raftmq.errors import TransportError
from raftmq.node.settings import DEFAULT_AMQP_URL
from raftmq.testing.localcluster import LocalCluster, wait_for_leader
from raftmq.testing.workload import ContinuousWrites

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


async def _timeouts(admin: AdminClient, node_id: str) -> int:
    return (await admin.status(node_id, timeout=5)).counters["elections_timeout"]


async def one_run(args: argparse.Namespace, sig: int) -> tuple[float, int, int]:
    """A rolling restart with ``sig`` under load: (longest gap in s, elections started by
    timeout, writes committed during the restart)."""
    with tempfile.TemporaryDirectory(prefix="raftmq-bench-") as tmp:
        name = f"bench{uuid.uuid4().hex[:6]}"
        cluster = LocalCluster(
            name, ["n1", "n2", "n3"], Path(tmp), amqp_url=args.amqp_url, insecure=args.insecure
        )
        cluster.start_all()
        try:
            async with cluster.admin() as admin:
                await wait_for_leader(admin, timeout=60)
                async with ContinuousWrites(args.amqp_url, name, writers=args.writers) as load:
                    await load.wait_for(args.between)
                    base = {n: await _timeouts(admin, n) for n in cluster.node_ids}
                    timeouts = 0
                    started, first = time.monotonic(), len(load.committed)
                    for node_id in cluster.node_ids:
                        timeouts += await _timeouts(admin, node_id) - base[node_id]
                        await cluster.restart(node_id, admin, sig=sig, timeout=120)
                        await load.wait_for(len(load.committed) + args.between, timeout=120)
                    ended = time.monotonic()
                    for node_id in cluster.node_ids:
                        timeouts += await _timeouts(admin, node_id)
                    gap = load.longest_gap(started, ended)
                    committed = len(load.committed) - first
                if load.failures:
                    raise RuntimeError(f"writes failed: {load.failures[:3]}")
        finally:
            cluster.stop_all()
            await cluster.delete_queues()
    return gap, timeouts, committed


async def learner_run(args: argparse.Namespace) -> tuple[float, float, int, int]:
    """Fill a 3-node cluster, add a fourth node as a learner, promote it: (catch-up s,
    promotion s, entries it caught up on, snapshots it installed)."""
    from raftmq.client.producer import Producer

    seed = ["n1", "n2", "n3"]
    node_env = {n: {"RAFTMQ_PEERS": ",".join(p for p in seed if p != n)} for n in seed}
    node_env["n4"] = {"RAFTMQ_PEERS": ",".join(seed), "RAFTMQ_JOIN": "true"}
    with tempfile.TemporaryDirectory(prefix="raftmq-bench-") as tmp:
        name = f"bench{uuid.uuid4().hex[:6]}"
        cluster = LocalCluster(
            name,
            [*seed, "n4"],
            Path(tmp),
            amqp_url=args.amqp_url,
            insecure=args.insecure,
            node_env=node_env,
        )
        for node_id in seed:
            cluster.start(node_id)
        try:
            async with cluster.admin() as admin:
                await wait_for_leader(admin, timeout=60)
                async with Producer(args.amqp_url, name) as producer:
                    for lo in range(0, args.learner_entries, 1000):
                        hi = min(args.learner_entries, lo + 1000)
                        await asyncio.gather(
                            *(producer.publish(b"w%d" % k, timeout=120) for k in range(lo, hi))
                        )
                cluster.start("n4")
                leader = await wait_for_leader(admin, timeout=60)
                target = leader.commit
                started = time.monotonic()
                await admin.change_membership("add_learner", "n4", timeout=120)
                applied = 0
                while applied < target:  # a node busy catching up may answer late
                    with contextlib.suppress(TransportError):
                        applied = (await admin.status("n4", timeout=5)).applied
                    await asyncio.sleep(0.05)
                caught_up = time.monotonic()
                await admin.change_membership("add_voter", "n4", timeout=120)
                promoted = time.monotonic()
                installed = (await admin.status("n4", timeout=5)).counters.get(
                    "snapshots_installed", 0
                )
        finally:
            cluster.stop_all()
            await cluster.delete_queues()
    return caught_up - started, promoted - caught_up, target, installed


async def main(args: argparse.Namespace, bench: report.Report) -> None:
    parts = set(args.parts.split(","))
    if "restart" in parts:
        await restarts(args, bench)
    if "learner" in parts:
        with bench.phase("learner catch-up", total=1) as phase:
            catch_up, promotion, entries, installed = await learner_run(args)
            phase.advance()
        rate = entries / catch_up if catch_up > 0 else float("inf")
        print(
            f"  learner catching up on {entries:,} entries: {catch_up:.1f} s "
            f"({rate:,.0f} entries/s, {installed} snapshots installed); "
            f"promotion committed in {promotion * 1000:.0f} ms"
        )
        bench.figure(f"learner catch-up, {entries:,} entries", catch_up, "s")
        bench.figure("learner promotion", promotion * 1000, "ms")


async def restarts(args: argparse.Namespace, bench: report.Report) -> None:
    results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in SIGNALS}
    with bench.phase("rolling restarts", total=args.runs * len(SIGNALS)) as phase:
        for run in range(args.runs):
            for name, sig in SIGNALS.items():
                phase.describe(f"run {run + 1}: {name}")
                results[name].append(await one_run(args, sig))
                phase.advance()
    signed = "insecure (nothing signed)" if args.insecure else "signed"
    print(
        f"3 nodes, local RabbitMQ, SQLite synchronous=FULL, {signed}; rolling restart of "
        f"n1, n2, n3 with {args.writers} writes in flight"
    )
    print(f"  {'signal':<8} {'run':>3} {'longest gap':>12} {'timeouts':>9} {'writes':>7}")
    for name, runs in results.items():
        for run, (gap, timeouts, committed) in enumerate(runs, 1):
            print(f"  {name:<8} {run:>3} {gap * 1000:>9.0f} ms {timeouts:>9} {committed:>7}")
    for name, runs in results.items():
        median = statistics.median(gap for gap, _, _ in runs) * 1000
        worst = max(gap for gap, _, _ in runs) * 1000
        print(f"  {name}: longest gap, median {median:.0f} ms, worst {worst:.0f} ms")
        bench.figure(f"rolling restart, {name}, longest gap (median)", median, "ms")
        bench.figure(f"rolling restart, {name}, longest gap (worst)", worst, "ms")
        bench.figure(
            f"rolling restart, {name}, elections by timeout",
            float(sum(t for _, t, _ in runs)),
            "elections",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--between", type=int, default=200)
    parser.add_argument("--insecure", action="store_true", help="sign nothing (no cluster key)")
    parser.add_argument("--learner-entries", type=int, default=100_000)
    parser.add_argument("--parts", default="restart,learner", help="restart,learner")
    report.add_options(parser)
    arguments = parser.parse_args()
    with report.Report("membership", arguments) as bench:
        asyncio.run(main(arguments, bench))
