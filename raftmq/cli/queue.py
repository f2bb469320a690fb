"""The queue commands of ``raftmq``: ``publish`` to the writes queue, ``subscribe`` to
committed messages (registered on the app in :mod:`raftmq.cli.app`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from raftmq.cli.errors import INTERRUPTED, endpoint
from raftmq.cli.options import AmqpOpt, ClusterOpt, brokers, fail
from raftmq.client.subscription_queues import (
    DEFAULT_EXPIRES,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MAX_LENGTH_BYTES,
)
from raftmq.errors import ConfigError, RaftMQError
from raftmq.node.settings import DEFAULT_AMQP_URL

if TYPE_CHECKING:
    from raftmq._amqp.connect import Brokers
    from raftmq.client.producer import Producer
    from raftmq.protocol.receipts import Receipt

_READ_AHEAD = 10_000  # stdin lines read ahead of the publishes


def publish(
    body: Annotated[
        str, typer.Argument(help="The message body; '-' publishes one message per stdin line.")
    ] = "-",
    cluster: ClusterOpt = "raftmq",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for each commit and print index and term.")
    ] = False,
    content_type: Annotated[str, typer.Option(help="Content type of the body.")] = "text/plain",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each message.")] = 30.0,
) -> None:
    """Publish messages to the cluster's writes queue (no need to know the leader)."""
    tally = _Tally(wait)
    try:
        interrupted = asyncio.run(
            _publish(brokers(amqp_url), cluster, body, wait, content_type, timeout, tally)
        )
    except (RaftMQError, TimeoutError) as exc:
        done = f"; {tally}" if tally.sent else ""
        raise fail(f"{str(exc) or type(exc).__name__}{done}") from None
    if interrupted:
        typer.secho(f"interrupted: {tally}", err=True)
        raise typer.Exit(code=INTERRUPTED)


@dataclass
class _Tally:
    """What a `publish` got done, for the line it prints when it stops early."""

    wait: bool  # receipts are commits (else: the broker's confirms)
    sent: int = 0  # handed to the producer
    done: int = 0  # committed (wait) or confirmed by the broker
    last_index: int | None = None  # the last committed index printed

    def __str__(self) -> str:
        what = "committed" if self.wait else "accepted by the broker"
        text = f"{self.done} of {self.sent} messages {what}"
        if self.last_index is not None:
            text += f" (last index {self.last_index})"
        if self.sent > self.done:
            text += f"; {self.sent - self.done} unconfirmed (they may still commit)"
        return text


async def _publish(
    url: Brokers,
    cluster: str,
    body: str,
    wait: bool,
    content_type: str,
    timeout: float,
    tally: _Tally,
) -> bool:
    """Publish every line; True when Ctrl-C (or SIGTERM) stopped it first."""
    from raftmq.client.producer import Producer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await _check_writes_queue(url, cluster)
    lines = _stdin_lines(loop) if body == "-" else _one_line(body)
    async with Producer(url, cluster) as producer:
        pending: deque[asyncio.Task[Receipt]] = deque()
        work = asyncio.create_task(
            _publish_lines(producer, lines, pending, wait, content_type, timeout, tally)
        )
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Whatever ended it, every task is awaited here: no "exception never retrieved".
            for task in (work, stopping, *pending):
                task.cancel()
            await asyncio.gather(work, stopping, *pending, return_exceptions=True)
        if not stop.is_set() or (work.done() and not work.cancelled()):
            work.result()  # raises the publish error, if one ended it
            return False
        return True


async def _publish_lines(
    producer: Producer,
    lines: AsyncIterator[str],
    pending: deque[asyncio.Task[Receipt]],
    wait: bool,
    content_type: str,
    timeout: float,
    tally: _Tally,
) -> None:
    """Publish each line as it comes; print each receipt as soon as it and those before it
    are in. Publishes run concurrently (they batch), at most ``max_batch`` unreported."""
    order: asyncio.Queue[asyncio.Task[Receipt] | None] = asyncio.Queue(producer.max_batch)

    async def read() -> None:
        async for text in lines:
            publishing = producer.publish(
                text.encode(), content_type=content_type, wait_commit=wait, timeout=timeout
            )
            task = asyncio.create_task(publishing)
            pending.append(task)
            tally.sent += 1
            await order.put(task)
        await order.put(None)

    async def report() -> None:
        while (task := await order.get()) is not None:
            receipt = await task
            pending.popleft()  # the oldest: receipts are reported in input order
            tally.done += 1
            if wait:
                tally.last_index = receipt.index
                duplicate = " duplicate" if receipt.duplicate else ""
                typer.echo(f"index={receipt.index} term={receipt.term}{duplicate}")

    reading, reporting = asyncio.create_task(read()), asyncio.create_task(report())
    try:
        await asyncio.wait({reading, reporting}, return_when=asyncio.FIRST_EXCEPTION)
        for task in (reading, reporting):
            if task.done():
                task.result()  # the publish error, if one ended it
    finally:
        for task in (reading, reporting):
            task.cancel()
        await asyncio.gather(reading, reporting, return_exceptions=True)


