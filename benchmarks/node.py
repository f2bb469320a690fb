"""Committed writes/s and commit latency of a 3-node cluster on the local broker, SQLite FULL.

The leader (n1) runs in this process so that ``node.write`` is measured directly; the two
followers are ``raftmq node`` subprocesses. Leadership is handed to n1 before measuring.

    .venv/bin/python benchmarks/node.py [--writes 20000] [--in-flight 2000] [--latency 500]
        [--insecure] [--json PATH] [--progress | --no-progress]

Node traffic is signed with the cluster's random key file unless ``--insecure``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pydantic import BaseModel

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq.node.settings import DEFAULT_AMQP_URL, NodeSettings
from raftmq.runtime import build_node
from raftmq.testing.localcluster import LocalCluster


class Payload(BaseModel):
    """A write of about 100 bytes once encoded."""

    data: str


async def main(args: argparse.Namespace, bench: report.Report) -> None:
    with tempfile.TemporaryDirectory(prefix="raftmq-bench-") as tmp:
        workdir = Path(tmp)
        name = f"bench{uuid.uuid4().hex[:6]}"
        cluster = LocalCluster(
            name, ["n1", "n2", "n3"], workdir, amqp_url=args.amqp_url, insecure=args.insecure
        )
        for follower in ("n2", "n3"):
            cluster.start(follower)
        settings = NodeSettings(
            cluster=name,
            node_id="n1",
            peers=["n2", "n3"],
            amqp_url=args.amqp_url,
            data_dir=workdir,
            insecure=args.insecure,
            cluster_key_file=None if args.insecure else cluster.key_file,
        )
        node = build_node(settings, Payload)
        try:
            async with node, cluster.admin() as admin:
                with bench.phase("handing leadership to n1"):
                    await admin.transfer_leadership("n1", timeout=60)
                payload = Payload(data="x" * 80)  # ~100 B as JSON + record header
                await node.write(payload)

                latencies = []
                with bench.phase("commit latency", total=args.latency) as phase:
                    for _ in range(args.latency):
                        start = time.perf_counter()
                        await node.write(payload)
                        latencies.append((time.perf_counter() - start) * 1000)
                        phase.advance()
                latencies.sort()
                p50 = statistics.median(latencies)
                p99 = latencies[int(len(latencies) * 0.99) - 1]

                # A fixed pool of writers, each with one write in flight (a semaphore over
                # 20,000 tasks costs more than the writes themselves on Python 3.11).
                per_writer = args.writes // args.in_flight

                async def writer(phase: report.Phase) -> None:
                    for _ in range(per_writer):
                        await node.write(payload)
                        phase.advance()

                total = per_writer * args.in_flight
                with bench.phase("throughput", total=total) as phase:
                    start = time.perf_counter()
                    await asyncio.gather(*(writer(phase) for _ in range(args.in_flight)))
                    elapsed = time.perf_counter() - start
                args.writes = per_writer * args.in_flight
        finally:
            cluster.stop_all()
            await cluster.delete_queues()
    signed = "insecure (nothing signed)" if args.insecure else "signed (keyed BLAKE2b)"
    print(f"3 nodes, local RabbitMQ, SQLite synchronous=FULL, ~100 B writes, {signed}")
    print(
        f"  commit latency, 1 in flight ({args.latency} writes): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    print(
        f"  throughput, {args.in_flight} in flight ({args.writes} writes): "
        f"{args.writes / elapsed:,.0f} writes/s ({elapsed:.2f} s)"
    )
    bench.figure("commit latency p50", p50, "ms")
    bench.figure("commit latency p99", p99, "ms")
    bench.figure(f"throughput, {args.in_flight} in flight", args.writes / elapsed, "writes/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=1_000)
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--insecure", action="store_true", help="sign nothing (no cluster key)")
    report.add_options(parser)
    arguments = parser.parse_args()
    with report.Report("node", arguments) as bench:
        asyncio.run(main(arguments, bench))
