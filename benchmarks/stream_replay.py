"""Replay from the nodes or from a RabbitMQ stream? Catching up on a cluster's committed
writes through node-served replay (docs/protocol.md §7), beside reading a stream queue
bound to the committed exchange over AMQP 0-9-1, on the local RabbitMQ.

    .venv/bin/python benchmarks/stream_replay.py [--writes 20000] [--sizes 100,1000]
        [--runs 3] [--kill-writes 10000] [--no-permissions] [--json PATH]
        [--progress | --no-progress]

Per body size, a fresh 3-node cluster (SQLite FULL, ``three_node_cluster``) gets two
streams bound to ``raftmq.C.committed`` *before* anything is written (``x-queue-type =
stream``): ``raftmq.C.log`` (retention 1 GB / 7 days) and ``raftmq.C.log-small``
(``x-max-length-bytes`` 1 MB in 256 KB segments, to see retention act). ``--writes``
writes are committed with one Producer; then, alternating ``--runs`` times:

- ``nodes``: a Subscriber with ``start="earliest"`` on a fresh anonymous subscription
  reads until the last committed index (node-served replay, its default batch of 1000);
- ``stream``: a raw AMQP consumer (prefetch 1000, ``x-stream-offset = first``, multiple
  acks every 250) reads the stream until the last index, parsing every delivery as the
  Subscriber does (``parse_delivered``) and dropping indexes already seen.

Both include connecting. Figures: messages/s and seconds to the last index; CPU of the
three node processes, of the broker (``beam.smp``) and of this process, per message
(``/proc``, as benchmarks/pubsub.py reads it). Storage: the stream's ``memory`` and
``messages`` from ``rabbitmqctl list_queues``, its segment files on disk, and the nodes'
SQLite files.

Semantics, measured on the first cluster: ``--kill-writes`` more writes with the leader
SIGKILLed mid-way, then the stream is read whole: copies of one raft index (fan-out
re-publishing after the leader change), offsets against indexes, and where the small
stream starts after its retention. Unless ``--no-permissions``, a vhost and the three
accounts of docs/protocol.md §10 are made for a throw-away cluster name (as
tests/test_permissions.py does, all deleted afterwards) and each account tries to
publish into, bind to and consume streams named ``raftmq.C.log`` and ``raftmq.C.sub.log``.

Everything is deleted afterwards: the streams, the cluster's objects
(``topology.delete_all``), the nodes stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit

import aio_pika
import aiormq
import aiormq.abc

if __package__ in (None, ""):  # run as a file: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from benchmarks.pubsub import _broker_pids, _cpu_seconds
from raftmq._amqp import topology
from raftmq._amqp.delivery import delivery_tag
from raftmq.client import Producer, Subscriber
from raftmq.client.committed import parse_delivered
from raftmq.node.settings import DEFAULT_AMQP_URL
from raftmq.protocol import names
from raftmq.protocol.permissions import layout
from raftmq.testing.localcluster import LocalCluster, three_node_cluster, wait_for_leader

STREAM_DIR = Path("/var/lib/rabbitmq/mnesia/rabbit@localhost/stream")  # the local broker's
PREFETCH = 1000  # stream consumer credit (the Subscriber's default prefetch too)
ACK_EVERY = 250  # the stream reader acks this many deliveries at once
SMALL_BYTES = 1 << 20  # x-max-length-bytes of the small stream
SMALL_SEGMENT = 256 << 10  # its segment size (retention drops whole segments)
_SETTLE = 2.0  # seconds between declaring a stream and the first publish into it (3.10)


class Lines(list[str]):
    """The table's lines, each printed as it is added (a long run shows them as it goes)."""

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)

    def extend(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.append(line)


def stream_name(cluster: str, suffix: str = "log") -> str:
    return f"raftmq.{cluster}.{suffix}"


def stream_arguments(max_bytes: int, max_age: str, segment: int | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": "stream",
        "x-max-length-bytes": max_bytes,
        "x-max-age": max_age,
    }
    if segment is not None:
        arguments["x-stream-max-segment-size-bytes"] = segment
    return arguments


async def declare_streams(amqp_url: str, cluster: str) -> None:
    """The full and the small stream, bound to the committed exchange; returns once a
    publish into them is safe (RabbitMQ 3.10 has closed a channel publishing at once)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await topology.declare_committed(channel, cluster)
        for suffix, arguments in (
            ("log", stream_arguments(1 << 30, "7D")),
            ("log-small", stream_arguments(SMALL_BYTES, "7D", SMALL_SEGMENT)),
        ):
            queue = await channel.declare_queue(
                stream_name(cluster, suffix), durable=True, arguments=arguments
            )
            await queue.bind(exchange)
    finally:
        await connection.close()
    await asyncio.sleep(_SETTLE)


async def delete_streams(amqp_url: str, cluster: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for suffix in ("log", "log-small"):
            await channel.queue_delete(stream_name(cluster, suffix))
    finally:
        await connection.close()


# --- reading -----------------------------------------------------------------------


@dataclass
class StreamRead:
    """What one read of a stream saw."""

    deliveries: int = 0  # messages delivered (duplicates included)
    distinct: int = 0  # distinct raft indexes
    first: tuple[int, int] | None = None  # (stream offset, raft index) of the first
    last: tuple[int, int] | None = None  # ... and of the last delivery
    copies: Counter[int] = field(default_factory=Counter)  # index -> deliveries (if kept)
    offset_is_index: int = 0  # deliveries whose offset + 1 equals their raft index


async def read_stream(
    amqp_url: str,
    queue: str,
    until: int | None,
    *,
    keep_copies: bool = False,
    idle: float = 3.0,
) -> StreamRead:
    """Read ``queue`` from offset "first" until raft index ``until`` (None: until nothing
    came for ``idle`` seconds), as a subscriber would: parse, drop indexes seen."""
    seen = StreamRead()
    last_index = 0
    done = asyncio.Event()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        raw = cast(aiormq.Channel, await channel.get_underlay_channel())
        unacked = 0
        last_at = time.monotonic()

        async def on_message(delivered: aiormq.abc.DeliveredMessage) -> None:
            nonlocal last_index, unacked, last_at
            message, _ = parse_delivered(delivered)
            headers = delivered.header.properties.headers or {}
            offset = headers.get("x-stream-offset")
            offset = offset if isinstance(offset, int) else -1
            seen.deliveries += 1
            if seen.first is None:
                seen.first = (offset, message.index)
            seen.last = (offset, message.index)
            if offset + 1 == message.index:
                seen.offset_is_index += 1
            if keep_copies:
                seen.copies[message.index] += 1
            if message.index > last_index:  # else a duplicate: dropped
                last_index = message.index
                seen.distinct += 1
            unacked += 1
            last_at = time.monotonic()
            if unacked >= ACK_EVERY:
                unacked = 0
                await raw.basic_ack(delivery_tag(delivered), multiple=True)
            if until is not None and last_index >= until:
                done.set()

        await raw.basic_consume(
            queue, on_message, no_ack=False, arguments={"x-stream-offset": "first"}
        )
        if until is not None:
            await asyncio.wait_for(done.wait(), timeout=600)
        else:
            while time.monotonic() - last_at < idle:  # noqa: ASYNC110 - nothing to wait on
                await asyncio.sleep(0.2)
    finally:
        await connection.close()
    return seen


async def read_replay(amqp_url: str, cluster: str, until: int) -> int:
    """Catch up from index 1 through node-served replay until index ``until``: the
    messages yielded."""
    taken = 0
    async with Subscriber(amqp_url, cluster, start="earliest") as subscriber:
        async for message in subscriber:
            taken += 1
            if message.index >= until:
                break
    return taken


# --- costs -------------------------------------------------------------------------


def queue_stats(name: str) -> dict[str, int]:
    """``messages`` and ``memory`` of queue ``name`` from rabbitmqctl ({} when unknown)."""
    try:
        done = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "name", "messages", "memory", "--formatter",
             "json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        rows = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    for row in rows:
        if row.get("name") == name:
            return {k: int(row[k]) for k in ("messages", "memory") if isinstance(row.get(k), int)}
    return {}


def stream_disk_bytes(name: str) -> int | None:
    """Bytes of the stream's segment and index files (None: not on this machine). The
    broker keeps them in ``__<name, non-alphanumerics as _>_<timestamp>``."""
    if not STREAM_DIR.is_dir():
        return None
    folder_name = re.compile(rf"__{re.escape(re.sub(r'[^A-Za-z0-9]', '_', name))}_\d+")
    total, found = 0, False
    for folder in STREAM_DIR.iterdir():
        if folder_name.fullmatch(folder.name):
            found = True
            total += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return total if found else None


def database_bytes(cluster: LocalCluster) -> dict[str, int]:
    """Each node's SQLite files (database, WAL, shared memory)."""
    return {
        node: sum(f.stat().st_size for f in cluster.node_dir(node).glob("*.db*"))
        for node in cluster.node_ids
    }


class Cpu:
    """CPU seconds used by groups of processes over a block."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.before = {label: _cpu_seconds(pids) for label, pids in groups.items()}

    def used(self) -> dict[str, float]:
        return {
            label: _cpu_seconds(pids) - self.before[label] for label, pids in self.groups.items()
        }


# --- writing -----------------------------------------------------------------------


async def commit(amqp_url: str, cluster: str, count: int, size: int, first: int = 0) -> int:
    """Commit ``count`` writes of ``size`` bytes; the highest index."""
    top = 0
    async with Producer(amqp_url, cluster) as producer:
        for start in range(0, count, 5000):
            body = b"x" * size
            receipts = await asyncio.gather(
                *(
                    producer.publish(body, headers={"n": first + k}, timeout=300)
                    for k in range(start, min(count, start + 5000))
                )
            )
            top = max([top, *(r.index or 0 for r in receipts)])
    return top


async def fanned_out(amqp_url: str, cluster: str, index: int, timeout: float = 120) -> None:
    """Wait until the committed exchange got ``index`` (a probe queue sees it)."""
    deadline = time.monotonic() + timeout
    while queue_stats(stream_name(cluster)).get("messages", 0) < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("nothing reached the stream")
        await asyncio.sleep(0.5)
    # A reader that stops at the last index proves the fan-out reached it.
    await asyncio.wait_for(read_stream(amqp_url, stream_name(cluster), index), timeout)


# --- one body size -----------------------------------------------------------------


async def bench_size(
    args: argparse.Namespace, size: int, bench: report.Report, semantics: bool
) -> list[str]:
    lines = Lines()
    async with three_node_cluster(args.amqp_url) as (cluster, _leader):
        name = cluster.cluster
        try:
            await declare_streams(args.amqp_url, name)
            with bench.phase(f"{size} B: committing {args.writes:,} writes"):
                started = time.perf_counter()
                last = await commit(args.amqp_url, name, args.writes, size)
                elapsed = time.perf_counter() - started
            lines.append(
                f"{size} B: {args.writes} writes committed in {elapsed:.1f} s"
                f" ({args.writes / elapsed:.0f}/s), last index {last}"
            )
            with bench.phase(f"{size} B: waiting for the fan-out"):
                await fanned_out(args.amqp_url, name, last)
            groups = {
                "nodes": [p.pid for p in cluster.processes.values()],
                "broker": _broker_pids(),
                "client": [os.getpid()],
            }
            rates: dict[str, list[float]] = {"nodes": [], "stream": []}
            for run in range(1, args.runs + 1):
                for how in ("nodes", "stream"):
                    load = os.getloadavg()[0]
                    with bench.phase(f"{size} B run {run}/{args.runs}: {how}"):
                        cpu = Cpu(groups)
                        started = time.perf_counter()
                        extra = ""
                        if how == "nodes":
                            got = await read_replay(args.amqp_url, name, last)
                        else:
                            seen = await read_stream(args.amqp_url, stream_name(name), last)
                            got = seen.distinct
                            extra = f", {seen.deliveries - seen.distinct} duplicates dropped"
                        elapsed = time.perf_counter() - started
                        used = cpu.used()
                    rate = got / elapsed
                    rates[how].append(rate)
                    per = {k: v / got * 1e6 for k, v in used.items()}
                    label = f"{size} B {how} run {run}"
                    lines.append(
                        f"{label:<22} {got:6d} msgs {elapsed:6.2f} s {rate:8.0f} msg/s  µs CPU/msg:"
                        f" nodes {per['nodes']:6.1f} broker {per['broker']:6.1f}"
                        f" client {per['client']:6.1f}  (load {load:.2f}{extra})"
                    )
                    bench.figure(label, rate, "msg/s")
                    bench.figure(f"{label}, time to last index", elapsed, "s")
                    for group, value in per.items():
                        bench.figure(f"{label}, {group} CPU per message", value, "µs CPU")
            for run, (node_rate, stream_rate) in enumerate(
                zip(rates["nodes"], rates["stream"], strict=True), 1
            ):
                bench.figure(f"{size} B ratio stream/nodes run {run}", stream_rate / node_rate, "x")
            ratio = statistics.median(rates["stream"]) / statistics.median(rates["nodes"])
            ratios = " ".join(
                f"{s / n:.2f}" for n, s in zip(rates["nodes"], rates["stream"], strict=True)
            )
            lines.append(
                f"{size} B medians: nodes {statistics.median(rates['nodes']):.0f} msg/s,"
                f" stream {statistics.median(rates['stream']):.0f} msg/s;"
                f" stream/nodes per run {ratios}, of medians {ratio:.2f}x"
            )
            bench.figure(f"{size} B ratio stream/nodes of medians", ratio, "x")
            lines.extend(storage(cluster, name, size, args.writes, bench))
            if semantics:
                lines.extend(await retention(args, name, last, bench))
                lines.extend(await failover(args, cluster, size, last, bench))
        finally:
            await delete_streams(args.amqp_url, name)
    return lines


def storage(
    cluster: LocalCluster, name: str, size: int, writes: int, bench: report.Report
) -> list[str]:
    stats = queue_stats(stream_name(name))
    disk = stream_disk_bytes(stream_name(name))
    dbs = database_bytes(cluster)
    lines = [
        f"{size} B storage: stream {stats.get('messages', -1)} messages,"
        f" broker memory {stats.get('memory', 0) / 1e6:.2f} MB,"
        f" segments on disk {(disk or 0) / 1e6:.2f} MB ({(disk or 0) / writes:.0f} B/write);"
        f" node databases "
        + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in dbs.items())
        + f" ({statistics.mean(dbs.values()) / writes:.0f} B/write/node)"
    ]
    if "memory" in stats:
        bench.figure(f"{size} B stream broker memory", stats["memory"] / 1e6, "MB")
    if disk is not None:
        bench.figure(f"{size} B stream on disk", disk / 1e6, "MB")
        bench.figure(f"{size} B stream on disk per write", disk / writes, "B")
    bench.figure(f"{size} B node database per write", statistics.mean(dbs.values()) / writes, "B")
    return lines


async def retention(
    args: argparse.Namespace, name: str, last: int, bench: report.Report
) -> list[str]:
    """Where the small stream (1 MB retention) starts, against the nodes' first index."""
    small = await read_stream(args.amqp_url, stream_name(name, "log-small"), last)
    first_offset, first_index = small.first or (-1, -1)
    bench.figure("small stream first index", first_index, "index")
    return [
        f"retention: {stream_name(name, 'log-small')} (max {SMALL_BYTES >> 20} MB, segments"
        f" {SMALL_SEGMENT >> 10} KB) starts at offset {first_offset} = raft index"
        f" {first_index}, holds {small.distinct} of the {last} indexes; the nodes still"
        f" answer replay from index 1"
    ]


async def failover(
    args: argparse.Namespace, cluster: LocalCluster, size: int, before: int, bench: report.Report
) -> list[str]:
    """Commit more writes, SIGKILL the leader mid-way; count copies per index in the stream."""
    name = cluster.cluster
    async with cluster.admin() as admin:
        leader = (await wait_for_leader(admin, timeout=30)).node_id
    with bench.phase(f"failover: {args.kill_writes:,} writes, leader {leader} SIGKILLed"):
        writing = asyncio.create_task(
            commit(args.amqp_url, name, args.kill_writes, size, first=10**6)
        )
        await asyncio.sleep(args.kill_after)
        killed_at = time.monotonic()
        cluster.kill(leader, signal.SIGKILL)
        top = await writing
        recovered = time.monotonic() - killed_at
        cluster.start(leader)
        await fanned_out(args.amqp_url, name, top)
    whole = await read_stream(args.amqp_url, stream_name(name), None, keep_copies=True)
    duplicates = sum(c - 1 for c in whole.copies.values())
    earlier = sum(c - 1 for i, c in whole.copies.items() if i <= before)
    indexes_copied = sum(1 for c in whole.copies.values() if c > 1)
    bench.figure("failover duplicates in the stream", duplicates, "messages")
    bench.figure("duplicates in the stream before the kill", earlier, "messages")
    bench.figure("failover indexes with copies", indexes_copied, "indexes")
    bench.figure("stream offsets equal to index - 1", whole.offset_is_index, "messages")
    first, last = whole.first or (-1, -1), whole.last or (-1, -1)
    return [
        f"failover: leader {leader} SIGKILLed {args.kill_after:g} s into {args.kill_writes}"
        f" writes; all committed {recovered:.1f} s after the kill (last index {top})",
        f"stream after it: {whole.deliveries} messages for {len(whole.copies)} raft indexes:"
        f" {duplicates} duplicates ({indexes_copied} indexes with more than one copy;"
        f" {earlier} of the duplicates are of indexes up to {before}, before the kill)",
        f"offsets vs indexes: first (offset {first[0]}, index {first[1]}), last (offset"
        f" {last[0]}, index {last[1]}); offset == index - 1 for {whole.offset_is_index} of"
        f" {whole.deliveries}",
    ]


# --- who may write into the stream -------------------------------------------------


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


async def _attempt(url: str, action: Any) -> str:
    """Run ``action(channel)`` on a fresh connection: "ok" or the broker's refusal."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await action(channel)
        await asyncio.sleep(0.3)  # an asynchronous refusal closes the channel meanwhile
        if channel.is_closed:
            return "refused"
        return "ok"
    except aiormq.exceptions.ChannelAccessRefused:
        return "ACCESS_REFUSED"
    except Exception as exc:  # the outcome is what is reported
        return type(exc).__name__
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


async def permissions(amqp_url: str, bench: report.Report) -> list[str]:
    """docs/protocol.md §10's accounts in a throw-away vhost: who can put a message into a
    stream bound to committed, and who can read it."""
    tag = uuid.uuid4().hex[:8]
    cluster, vhost = f"s{tag}", f"raftmq-bench-{tag}"
    users = {
        grant.role.value: f"raftmq-bench-{tag}-{grant.role.value}" for grant in layout(cluster)
    }
    password = uuid.uuid4().hex
    parts = urlsplit(amqp_url)
    host = f"{parts.hostname}:{parts.port or 5672}"

    def url(role: str) -> str:
        return f"amqp://{users[role]}:{password}@{host}/{quote(vhost, safe='')}"

    lines: list[str] = []
    _ctl("add_vhost", vhost)
    try:
        for grant in layout(cluster):
            _ctl("add_user", users[grant.role.value], password)
            _ctl("set_permissions", "-p", vhost, users[grant.role.value],
                 grant.configure, grant.write, grant.read)  # fmt: skip
        # the node account makes the committed exchange, positions and the two streams
        node = await aio_pika.connect(url("node"))
        try:
            channel = await node.channel()
            committed = await topology.declare_committed(channel, cluster)
            await topology.declare_positions(channel, cluster)
            for suffix in ("log", "sub.log"):
                queue = await channel.declare_queue(
                    stream_name(cluster, suffix),
                    durable=True,
                    arguments=stream_arguments(10 << 20, "1h"),
                )
                await queue.bind(committed)
        finally:
            await node.close()
        await asyncio.sleep(_SETTLE)
        forged = aio_pika.Message(b"forged", headers={names.H_INDEX: 1, names.H_TERM: 1})

        def publish(exchange: str, key: str) -> Any:
            async def action(channel: aio_pika.abc.AbstractChannel) -> None:
                target = await channel.get_exchange(exchange, ensure=False)
                await target.publish(forged, routing_key=key)

            return action

        def default(key: str) -> Any:
            async def action(channel: aio_pika.abc.AbstractChannel) -> None:
                await channel.default_exchange.publish(forged, routing_key=key)

            return action

        def bind_positions(queue: str) -> Any:
            async def action(channel: aio_pika.abc.AbstractChannel) -> None:
                raw = cast(aiormq.Channel, await channel.get_underlay_channel())
                await raw.queue_bind(queue, names.positions_exchange(cluster), "#")
                target = await channel.get_exchange(names.positions_exchange(cluster), ensure=False)
                await target.publish(forged, routing_key="anyone")

            return action

        def consume(queue: str) -> Any:
            async def action(channel: aio_pika.abc.AbstractChannel) -> None:
                await channel.set_qos(prefetch_count=10)
                raw = cast(aiormq.Channel, await channel.get_underlay_channel())

                async def drop(_message: aiormq.abc.DeliveredMessage) -> None:
                    return None

                await raw.basic_consume(
                    queue, drop, no_ack=False, arguments={"x-stream-offset": "first"}
                )

            return action

        committed_name = names.committed_exchange(cluster)
        trials = [
            (role, f"publish to {committed_name}", publish(committed_name, ""))
            for role in ("producer", "subscriber")
        ]
        for suffix in ("log", "sub.log"):
            stream = stream_name(cluster, suffix)
            for role in ("producer", "subscriber"):
                trials += [
                    (role, f"publish to amq.default -> {stream}", default(stream)),
                    (role, f"bind {stream} to positions, publish", bind_positions(stream)),
                    (role, f"consume {stream} from first", consume(stream)),
                ]
        for role, what, action in trials:
            outcome = await _attempt(url(role), action)
            lines.append(f"  {role:<10} {what:<58} {outcome}")
        # What actually landed in each stream (read by the node account).
        for suffix in ("log", "sub.log"):
            seen = await read_stream(url("node"), stream_name(cluster, suffix), None, idle=1.5)
            lines.append(
                f"  {stream_name(cluster, suffix)} holds {seen.deliveries} forged messages"
            )
            bench.figure(f"forged messages in stream {suffix}", seen.deliveries, "messages")
    finally:
        with contextlib.suppress(Exception):
            _ctl("delete_vhost", vhost)  # its queues, exchanges and permissions with it
        for user in users.values():
            with contextlib.suppress(Exception):
                _ctl("delete_user", user)
    return lines


async def main(args: argparse.Namespace, bench: report.Report) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"load {os.getloadavg()[0]:.2f}; {args.writes} writes per size; {args.runs} runs"
        f" alternating nodes / stream"
    )
    lines = Lines()
    for number, size in enumerate(sizes):
        await bench_size(args, size, bench, semantics=number == 0)  # prints as it goes
    if args.permissions and shutil.which("rabbitmqctl") is None:
        lines.append("permissions: skipped (no rabbitmqctl on this machine)")
    elif args.permissions:
        with bench.phase("permissions: who can write into or read a stream"):
            lines.append("permissions (docs/protocol.md §10 accounts, throw-away vhost):")
            lines.extend(await permissions(args.amqp_url, bench))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--writes", type=int, default=20000)
    parser.add_argument("--sizes", default="100,1000", help="body sizes in bytes, commas")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kill-writes", type=int, default=10000)
    parser.add_argument("--kill-after", type=float, default=0.5, help="seconds into them")
    parser.add_argument("--permissions", action=argparse.BooleanOptionalAction, default=True)
    report.add_options(parser)
    arguments = parser.parse_args()
    with report.Report("stream_replay", arguments) as bench:
        asyncio.run(main(arguments, bench))
