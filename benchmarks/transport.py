"""Transport benchmark on the local RabbitMQ: one-way throughput and round-trip latency.

    .venv/bin/python benchmarks/transport.py [--url URL] [--messages N] [--round-trips N]
        [--insecure] [--json PATH] [--progress | --no-progress]

Node traffic is signed with a random cluster key unless ``--insecure`` (nothing signed or
checked): run both to see what authentication costs.

Prints: one-way Raft messages/s between two AmqpTransports (AppendEntries with one
100-byte entry, sent in batches as a node does), the Raft request/reply round trip
(RequestVote -> RequestVoteReply through both inboxes) p50/p99, and the client-facing
RpcClient round trip p50/p99. Deletes its queues afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import aio_pika

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq.core.messages import (
    AppendEntries,
    Message,
    RequestVote,
    RequestVoteReply,
)
from raftmq.core.types import Entry
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.bootstrap import new_cluster_id
from raftmq.transport.amqp import AmqpTransport
from raftmq.transport.rpc import RpcClient

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


class Arrivals:
    """Counts one-way arrivals and signals when a target count is reached."""

    def __init__(self) -> None:
        self.count = 0  # messages arrived since reset()
        self.target = 0  # done is set when count reaches this
        self.done = asyncio.Event()

    def reset(self, target: int) -> None:
        """Start counting towards ``target``."""
        self.count, self.target = 0, target
        self.done.clear()

    def arrived(self) -> None:
        """One more message arrived."""
        self.count += 1
        if self.count >= self.target:
            self.done.set()


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def one_way(a: AmqpTransport, received: Arrivals, count: int, batch: int) -> float:
    """Messages/s from a to b: time from the first send to the last arrival."""
    entry = Entry(index=1, term=1, data=b"x" * 100)
    messages = [
        AppendEntries(
            term=1,
            sender="a",
            recipient="b",
            prev_log_index=0,
            prev_log_term=0,
            entries=(entry,),
            leader_commit=i,
        )
        for i in range(count)
    ]
    received.reset(count)
    started = time.perf_counter()
    for i in range(0, count, batch):
        a.send(messages[i : i + batch])
        await asyncio.sleep(0)  # a node yields between Ready rounds
    try:
        await asyncio.wait_for(received.done.wait(), 60)
    except TimeoutError:
        print(f"  warning: only {received.count}/{count} arrived")
    elapsed = time.perf_counter() - started
    return received.count / elapsed


async def raft_round_trips(
    a: AmqpTransport, replies: asyncio.Queue[float], n: int, phase: report.Phase | None = None
) -> list[float]:
    """Sequential RequestVote -> RequestVoteReply round trips, in milliseconds."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        a.send([RequestVote(term=1, sender="a", recipient="b", last_log_index=0, last_log_term=0)])
        arrived = await asyncio.wait_for(replies.get(), 5)
        samples.append((arrived - started) * 1000)
        if phase is not None:
            phase.advance()
    return samples


async def rpc_round_trips(
    client: RpcClient, n: int, phase: report.Phase | None = None
) -> list[float]:
    """Sequential client-facing status requests, in milliseconds."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await client.request("b", "status")
        samples.append((time.perf_counter() - started) * 1000)
        if phase is not None:
            phase.advance()
    return samples


async def main(
    url: str, count: int, round_trips: int, batch: int, insecure: bool, bench: report.Report
) -> None:
    """Run the three measurements and print them."""
    cluster = f"bench{uuid.uuid4().hex[:8]}"
    key = None if insecure else ClusterKey(os.urandom(32))
    cluster_id = new_cluster_id()  # no bootstrap record: the transports are told the id
    print("insecure: nothing signed" if insecure else "signed: keyed BLAKE2b on every message")
    received = Arrivals()
    replies: asyncio.Queue[float] = asyncio.Queue()
    a, b = (
        AmqpTransport(
            url, cluster, node, key=key, cluster_id=cluster_id, message_ttl_ms=10_000,
            inbox_max_length=10**6,
            outbox_limit=10**6,
        )
        for node in ("a", "b")
    )  # fmt: skip

    def on_a(message: Message) -> None:
        if isinstance(message, RequestVoteReply):
            replies.put_nowait(time.perf_counter())

    def on_b(message: Message) -> None:
        if isinstance(message, RequestVote):
            b.send([RequestVoteReply(term=1, sender="b", recipient="a", granted=True)])
        else:
            received.arrived()

    async def status(kind: str, body: bytes) -> bytes:
        return b'{"role": "follower"}'

    await a.start(on_a)
    await b.start(on_b, status)
    client = RpcClient(url, cluster, key=key, cluster_id=cluster_id)
    await client.start()
    try:
        with bench.phase(f"one-way: {count:,} AppendEntries"):
            await one_way(a, received, 2000, batch)  # warm-up
            rate = await one_way(a, received, count, batch)
        print(f"one-way: {rate:,.0f} msgs/s ({count} AppendEntries of 100 B, batches of {batch})")
        bench.figure("one-way AppendEntries", rate, "msg/s")
        await raft_round_trips(a, replies, 100)  # warm-up
        with bench.phase("raft round trips", total=round_trips) as phase:
            raft = await raft_round_trips(a, replies, round_trips, phase)
        print(
            f"raft request/reply round trip: p50 {statistics.median(raft):.2f} ms, "
            f"p99 {percentile(raft, 0.99):.2f} ms ({round_trips} sequential)"
        )
        bench.figure("raft round trip p50", statistics.median(raft), "ms")
        bench.figure("raft round trip p99", percentile(raft, 0.99), "ms")
        with bench.phase("client rpc round trips", total=round_trips) as phase:
            rpc = await rpc_round_trips(client, round_trips, phase)
        print(
            f"client rpc round trip: p50 {statistics.median(rpc):.2f} ms, "
            f"p99 {percentile(rpc, 0.99):.2f} ms ({round_trips} sequential)"
        )
        bench.figure("client rpc round trip p50", statistics.median(rpc), "ms")
        bench.figure("client rpc round trip p99", percentile(rpc, 0.99), "ms")
        print(f"stats a: {a.stats.snapshot()}")
        print(f"stats b: {b.stats.snapshot()}")
    finally:
        await client.close()
        await a.stop()
        await b.stop()
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            for transport in (a, b):
                await channel.queue_delete(transport.queue)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--round-trips", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--insecure", action="store_true", help="sign nothing (no cluster key)")
    report.add_options(parser)
    args = parser.parse_args()
    with report.Report("transport", args) as bench:
        asyncio.run(
            main(args.url, args.messages, args.round_trips, args.batch, args.insecure, bench)
        )
