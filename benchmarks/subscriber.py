"""Subscriber benchmark on the local RabbitMQ: how fast one ``Subscriber`` consumes
committed messages, and the CPU it spends per message.

    .venv/bin/python -m benchmarks.subscriber [--messages 20000] [--size 100]
        [--mode backlog|live|both] [--rate R] [--runs 3] [--json PATH]
        [--progress | --no-progress]

Messages are formatted like the fan-out's (docs/protocol.md §6: ``raftmq-index``,
``raftmq-term``, ``raftmq-prev-index``, ``raftmq-producer``, ``raftmq-seq``, persistent)
and published with confirms to the committed exchange of a fresh cluster name; no node
runs. Figures: messages/s (wall clock, first to last message of the timed part) and CPU
µs per message (``time.process_time`` of this process, which only runs the Subscriber
while timing):

- ``backlog``: a named subscription's durable queue is filled first, then a Subscriber
  drains it (acks and position writes included);
- ``live``: an anonymous Subscriber is open while a child process publishes (as fast as
  confirms allow, or at ``--rate`` messages/s).

Each run first takes 1000 untimed warm-up messages. The exchange and queues are deleted
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import cast

import aio_pika
import aiormq
from pamqp import encode, frame
from pamqp.commands import Basic

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from raftmq._amqp import topology
from raftmq._amqp.wire import publish_confirmed
from raftmq.client import Subscriber
from raftmq.core.types import Entry
from raftmq.node.settings import DEFAULT_AMQP_URL
from raftmq.protocol import names
from raftmq.protocol.record import Record
from raftmq.services.fanout import committed_frames, committed_headers

WARMUP = 1000  # untimed messages consumed before each timed run
_BATCH = 500  # messages per publish (one socket write, one confirm wait)
_IN_FLIGHT = 8  # publish batches awaiting their confirms, at most
_ROOT = Path(__file__).resolve().parents[1]  # the child publisher runs `-m` from here


async def publish(
    amqp_url: str, cluster: str, first: int, count: int, size: int, rate: float
) -> None:
    """Publish indexes ``first .. first + count - 1`` (no gaps) to ``cluster``'s committed
    exchange; ``rate`` > 0 paces them (messages/s), else as fast as confirms allow."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare_committed(channel, cluster)
        underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        method = Basic.Publish(exchange=names.committed_exchange(cluster))
        publish_frame = frame.marshal(method, underlay.number)
        body = b"x" * size
        per_batch = _BATCH if rate <= 0 else max(1, int(rate / 100))
        in_flight: deque[asyncio.Future[None]] = deque()
        started = time.monotonic()
        for start in range(first, first + count, per_batch):
            batch = []
            for index in range(start, min(start + per_batch, first + count)):
                record = Record(body, producer_id="bench-producer", seq=index)
                headers = committed_headers(Entry(index=index, term=1), record, index - 1)
                batch.append(
                    committed_frames(
                        underlay.number,
                        publish_frame,
                        underlay.max_content_size,
                        record,
                        encode.field_table(dict(headers)),
                    )
                )
            in_flight.append(await publish_confirmed(underlay, batch))
            while len(in_flight) > _IN_FLIGHT:
                await in_flight.popleft()
            if rate > 0:
                due = started + (start + per_batch - first) / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        for confirms in in_flight:
            await confirms
    finally:
        await connection.close()


async def _consume(subscriber: Subscriber, warmup: int, count: int) -> tuple[float, float]:
    """Take ``warmup`` messages, then time ``count`` more: (messages/s, CPU µs/message)."""
    taken = 0
    async for _ in subscriber:
        taken += 1
        if taken == warmup:
            break
    clock, cpu = time.perf_counter(), time.process_time()
    taken = 0
    last = subscriber.last_index
    async for message in subscriber:
        assert last is None or message.index == last + 1, (last, message.index)
        last = message.index
        taken += 1
        if taken == count:
            break
    elapsed, used = time.perf_counter() - clock, time.process_time() - cpu
    return count / elapsed, used / count * 1e6