async def _check_writes_queue(url: Brokers, cluster: str) -> None:
    """Refuse a cluster the broker does not know (a misspelt name would leave a new
    durable queue behind) and warn when no node consumes its writes queue."""
    from raftmq._amqp import topology
    from raftmq._amqp.connect import Connector
    from raftmq.protocol import names

    connector = Connector(url)
    connection = await connector.connect()
    try:
        if not await topology.exchange_exists(connection, names.writes_exchange(cluster)):
            raise ConfigError(
                f"the broker at {endpoint(connector.last_url, 5672)} has no cluster "
                f"{cluster!r} (no exchange {names.writes_exchange(cluster)}): check "
                "--cluster, or start the cluster's nodes first (they declare it)"
            )
        channel = await connection.channel()
        queue = await channel.declare_queue(names.writes_queue(cluster), passive=True)
        if not queue.declaration_result.consumer_count:
            typer.secho(
                f"warning: nobody consumes {names.writes_queue(cluster)}: no node of cluster "
                f"{cluster!r} leads now (are its nodes running?); the messages wait there",
                err=True,
            )
    finally:
        await connection.close()


async def _one_line(body: str) -> AsyncIterator[str]:
    yield body


async def _stdin_lines(loop: asyncio.AbstractEventLoop) -> AsyncIterator[str]:
    """The lines of stdin, read by a daemon thread: a read that blocks (a terminal, an
    open pipe) never holds up Ctrl-C, and never the exit."""
    ready: asyncio.Queue[str | None] = asyncio.Queue()
    room = threading.Semaphore(_READ_AHEAD)

    def read() -> None:
        try:
            for line in sys.stdin:
                room.acquire()
                loop.call_soon_threadsafe(ready.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(ready.put_nowait, None)
        except RuntimeError:  # the loop closed: the command is over
            return

    threading.Thread(target=read, name="raftmq-stdin", daemon=True).start()
    while (line := await ready.get()) is not None:
        room.release()
        yield line


def subscribe(
    cluster: ClusterOpt = "raftmq",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    start: Annotated[
        str, typer.Option("--from", help="latest, earliest, or a log index to start at.")
    ] = "latest",
    name: Annotated[
        str | None, typer.Option("--name", help="Durable subscription that resumes later.")
    ] = None,
    max_length: Annotated[
        int, typer.Option(help="Messages the subscription queue holds at most (0: no bound).")
    ] = DEFAULT_MAX_LENGTH,
    max_length_bytes: Annotated[
        int, typer.Option(help="Bytes of bodies it holds at most (0: no bound).")
    ] = DEFAULT_MAX_LENGTH_BYTES,
    expires: Annotated[
        float,
        typer.Option(help="Seconds a named subscription lives unused (0: for ever)."),
    ] = DEFAULT_EXPIRES,
    on_compacted: Annotated[
        str,
        typer.Option(
            help="When the cluster's retention deleted entries this needs: raise (stop with "
            "an error naming the first available index) or skip (go on from it)."
        ),
    ] = "raise",
) -> None:
    """Print committed messages (index, term, body per line) until Ctrl-C. Past its bounds
    the queue drops its oldest messages, which come back through replay."""
    if on_compacted not in ("raise", "skip"):
        raise fail(f"--on-compacted must be raise or skip, not {on_compacted!r}")
    position: Any
    if start in ("latest", "earliest"):
        position = start
    elif start.isdigit() and int(start) >= 1:
        position = int(start)
    else:
        raise fail(f"--from must be latest, earliest or an index >= 1, not {start!r}")
    bounds = {
        "max_length": max_length or None,
        "max_length_bytes": max_length_bytes or None,
        "expires": expires or None,
        "on_compacted": on_compacted,
    }
    asyncio.run(_subscribe(brokers(amqp_url), cluster, position, name, bounds))


async def _subscribe(
    url: Brokers, cluster: str, start: Any, name: str | None, bounds: dict[str, Any]
) -> None:
    from raftmq.client.subscriber import Subscriber

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Subscriber(url, cluster, start=start, name=name, **bounds) as subscriber:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(subscriber))
                await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    # Ctrl-C: the message being waited for was not printed, so not processed.
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await following
                    return
                message = following.result()
                try:
                    text = message.body.decode()
                except UnicodeDecodeError:
                    text = "base64:" + base64.b64encode(message.body).decode()
                typer.echo(f"{message.index}\t{message.term}\t{text}")
        finally:
            stopping.cancel()
