"""End-to-end publish -> subscriber throughput and latency of raftmq (3 node processes,
SQLite FULL, Producer and Subscriber defaults), beside the plain alternative: aio-pika
publishing with confirms into a quorum queue and consuming it.

    .venv/bin/python benchmarks/pubsub.py [--messages 5000] [--rate 500] [--seconds 5]
        [--only all|raftmq|plain] [--json PATH] [--progress | --no-progress]

Both sides get the same driver: one task per message calls the client's publish and
awaits it (the raftmq Producer returns after the commit receipt, aio-pika after the
broker confirm), all at once ("burst") or started at a fixed rate ("@N/s"). Columns:

- ``raftmq``: Producer (defaults, wait_commit) -> writes quorum queue -> leader ingest ->
  Raft commit on 3 nodes (SQLite synchronous=FULL) -> committed exchange -> Subscriber
  (defaults); latency = Subscriber yields the message - publish called.
- ``quorum queue``: aio-pika ``default_exchange.publish`` with publisher confirms into a
  quorum queue, concurrent publishes (the same driver as raftmq, so confirms pipeline);
  a callback consumer (prefetch 1000) acks each message; latency = consumed - published.
- ``quorum queue seq``: the same, one publish at a time, each awaiting its confirm
  before the next starts (the simplest aio-pika loop).

The ratio lines divide raftmq's burst rate by each plain one. Issue 5's target (3x "the
plain quorum-queue path with default clients") is read against ``quorum queue seq``:
aio-pika's default usage, where ``await exchange.publish(...)`` returns after the
confirm. The concurrent column is the same client driven like raftmq, for comparison.

Each message carries its send time in a header (int microseconds: pamqp sends a Python
float as a 32-bit float, useless for a timestamp); the subscriber side records
receive - send. Throughput = messages / (last received - first sent). The plain paths run
first (before the cluster starts); the 1-minute load average before each block and the
CPU used during each run are printed, so that runs on a shared machine can be compared:
in all (the node processes and this one) and per process (leader, followers, this client
process, and the RabbitMQ server when it runs on this machine as ``beam.smp``).

This process freezes its start-up objects out of the garbage collector before measuring
(``gc.collect(); gc.freeze()``), as the README advises services that embed raftmq and
care about tail latency: a full collection walking every imported object otherwise
pauses the client for about 20 ms, on both the raftmq and the plain paths.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path

import aio_pika

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq.client import Producer, Subscriber
from raftmq.node.settings import DEFAULT_AMQP_URL
from raftmq.testing.localcluster import three_node_cluster

Send = Callable[[bytes, float], Coroutine[object, object, object]]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (Linux /proc)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _broker_pids() -> list[int]:
    """The local RabbitMQ server's pids (``beam.smp``), if it runs on this machine."""
    try:
        found = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True)
    except OSError:
        return []
    return [int(pid) for pid in found.stdout.split()]


class _CpuMeter:
    """Per-process CPU share (percent of one core) over a measured block."""

    def __init__(self, processes: dict[str, list[int]]) -> None:
        self.processes = processes  # label -> pids
        self.started = time.time()
        self.before = {label: _cpu_seconds(pids) for label, pids in processes.items()}

    def shares(self) -> dict[str, float]:
        elapsed = time.time() - self.started
        return {
            label: (_cpu_seconds(pids) - self.before[label]) / elapsed * 100
            for label, pids in self.processes.items()
        }

    def summary(self, total_of: list[str]) -> str:
        shares = self.shares()
        parts = " ".join(f"{label} {share:.0f}" for label, share in shares.items())
        return f"(cpu {sum(shares[label] for label in total_of):.0f}%: {parts})"


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def _run(
    send: Send, received: list[float], count: int, size: int, rate: float | None
) -> tuple[float, list[float]]:
    """Send ``count`` messages (all at once, or paced at ``rate``/s); wait for all of them
    on the subscriber side; return (messages/s, latencies in ms)."""
    received.clear()
    body = b"x" * size
    loop = asyncio.get_running_loop()
    started = time.time()
    tasks = []
    for k in range(count):
        if rate is not None:
            await asyncio.sleep(max(0.0, started + k / rate - time.time()))
        tasks.append(loop.create_task(send(body, time.time())))
        if rate is None and k % 500 == 499:
            await asyncio.sleep(0)  # let the first publishes leave while we create more
    await asyncio.gather(*tasks)
    async with asyncio.timeout(300):
        while len(received) < count:  # noqa: ASYNC110 - the consumer callback fills the list
            await asyncio.sleep(0.01)
    finished = time.time()
    return count / (finished - started), [r * 1000 for r in received]


def _record_latency(bench: report.Report, label: str, latencies: list[float]) -> None:
    bench.figure(f"{label} p50", _percentile(latencies, 0.5), "ms")
    bench.figure(f"{label} p99", _percentile(latencies, 0.99), "ms")