async def bench_backlog(args: argparse.Namespace, cluster: str) -> tuple[float, float]:
    """Drain a named subscription's queue filled beforehand."""
    name = "bench"
    try:
        async with Subscriber(args.amqp_url, cluster, name=name):
            pass  # declares and binds the durable queue
        await publish(args.amqp_url, cluster, 1, WARMUP + args.messages, args.size, 0)
        async with Subscriber(args.amqp_url, cluster, name=name) as subscriber:
            return await _consume(subscriber, WARMUP, args.messages)
    finally:
        await Subscriber.delete_subscription(args.amqp_url, cluster, name)


async def bench_live(args: argparse.Namespace, cluster: str) -> tuple[float, float]:
    """Consume while a child process publishes."""
    async with Subscriber(args.amqp_url, cluster) as subscriber:
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.subscriber",
            "--publish-only",
            cluster,
            "--amqp-url",
            args.amqp_url,
            "--messages",
            str(WARMUP + args.messages),
            "--size",
            str(args.size),
            "--rate",
            str(args.rate),
            cwd=_ROOT,
        )
        try:
            return await _consume(subscriber, WARMUP, args.messages)
        finally:
            await publisher.wait()


async def _cleanup(amqp_url: str, cluster: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        # Everything the Subscriber declares when it is missing (replay and positions
        # exchanges too), not only what this benchmark declared itself.
        await topology.delete_all(await connection.channel(), cluster)
    finally:
        await connection.close()


async def main(args: argparse.Namespace, bench: report.Report) -> None:
    modes = ["backlog", "live"] if args.mode == "both" else [args.mode]
    pace = f"@{args.rate:g}/s" if args.rate > 0 else "max rate"
    print(f"load {os.getloadavg()[0]:.2f}; {args.messages} messages of {args.size} B per run")
    for mode in modes:
        figures: list[tuple[float, float]] = []
        for run_no in range(args.runs):
            cluster = f"bench{uuid.uuid4().hex[:8]}"
            label = mode if mode == "backlog" else f"live ({pace})"
            # A status line, not a bar: counting each message would add to the CPU measured.
            with bench.phase(f"{label}, run {run_no + 1}/{args.runs}: {args.messages:,} messages"):
                try:
                    run = bench_backlog if mode == "backlog" else bench_live
                    figures.append(await run(args, cluster))
                finally:
                    await _cleanup(args.amqp_url, cluster)
            rate, cpu = figures[-1]
            print(f"{label:<18} {rate:8.0f} msg/s  {cpu:6.1f} µs CPU/msg")
            bench.figure(f"{label} run {run_no + 1}", rate, "msg/s")
            bench.figure(f"{label} run {run_no + 1}, CPU per message", cpu, "µs CPU")
        rates, cpus = zip(*figures, strict=True)
        print(
            f"{mode + ' median':<18} {statistics.median(rates):8.0f} msg/s"
            f"  {statistics.median(cpus):6.1f} µs CPU/msg"
        )
        bench.figure(f"{label} median", statistics.median(rates), "msg/s")
        bench.figure(f"{label} median, CPU per message", statistics.median(cpus), "µs CPU")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--mode", choices=["backlog", "live", "both"], default="both")
    parser.add_argument("--rate", type=float, default=0.0, help="live publish rate, 0 = max")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--publish-only", metavar="CLUSTER", help=argparse.SUPPRESS)
    report.add_options(parser)
    arguments = parser.parse_args()
    if arguments.publish_only:  # the child process of a live run: no report of its own
        asyncio.run(
            publish(
                arguments.amqp_url,
                arguments.publish_only,
                1,
                arguments.messages,
                arguments.size,
                arguments.rate,
            )
        )
    else:
        with report.Report("subscriber", arguments) as bench:
            asyncio.run(main(arguments, bench))