async def bench_raftmq(
    args: argparse.Namespace, sizes: list[int], bench: report.Report
) -> dict[str, str]:
    results: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as stack:
        with bench.phase("raftmq: starting a 3-node cluster"):
            cluster, leader = await stack.enter_async_context(three_node_cluster(args.amqp_url))
        received: list[float] = []
        # leader first, then the followers, this process and the broker
        processes = {"leader": [cluster.processes[leader].pid]}
        processes |= {n: [p.pid] for n, p in cluster.processes.items() if n != leader}
        processes |= {"client": [os.getpid()], "broker": _broker_pids()}
        in_total = [label for label in processes if label != "broker"]
        results["raftmq start"] = _load()
        async with (
            Producer(args.amqp_url, cluster.cluster) as producer,
            Subscriber(args.amqp_url, cluster.cluster) as subscriber,
        ):

            async def consume() -> None:
                async for message in subscriber:
                    received.append(time.time() - int(message.headers["sent"]) / 1e6)

            consumer = asyncio.create_task(consume())

            async def send(body: bytes, sent: float) -> object:
                return await producer.publish(body, headers={"sent": int(sent * 1e6)}, timeout=300)

            await _run(send, received, 100, 100, None)  # warm-up
            for size in sizes:
                meter = _CpuMeter(processes)
                with bench.phase(f"raftmq: {args.messages:,} x {size} B burst"):
                    rate, lat = await _run(send, received, args.messages, size, None)
                results[f"raftmq {size} B burst"] = f"{rate:8.0f} msg/s  {meter.summary(in_total)}"
                bench.figure(f"raftmq {size} B burst", rate, "msg/s")
                meter = _CpuMeter(processes)
                with bench.phase(f"raftmq: {size} B @{args.rate}/s for {args.seconds} s"):
                    _, lat = await _run(send, received, args.rate * args.seconds, size, args.rate)
                results[f"raftmq {size} B @{args.rate}/s"] = (
                    f"p50 {_percentile(lat, 0.5):6.1f} ms  p99 {_percentile(lat, 0.99):6.1f} ms"
                    f"  {meter.summary(in_total)}"
                )
                _record_latency(bench, f"raftmq {size} B @{args.rate}/s", lat)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    return results


async def bench_quorum_queue(
    args: argparse.Namespace, sizes: list[int], bench: report.Report, *, sequential: bool
) -> dict[str, str]:
    """What a user would do instead: publish with confirms (the default aio-pika usage)
    into a quorum queue; consume it with a callback. ``sequential``: one publish at a
    time, each awaiting its confirm; else concurrent publishes (the raftmq driver)."""
    label = "quorum queue seq" if sequential else "quorum queue"
    results: dict[str, str] = {f"{label} start": _load()}
    connection = await aio_pika.connect(args.amqp_url)
    name = f"bench-qq-{uuid.uuid4().hex[:6]}"
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        received: list[float] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(time.time() - int(str((message.headers or {})["sent"])) / 1e6)
            await message.ack()

        consumer_channel = await connection.channel()
        await consumer_channel.set_qos(prefetch_count=1000)
        consumer_queue = await consumer_channel.get_queue(name)
        consumer_tag = await consumer_queue.consume(on_message)
        lock = asyncio.Lock() if sequential else contextlib.nullcontext()

        async def send(body: bytes, sent: float) -> object:
            async with lock:
                return await channel.default_exchange.publish(
                    aio_pika.Message(
                        body,
                        headers={"sent": int(sent * 1e6)},
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=name,
                )

        await _run(send, received, 100, 100, None)
        processes = {"client": [os.getpid()], "broker": _broker_pids()}
        for size in sizes:
            meter = _CpuMeter(processes)
            with bench.phase(f"{label}: {args.messages:,} x {size} B burst"):
                rate, _ = await _run(send, received, args.messages, size, None)
            results[f"{label} {size} B burst"] = f"{rate:8.0f} msg/s  {meter.summary(['client'])}"
            bench.figure(f"{label} {size} B burst", rate, "msg/s")
            with bench.phase(f"{label}: {size} B @{args.rate}/s for {args.seconds} s"):
                _, lat = await _run(send, received, args.rate * args.seconds, size, args.rate)
            results[f"{label} {size} B @{args.rate}/s"] = (
                f"p50 {_percentile(lat, 0.5):6.1f} ms  p99 {_percentile(lat, 0.99):6.1f} ms"
            )
            _record_latency(bench, f"{label} {size} B @{args.rate}/s", lat)
        await consumer_queue.cancel(consumer_tag)  # else the delete cancels it, with a warning
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return results


async def main(args: argparse.Namespace, bench: report.Report) -> None:
    sizes = [100, 1000]
    gc.collect()  # see the module docstring: no full collection walks the imports mid-run
    gc.freeze()
    results: dict[str, str] = {}
    if args.only in ("all", "plain"):
        results.update(await bench_quorum_queue(args, sizes, bench, sequential=False))
        results.update(await bench_quorum_queue(args, sizes, bench, sequential=True))
    if args.only in ("all", "raftmq"):
        results.update(await bench_raftmq(args, sizes, bench))
    for key, value in results.items():
        print(f"{key:<32} {value}")
    if args.only != "all":
        return
    for size in sizes:  # the throughput target: raftmq / plain quorum queue
        raft = float(results[f"raftmq {size} B burst"].split()[0])
        for label in ("quorum queue", "quorum queue seq"):
            plain = float(results[f"{label} {size} B burst"].split()[0])
            print(f"{f'ratio {size} B vs {label}':<32} {raft / plain:8.2f}x")
            bench.figure(f"ratio {size} B vs {label}", raft / plain, "x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", choices=["all", "raftmq", "plain"], default="all")
    report.add_options(parser)
    arguments = parser.parse_args()
    with report.Report("pubsub", arguments) as bench:
        asyncio.run(main(arguments, bench))
